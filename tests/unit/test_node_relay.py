"""The relay client inside MeshNode, against the project's relay server on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.node_testkit import make_node, note, ordered_identities, poll
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.relay.proof import PROVEN_REPLACED
from xmesh_agent.mmp.relay.server import RelayServer


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XMESH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XMESH_SYM_LOOPBACK_DIR", str(tmp_path / "loopback"))


async def test_peers_meet_and_exchange_cmbs_through_the_relay(tmp_path: Path) -> None:
    async with RelayServer(tokens=["sekret"], ping_interval=0.2) as relay:
        a, inbox_a = make_node(tmp_path, "alice", discovery=[], relay_url=relay.url, relay_token="sekret")
        b, inbox_b = make_node(tmp_path, "bob", discovery=[], relay_url=relay.url, relay_token="sekret")
        await a.start()
        await b.start()
        try:
            assert await a.wait_for_peers(1, 5.0) and await b.wait_for_peers(1, 5.0)
            [pa] = a.peers()
            assert pa.transport == "relay" and pa.name == "bob" and pa.public_key == b.identity.public_key
            cmb = note(a.identity, "team", "over the relay")
            assert await a.publish(cmb) == 1
            assert await inbox_b.wait(lambda: len(inbox_b.cmbs) == 1)
            assert b.store.source_of(cmb.key) == "alice"
            reply = note(b.identity, "team", "directed reply", to="alice")
            assert await b.publish(reply) == 1
            assert await inbox_a.wait(lambda: len(inbox_a.cmbs) == 1)
            # Several relay keepalive rounds later (relay pings every 0.2 s) both are still there.
            assert not await inbox_a.wait(lambda: bool(inbox_a.named("peer-disconnected")), 1.0)
            assert len(relay.peers("sekret")) == 2
        finally:
            await a.stop()
            await b.stop()


async def test_wrong_token_channel_isolates_peers(tmp_path: Path) -> None:
    async with RelayServer(tokens=["one", "two"], ping_interval=0.5) as relay:
        a, _ = make_node(tmp_path, "alice", discovery=[], relay_url=relay.url, relay_token="one")
        b, _ = make_node(tmp_path, "bob", discovery=[], relay_url=relay.url, relay_token="two")
        await a.start()
        await b.start()
        try:
            assert await poll(lambda: len(relay.peers("one")) == 1 and len(relay.peers("two")) == 1)
            assert not await a.wait_for_peers(1, 0.5)
        finally:
            await a.stop()
            await b.stop()


async def test_a_twin_on_the_relay_is_refused_and_retries_without_stopping(tmp_path: Path) -> None:
    """The holder keeps its place (4006 to the newcomer); a collision nobody proved stops no one."""
    async with RelayServer(ping_interval=0.5, duplicate_window=5.0) as relay:
        ident = NodeIdentity.generate("same")
        a, _ = make_node(tmp_path, "same", identity=ident, discovery=[], relay_url=relay.url)
        twin, twin_inbox = make_node(
            tmp_path, "same", identity=ident, store_name="twin", discovery=[], relay_url=relay.url
        )
        await a.start()
        assert await poll(lambda: len(relay.peers()) == 1)
        await twin.start()
        try:
            assert await twin_inbox.wait(lambda: len(twin_inbox.named("relay-collision")) >= 2)
            event = twin_inbox.named("relay-collision")[0]
            assert event["code"] == 4006 and event["name"] == "same"
            assert twin_inbox.named("identity-collision") == []
            assert twin._peering.relay is not None and not twin._peering.relay._task.done()
            assert relay.peers() == [(ident.node_id, "same")]
        finally:
            await a.stop()
            await twin.stop()


async def test_relay_restart_reconnects_and_rehandshakes(tmp_path: Path) -> None:
    relay = RelayServer(ping_interval=0.5)
    await relay.start()
    port = relay.port
    a, inbox_a = make_node(tmp_path, "alice", discovery=[], relay_url=relay.url)
    b, inbox_b = make_node(tmp_path, "bob", discovery=[], relay_url=relay.url)
    await a.start()
    await b.start()
    try:
        assert await a.wait_for_peers(1, 5.0)
        await relay.stop()
        assert await inbox_a.wait(lambda: bool(inbox_a.named("peer-disconnected")))
        relay = RelayServer(port=port, ping_interval=0.5)
        await relay.start()
        assert await a.wait_for_peers(1, 5.0) and await b.wait_for_peers(1, 5.0)
        assert await a.publish(note(a.identity, "team", "after relay restart")) == 1
        assert await inbox_b.wait(lambda: len(inbox_b.cmbs) == 1)
    finally:
        await a.stop()
        await b.stop()
        await relay.stop()


async def test_a_peer_on_tcp_and_relay_survives_losing_one_transport(tmp_path: Path) -> None:
    low, high = ordered_identities("low", "high")
    async with RelayServer(ping_interval=0.5) as relay:
        a, inbox_a = make_node(tmp_path, "low", identity=low, relay_url=relay.url)
        b, inbox_b = make_node(tmp_path, "high", identity=high, relay_url=relay.url)
        await a.start()
        await b.start()
        try:
            assert await poll(lambda: a.connected(high.node_id, "tcp") and a.connected(high.node_id, "relay"))
            assert [p.transport for p in a.peers()] == ["tcp"]  # §4.6: TCP outranks the relay
            await a._sessions[high.node_id]["tcp"].link.close()
            assert await poll(lambda: not a.connected(high.node_id, "tcp"), 2.0)
            assert [p.transport for p in a.peers()] in (["relay"], ["tcp"])
            assert await a.publish(note(low, "team", "still reachable")) == 1
            assert await inbox_b.wait(lambda: len(inbox_b.cmbs) == 1)
            assert inbox_a.named("peer-disconnected") == [] and len(inbox_a.named("peer-connected")) == 1
            assert await poll(lambda: a.connected(high.node_id, "tcp"), 3.0)  # the dialer comes back
        finally:
            await a.stop()
            await b.stop()


async def test_client_against_a_scripted_relay_harness(tmp_path: Path) -> None:
    """Garbage, keepalive, re-auth and 4004 replacements, from a relay that follows a script: one
    nobody proved (we come back) and one proven with our key (we stop)."""
    import asyncio
    import json

    from websockets.asyncio.server import serve

    connections = 0
    seen: list[dict] = []
    script_done = asyncio.Event()

    async def harness(ws) -> None:
        nonlocal connections
        connections += 1
        seen.append(json.loads(await ws.recv()))
        for junk in ("not json", "[1,2]", '{"type": 5}', '{"payload": "x"}', '{"from": "a", "payload": {}}'):
            await ws.send(junk)
        await ws.send(b"\x00\x01binary")
        await ws.send(json.dumps({"type": "relay-peers", "peers": [1, {"nodeId": 7}, {"offline": True}]}))
        await ws.send(json.dumps({"type": "relay-ping"}))
        seen.append(json.loads(await ws.recv()))
        await ws.send(json.dumps({"type": "relay-reauth"}))
        seen.append(json.loads(await ws.recv()))
        if connections == 1:
            await ws.close(4004, "replaced by new connection")
            return
        await ws.close(4004, PROVEN_REPLACED)
        script_done.set()

    async with serve(harness, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        node, inbox = make_node(
            tmp_path, "solo", discovery=[], relay_url=f"ws://127.0.0.1:{port}", relay_token="t0k"
        )
        await node.start()
        try:
            assert await inbox.wait(lambda: bool(inbox.named("identity-collision")))
            assert [e["code"] for e in inbox.named("relay-collision")] == [4004]
            assert inbox.named("identity-collision")[0]["code"] == 4004 and connections == 2
            auth, pong, reauth = seen[:3]
            assert auth == {
                "type": "relay-auth",
                "nodeId": node.identity.node_id,
                "name": "solo",
                "token": "t0k",
                "publicKey": node.identity.public_key_b64url,
            }
            assert pong == {"type": "relay-pong"} and reauth == auth and seen[3:] == seen[:3]
            assert node.peers() == []
            await asyncio.wait_for(script_done.wait(), 2.0)
            # No reconnect after a proven 4004: give the client several backoff periods to return.
            assert not await poll(lambda: connections > 2, 0.8)
        finally:
            await node.stop()
