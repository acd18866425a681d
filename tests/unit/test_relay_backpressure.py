"""Relay backpressure: a burst is slowed down, never dropped; only a receiver that stopped reading is closed.

Real RelayServer, real websocket clients and MeshNodes on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.unit.node_testkit import make_node, ordered_identities
from xmesh_agent.clock import now_ms
from xmesh_agent.identity import uuid7
from xmesh_agent.mmp.cmb import mint
from xmesh_agent.mmp.connection import RelayLink
from xmesh_agent.mmp.relay.server import TRY_AGAIN_LATER, RelayServer

WAIT = 10.0
BIG = "x" * 16 * 1024  # sent uncompressed (compression=None), so it really fills buffers
SOCK_BUF = 32 * 1024  # loopback buffers autotune to tens of MB; pin them small so a test fills them


def small_buffers(sock: socket.socket | object) -> None:
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, opt, SOCK_BUF)  # type: ignore[attr-defined]


async def small_relay(**kw: object) -> RelayServer:
    """A started relay whose accepted connections inherit small socket buffers."""
    relay = RelayServer(ping_interval=60, **kw)  # type: ignore[arg-type]
    await relay.start()
    assert relay._server is not None
    for listening in relay._server.sockets:
        small_buffers(listening)
    return relay


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XMESH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XMESH_SYM_LOOPBACK_DIR", str(tmp_path / "loopback"))


async def join(server: RelayServer, name: str) -> tuple[ClientConnection, str]:
    sock = socket.socket()
    small_buffers(sock)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    ws = await connect(server.url, sock=sock, max_size=None, max_queue=4, compression=None)
    node_id = uuid7()
    await ws.send(json.dumps({"type": "relay-auth", "nodeId": node_id, "name": name}))
    first = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    assert first["type"] == "relay-peers"
    return ws, node_id


async def payloads(ws: ClientConnection, want: int) -> list[int]:
    """Sequence numbers of the next `want` routed frames (presence and pings skipped)."""
    got: list[int] = []
    while len(got) < want:
        msg = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        if "payload" in msg:
            got.append(msg["payload"]["n"])
    return got


async def test_a_burst_of_cmbs_through_the_relay_arrives_complete_and_in_order(tmp_path: Path) -> None:
    """3,000 CMBs published back to back through a relay with a small outbox: none lost."""
    total = 3000
    async with RelayServer(outbox_limit=32, ping_interval=1.0) as relay:
        a_id, b_id = ordered_identities("alice", "bob")
        a, _ = make_node(tmp_path, "alice", identity=a_id, discovery=[], relay_url=relay.url)
        b, inbox = make_node(tmp_path, "bob", identity=b_id, discovery=[], relay_url=relay.url)
        await b.start()
        await a.start()
        try:
            assert await a.wait_for_peers(1, WAIT) and await b.wait_for_peers(1, WAIT)
            now = now_ms()
            cmbs = [
                mint({"focus": f"burst #{i}"}, identity=a.identity, group="team", created_at=now)
                for i in range(total)
            ]
            for cmb in cmbs:
                assert await a.publish(cmb) == 1  # awaits room at the relay instead of dropping
            assert await inbox.wait(lambda: len(inbox.cmbs) >= total, 60.0), len(inbox.cmbs)
            assert [c.key for c, _ in inbox.cmbs] == [c.key for c in cmbs]
            assert b.store.count() == total
            assert not inbox.named("peer-disconnected")
        finally:
            await a.stop()
            await b.stop()


async def test_relay_holds_the_sender_back_while_a_live_receiver_is_behind() -> None:
    async with await small_relay(outbox_limit=8, stall_timeout=30.0) as relay:
        receiver, receiver_id = await join(relay, "slow")
        sender, _ = await join(relay, "fast")
        held = False
        sent = 0
        # The receiver reads nothing: sooner or later a send must wait (socket buffers full).
        for n in range(500):
            try:
                msg = json.dumps({"to": receiver_id, "payload": {"type": "blob", "n": n, "pad": BIG}})
                await asyncio.wait_for(sender.send(msg), 0.5)
            except TimeoutError:
                held = True
                break
            sent = n + 1
        assert held, "the relay buffered everything instead of holding the sender back"
        [client] = [c for c in relay._channels[""].values() if c.node_id == receiver_id]
        assert client.outbox.qsize() <= relay.outbox_limit
        # Now the receiver catches up: every frame arrives, in order, and nobody was closed.
        got = await payloads(receiver, sent + 1)
        assert got == list(range(sent + 1))
        follow = json.dumps({"to": receiver_id, "payload": {"type": "blob", "n": sent + 1}})
        await asyncio.wait_for(sender.send(follow), WAIT)
        assert await payloads(receiver, 1) == [sent + 1]
        assert len(relay.peers()) == 2
        await sender.close()
        await receiver.close()


async def test_a_receiver_that_stopped_reading_is_closed_and_the_sender_moves_on() -> None:
    async with await small_relay(outbox_limit=4, stall_timeout=0.5) as relay:
        dead, dead_id = await join(relay, "dead")
        sender, _ = await join(relay, "sender")
        [client] = [c for c in relay._channels[""].values() if c.node_id == dead_id]
        deadline = time.monotonic() + WAIT
        n = 0
        while dead_id in {i for i, _ in relay.peers()}:
            assert time.monotonic() < deadline, "the stalled receiver was never closed"
            msg = json.dumps({"to": dead_id, "payload": {"type": "blob", "n": n, "pad": BIG}})
            await asyncio.wait_for(sender.send(msg), WAIT)  # held about stall_timeout, never forever
            assert client.outbox.qsize() <= relay.outbox_limit  # memory stays bounded meanwhile
            n += 1
        # The sender is still served: a ping round trip through the relay works.
        await sender.send(json.dumps({"type": "relay-ping"}))
        while json.loads(await asyncio.wait_for(sender.recv(), WAIT)).get("type") != "relay-pong":
            pass
        # The dead one is gone: 1013 if it reads its close frame in time, else an aborted connection.
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(dead.recv(), WAIT)
        assert dead.close_code in (TRY_AGAIN_LATER, 1006)
        assert [i for i, _ in relay.peers()] != [] and dead_id not in {i for i, _ in relay.peers()}
        await sender.close()


async def test_relay_link_deliver_waits_for_room_and_close_releases_it() -> None:
    async def nowhere(envelope: dict) -> bool:
        return True

    link = RelayLink("peer", nowhere, outbound=True, queue_limit=2)
    assert await link.deliver({"type": "a"}) and await link.deliver({"type": "b"})
    third = asyncio.create_task(link.deliver({"type": "c"}))
    await asyncio.sleep(0)
    assert not third.done()  # full: waits instead of dropping
    assert await link.recv() == {"type": "a"}
    assert await asyncio.wait_for(third, WAIT) is True
    fourth = asyncio.create_task(link.deliver({"type": "d"}))
    await asyncio.sleep(0)
    await link.close()  # the path is gone: the waiting deliver gives up instead of hanging
    assert await asyncio.wait_for(fourth, WAIT) is False


async def test_two_nodes_bursting_at_each_other_through_the_relay_both_get_everything(tmp_path: Path) -> None:
    """Backpressure both ways at once must not deadlock: each side's reader keeps draining."""
    total = 1500
    async with RelayServer(outbox_limit=16, ping_interval=1.0) as relay:
        a_id, b_id = ordered_identities("alice", "bob")
        a, inbox_a = make_node(tmp_path, "alice", identity=a_id, discovery=[], relay_url=relay.url)
        b, inbox_b = make_node(tmp_path, "bob", identity=b_id, discovery=[], relay_url=relay.url)
        await b.start()
        await a.start()
        try:
            assert await a.wait_for_peers(1, WAIT) and await b.wait_for_peers(1, WAIT)
            now = now_ms()

            async def burst(node, tag: str) -> None:
                for i in range(total):
                    cmb = mint({"focus": f"{tag} #{i}"}, identity=node.identity, group="team", created_at=now)
                    assert await node.publish(cmb) == 1

            await asyncio.wait_for(asyncio.gather(burst(a, "from alice"), burst(b, "from bob")), 60.0)
            assert await inbox_a.wait(lambda: len(inbox_a.cmbs) >= total, 60.0), len(inbox_a.cmbs)
            assert await inbox_b.wait(lambda: len(inbox_b.cmbs) >= total, 60.0), len(inbox_b.cmbs)
            assert not inbox_a.named("peer-disconnected") and not inbox_b.named("peer-disconnected")
        finally:
            await a.stop()
            await b.stop()
