"""The MCP session's mesh side with real nodes on loopback: directed delivery, the inbox, bad input."""

from __future__ import annotations

import time

import pytest

from tests.integration.peer_kit import FAST_NODE, eventually
from xmesh_agent.cli.mcp_session import BridgeError, MeshSession
from xmesh_agent.observer import Join


async def _sessions(*names: str) -> list[MeshSession]:
    out = [MeshSession(Join.of("mcp-unit", None, n), **FAST_NODE) for n in names]
    for s in out:
        await s.start()
    await eventually(lambda: all(len(s.peers()) == len(out) - 1 for s in out), timeout=20)
    return out


async def test_a_directed_cmb_reaches_only_its_peer_and_says_so():
    a, b, c = await _sessions("mcp-a", "mcp-b", "mcp-c")
    try:
        sent = await a.publish({"focus": "review the limiter"}, to="mcp-b")
        assert sent["delivered_to"] == ["mcp-b"]
        got = (await b.receive(peek=True, wait=10))["cmbs"][0]  # returns on arrival, not after 10 s
        assert got["key"] == sent["key"] and got["directed"] is True and got["author"] == "mcp-a"
        assert (await b.receive())["cmbs"] and (await b.receive())["cmbs"] == []  # drained
        broadcast = await a.publish(
            {"focus": "status", "intent": "tell everyone"}, parents=[sent["key"][:17]]
        )
        assert sorted(broadcast["delivered_to"]) == ["mcp-b", "mcp-c"]
        heard = (await c.receive(wait=10))["cmbs"]
        assert [h["key"] for h in heard] == [broadcast["key"]]  # c never saw the directed one
        assert heard[0]["directed"] is False and heard[0]["parents"] == [sent["key"]]
        started = time.monotonic()
        assert (await c.receive(wait=0.3))["cmbs"] == [] and time.monotonic() - started >= 0.3
    finally:
        for s in (a, b, c):
            await s.stop()


async def test_bad_requests_are_one_line_errors():
    (a, b) = await _sessions("mcp-d", "mcp-e")
    try:
        with pytest.raises(BridgeError, match="focus is required"):
            await a.publish({"intent": "no focus"})
        with pytest.raises(BridgeError, match="unknown field"):
            await a.publish({"focus": "x", "colour": "blue"})
        with pytest.raises(BridgeError, match="'nobody' is not connected"):
            await a.publish({"focus": "x"}, to="nobody", wait=0.2)
        with pytest.raises(BridgeError, match="parents"):
            await a.publish({"focus": "x"}, parents=["cmb1-ffffffffffff"])
    finally:
        await a.stop()
        await b.stop()
