"""The relay carries an envelope around a maximum-size (1 MiB) frame, and refuses anything far larger."""

from __future__ import annotations

import asyncio
import json

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from xmesh_agent.identity import uuid7
from xmesh_agent.mmp.framing import MAX_FRAME_BYTES, encode_frame
from xmesh_agent.mmp.relay.server import MAX_MESSAGE_BYTES, RelayServer

WAIT = 10.0


def max_size_frame() -> dict:
    """A cmb-shaped frame whose compact JSON is exactly MAX_FRAME_BYTES long (the TCP framing limit)."""
    frame = {"type": "cmb", "cmb": {"key": "k", "pad": ""}}
    base = len(json.dumps(frame, separators=(",", ":")).encode())
    frame["cmb"]["pad"] = "x" * (MAX_FRAME_BYTES - base)
    return frame


async def join(relay: RelayServer, name: str):
    ws = await connect(relay.url, max_size=None)
    node_id = uuid7()
    await ws.send(json.dumps({"type": "relay-auth", "nodeId": node_id, "name": name}))
    assert json.loads(await asyncio.wait_for(ws.recv(), WAIT))["type"] == "relay-peers"
    return ws, node_id


async def next_delivery(ws) -> dict:
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        if "payload" in msg:
            return msg


async def test_envelope_around_a_max_size_frame_is_relayed() -> None:
    relay = RelayServer("127.0.0.1", 0, ping_interval=60)
    await relay.start()
    try:
        a, _ = await join(relay, "alice")
        b, b_id = await join(relay, "bob")
        frame = max_size_frame()
        encode_frame(frame)  # the frame itself is legal on TCP: exactly at the limit
        envelope = json.dumps({"to": b_id, "payload": frame}, separators=(",", ":"))
        assert MAX_FRAME_BYTES < len(envelope.encode()) <= MAX_MESSAGE_BYTES
        await a.send(envelope)
        got = await next_delivery(b)
        assert got["payload"] == frame and got["fromName"] == "alice"
        await a.close()
        await b.close()
    finally:
        await relay.stop()


async def test_message_beyond_the_headroom_closes_the_sender() -> None:
    relay = RelayServer("127.0.0.1", 0, ping_interval=60)
    await relay.start()
    try:
        a, _ = await join(relay, "alice")
        b, b_id = await join(relay, "bob")
        big = json.dumps({"to": b_id, "payload": {"type": "cmb", "pad": "x" * MAX_MESSAGE_BYTES}})
        await a.send(big)
        try:
            while True:
                await asyncio.wait_for(a.recv(), WAIT)
        except ConnectionClosed:
            pass
        assert a.close_code == 1009  # "message too big"
        # alice is gone from the channel; bob is still on it
        deadline = asyncio.get_running_loop().time() + WAIT
        while [n for _, n in relay.peers()] != ["bob"]:
            assert asyncio.get_running_loop().time() < deadline, relay.peers()
            await asyncio.sleep(0.02)
        await b.close()
    finally:
        await relay.stop()
