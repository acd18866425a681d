"""The relay server with real websocket clients on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from xmesh_agent.identity import uuid7
from xmesh_agent.mmp.relay.server import (
    AUTH_INVALID,
    AUTH_TIMEOUT,
    DUPLICATE_REJECTED,
    HEARTBEAT_TIMEOUT,
    INVALID_TOKEN,
    REPLACED,
    RelayServer,
    serve_forever,
)

WAIT = 5.0


@pytest.fixture
async def relay() -> AsyncIterator[RelayServer]:
    server = RelayServer("127.0.0.1", 0, {"t1", "t2"}, ping_interval=60)
    await server.start()
    yield server
    await server.stop()


async def recv(ws: ClientConnection) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), WAIT))


async def recv_app(ws: ClientConnection) -> dict[str, Any]:
    """Next message that is not a keepalive ping."""
    while True:
        msg = await recv(ws)
        if msg.get("type") != "relay-ping":
            return msg


async def close_code(ws: ClientConnection) -> int | None:
    """Wait for the server to close us; the close code it sent."""
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), WAIT)
    assert ws.close_code is not None
    return ws.close_code


async def join(
    server: RelayServer, name: str, token: str | None = "t1", node_id: str | None = None
) -> tuple[ClientConnection, str, list[dict]]:
    ws = await connect(server.url)
    node_id = node_id or uuid7()
    auth = {"type": "relay-auth", "nodeId": node_id, "name": name}
    if token is not None:
        auth["token"] = token
    await ws.send(json.dumps(auth))
    peers = await recv(ws)
    assert peers["type"] == "relay-peers"
    return ws, node_id, peers["peers"]


async def test_auth_ok_peer_list_and_join_leave(relay: RelayServer) -> None:
    a, a_id, a_peers = await join(relay, "alice")
    assert a_peers == []
    b, b_id, b_peers = await join(relay, "bob")
    assert b_peers == [{"nodeId": a_id, "name": "alice"}]
    assert await recv(a) == {"type": "relay-peer-joined", "nodeId": b_id, "name": "bob"}
    assert sorted(relay.peers("t1")) == sorted([(a_id, "alice"), (b_id, "bob")])
    await b.close()
    assert await recv(a) == {"type": "relay-peer-left", "nodeId": b_id, "name": "bob"}
    await a.close()


@pytest.mark.parametrize(
    ("auth", "code"),
    [
        ({"type": "relay-auth", "nodeId": "n1", "name": "x", "token": "wrong"}, INVALID_TOKEN),
        ({"type": "relay-auth", "nodeId": "n1", "name": "x"}, INVALID_TOKEN),
        ({"type": "relay-auth", "name": "x", "token": "t1"}, AUTH_INVALID),
        ({"type": "relay-auth", "nodeId": "n1", "name": "", "token": "t1"}, AUTH_INVALID),
        ({"type": "relay-auth", "nodeId": ["n1"], "name": "x", "token": "t1"}, AUTH_INVALID),
        ({"type": "handshake", "nodeId": "n1", "name": "x", "token": "t1"}, AUTH_INVALID),
    ],
    ids=["wrong-token", "no-token", "no-node-id", "empty-name", "list-node-id", "not-auth"],
)
async def test_bad_auth_is_refused_with_the_spec_code(relay: RelayServer, auth: dict, code: int) -> None:
    ws = await connect(relay.url)
    await ws.send(json.dumps(auth))
    assert await close_code(ws) == code
    assert relay.peers("t1") == []


async def test_auth_timeout_closes_4001() -> None:
    async with RelayServer(tokens={"t"}, auth_timeout=0.2) as server:
        ws = await connect(server.url)
        await ws.send("not json at all")  # chatter does not count as auth
        assert await close_code(ws) == AUTH_TIMEOUT


async def test_open_mode_accepts_any_token() -> None:
    async with RelayServer() as server:
        a, a_id, _ = await join(server, "alice", token=None)
        b, _, peers = await join(server, "bob", token="whatever")
        assert peers == [{"nodeId": a_id, "name": "alice"}]
        await a.close()
        await b.close()


async def test_targeted_and_broadcast_routing(relay: RelayServer) -> None:
    a, a_id, _ = await join(relay, "alice")
    b, b_id, _ = await join(relay, "bob")
    c, c_id, _ = await join(relay, "carol")
    await recv(a), await recv(a), await recv(b)  # presence of later joiners

    await a.send(json.dumps({"to": b_id, "payload": {"type": "cmb", "cmb": {"key": "k1"}}}))
    got = await recv(b)
    assert got == {
        "from": a_id,
        "fromName": "alice",
        "to": b_id,
        "payload": {"type": "cmb", "cmb": {"key": "k1"}},
    }

    # broadcast reaches b and c, never the sender; payloads travel verbatim, whatever they are
    odd_payload = ["not", {"a": "frame"}, 1.5]
    await a.send(json.dumps({"payload": odd_payload}))
    for ws in (b, c):
        assert await recv(ws) == {"from": a_id, "fromName": "alice", "payload": odd_payload}

    # c got nothing targeted at b: its next frame is this sentinel from a
    await a.send(json.dumps({"to": c_id, "payload": {"type": "sentinel"}}))
    assert (await recv(c))["payload"] == {"type": "sentinel"}
    # and a did not hear its own broadcast: its next frame is bob's reply
    await b.send(json.dumps({"to": a_id, "payload": {"type": "reply"}}))
    assert (await recv(a))["payload"] == {"type": "reply"}
    for ws in (a, b, c):
        await ws.close()


async def test_bad_frames_are_dropped_without_closing(relay: RelayServer) -> None:
    a, a_id, _ = await join(relay, "alice")
    b, b_id, _ = await join(relay, "bob")
    await recv(a)
    for junk in [
        "{",
        "[1,2]",
        '"str"',
        json.dumps({"to": b_id}),
        json.dumps({"to": 5, "payload": {}}),
        json.dumps({"to": "nobody", "payload": {}}),
        json.dumps({"to": a_id, "payload": {}}),
        json.dumps({"type": "relay-auth", "nodeId": "x", "name": "y", "token": "t1"}),
    ]:
        await a.send(junk)
    await a.send(b'{"to": "' + b_id.encode() + b'", "payload": {"type": "after-junk"}}')
    assert (await recv(b))["payload"] == {"type": "after-junk"}
    assert sorted(n for _, n in relay.peers("t1")) == ["alice", "bob"]
    await a.close()
    await b.close()


async def test_channels_are_isolated_by_token(relay: RelayServer) -> None:
    a, a_id, _ = await join(relay, "alice", "t1")
    b, b_id, _ = await join(relay, "bob", "t1")
    c, c_id, c_peers = await join(relay, "carol", "t2")
    d, d_id, d_peers = await join(relay, "dave", "t2")
    assert c_peers == [] and d_peers == [{"nodeId": c_id, "name": "carol"}]
    assert await recv(a) == {"type": "relay-peer-joined", "nodeId": b_id, "name": "bob"}
    assert await recv(c) == {"type": "relay-peer-joined", "nodeId": d_id, "name": "dave"}

    await a.send(json.dumps({"payload": {"type": "leak?"}}))
    await a.send(json.dumps({"to": c_id, "payload": {"type": "leak?"}}))
    await a.send(json.dumps({"to": b_id, "payload": {"type": "done"}}))
    assert (await recv(b))["payload"] == {"type": "leak?"}
    assert (await recv(b))["payload"] == {"type": "done"}  # the server has handled all three of a's
    await d.send(json.dumps({"to": c_id, "payload": {"type": "sentinel"}}))
    assert await recv(c) == {"from": d_id, "fromName": "dave", "to": c_id, "payload": {"type": "sentinel"}}

    # a peer in t2 with the same name as one in t1 is no clash, and presence stays in t2
    e, _, e_peers = await join(relay, "alice", "t2")
    assert {p["name"] for p in e_peers} == {"carol", "dave"}
    await b.send(json.dumps({"to": a_id, "payload": {"type": "sentinel"}}))
    assert (await recv(a))["payload"] == {"type": "sentinel"}
    for ws in (a, b, c, d, e):
        await ws.close()


async def test_duplicate_identity_fresh_is_rejected_4006(relay: RelayServer) -> None:
    a, a_id, _ = await join(relay, "alice")
    dup = await connect(relay.url)
    await dup.send(json.dumps({"type": "relay-auth", "nodeId": a_id, "name": "alice2", "token": "t1"}))
    assert (await recv(dup))["type"] == "relay-error"
    assert await close_code(dup) == DUPLICATE_REJECTED
    same_name = await connect(relay.url)
    await same_name.send(
        json.dumps({"type": "relay-auth", "nodeId": uuid7(), "name": "alice", "token": "t1"})
    )
    assert await close_code(same_name) == DUPLICATE_REJECTED
    assert relay.peers("t1") == [(a_id, "alice")]
    # the holder keeps working
    b, b_id, _ = await join(relay, "bob")
    await b.send(json.dumps({"to": a_id, "payload": {"type": "still-here"}}))
    assert (await recv_app(a)) == {"type": "relay-peer-joined", "nodeId": b_id, "name": "bob"}
    assert (await recv_app(a))["payload"] == {"type": "still-here"}
    await a.close()
    await b.close()


async def test_duplicate_identity_stale_and_silent_is_replaced_4004_without_left() -> None:
    async with RelayServer(tokens={"t1"}, duplicate_window=0.0, ping_interval=0.3) as server:
        watcher, _, _ = await join(server, "watcher")
        old, node_id, _ = await join(server, "alice")
        assert (await recv(watcher))["type"] == "relay-peer-joined"
        # A keyless holder gives way only once it has left a ping unanswered for a while.
        holder = server._channels["t1"][node_id]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while not (holder.missed_pings and loop.time() - holder.pinged_at >= 0.15):
            assert loop.time() < deadline, "the relay never pinged the holder"
            await asyncio.sleep(0.02)
        await watcher.send(json.dumps({"type": "relay-pong"}))
        new, _, peers = await join(server, "alice", node_id=node_id)
        assert [p["name"] for p in peers] == ["watcher"]
        assert await close_code(old) == REPLACED
        # the watcher sees the newcomer join, and no relay-peer-left for the replaced connection
        assert await recv_app(watcher) == {"type": "relay-peer-joined", "nodeId": node_id, "name": "alice"}
        await new.send(json.dumps({"payload": {"type": "hello"}}))
        assert (await recv_app(watcher))["payload"] == {"type": "hello"}
        assert len(server.peers("t1")) == 2
        for ws in (watcher, new):
            await ws.close()


async def test_keepalive_pings_and_heartbeat_timeout() -> None:
    async with RelayServer(tokens={"t1"}, ping_interval=0.05) as server:
        lively, lively_id, _ = await join(server, "lively")
        pongs = 0
        target = 10**9
        survived = asyncio.Event()
        heard: asyncio.Queue[dict] = asyncio.Queue()

        async def answer_pings() -> None:
            nonlocal pongs
            async for raw in lively:
                msg = json.loads(raw)
                if msg.get("type") == "relay-ping":
                    await lively.send(json.dumps({"type": "relay-pong"}))
                    pongs += 1
                    if pongs >= target:
                        survived.set()
                else:
                    heard.put_nowait(msg)

        responder = asyncio.create_task(answer_pings())
        silent, silent_id, _ = await join(server, "silent")
        assert await recv(silent) == {"type": "relay-ping"}
        assert await close_code(silent) == HEARTBEAT_TIMEOUT
        joined = await asyncio.wait_for(heard.get(), WAIT)
        assert joined == {"type": "relay-peer-joined", "nodeId": silent_id, "name": "silent"}
        left = await asyncio.wait_for(heard.get(), WAIT)
        assert left == {"type": "relay-peer-left", "nodeId": silent_id, "name": "silent"}
        # the lively one answered every ping and survived well past the two-miss limit
        target = pongs + 4
        await asyncio.wait_for(survived.wait(), WAIT)
        assert not responder.done()
        assert server.peers("t1") == [(lively_id, "lively")]
        responder.cancel()
        await lively.close()


async def test_stop_closes_clients() -> None:
    server = RelayServer(tokens={"t1"})
    await server.start()
    ws, _, _ = await join(server, "alice")
    await server.stop()
    await close_code(ws)
    with pytest.raises(RuntimeError):
        _ = server.port


async def test_serve_forever_runs_until_cancelled() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    task = asyncio.create_task(serve_forever("127.0.0.1", port, ["tok"]))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while True:  # poll until the listener is up
        try:
            ws = await connect(f"ws://127.0.0.1:{port}")
            break
        except OSError:
            assert loop.time() < deadline, "relay never came up"
            await asyncio.sleep(0.02)
    await ws.send(json.dumps({"type": "relay-auth", "nodeId": "n", "name": "x", "token": "tok"}))
    assert await recv(ws) == {"type": "relay-peers", "peers": []}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await close_code(ws)
