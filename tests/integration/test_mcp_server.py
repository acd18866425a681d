"""`xmesh-agent mcp` driven by the MCP SDK's own stdio client, with a real offline peer answering."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from tests.integration.peer_kit import peer_config
from tests.integration.process_kit import PeerProcess, child_env

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "xmesh_agent.cli.app"]


def _env() -> dict[str, str]:
    """The test's home and registry, and no TEMPORAL_ADDRESS: the peer starts the embedded server
    under that home and the MCP server finds it there, as on a user's machine."""
    env = child_env(Path(os.environ["XMESH_HOME"]), Path(os.environ["XMESH_SYM_LOOPBACK_DIR"]), "")
    env.pop("TEMPORAL_ADDRESS")
    return env


async def _call(session: ClientSession, tool: str, **args: Any) -> Any:
    result = await session.call_tool(tool, args)
    text = "".join(getattr(c, "text", "") for c in result.content)
    if result.isError:
        raise AssertionError(f"{tool} failed: {text}")
    if result.structuredContent is not None:
        data = result.structuredContent
        return data["result"] if set(data) == {"result"} else data
    return json.loads(text)


async def _until(probe, timeout: float, what: str) -> Any:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout}s")
        await asyncio.sleep(0.2)


async def test_a_copilot_publishes_and_receives_the_peers_answer(tmp_path: Path):
    env = _env()
    group = f"t-{uuid.uuid4().hex[:8]}"
    peer = PeerProcess(peer_config("reviewer-m", "reviewer", group), tmp_path, env).start()
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "xmesh_agent.cli.app", "mcp", "--group", group, "--name", "claude-test", "--operator"],
        env=env,
        cwd=str(Path(__file__).resolve().parents[2]),
    )
    try:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            init = await session.initialize()
            assert init.serverInfo.name == "xmesh" and "receive" in (init.instructions or "")
            tools = {t.name: t for t in (await session.list_tools()).tools}
            assert {"publish", "receive", "recall", "peers", "wakes", "approve", "deny"} <= set(tools)
            assert "sym_publish" in tools["publish"].description
            assert "sym_receive" in tools["receive"].description
            assert tools["publish"].inputSchema["required"] == ["focus"]

            async def reviewer_connected() -> bool:
                listed = await _call(session, "peers")
                return [p["name"] for p in listed["peers"]] == ["reviewer-m"]

            await _until(reviewer_connected, 30, "the peer in `peers`")
            sent = await _call(
                session,
                "publish",
                focus="rate limiter",
                intent="implement a token bucket per API key",
                issue="bursts overload the API",
            )
            assert sent["key"].startswith("cmb1-") and sent["delivered_to"] == ["reviewer-m"]

            async def answered() -> list[dict]:
                got = await _call(session, "receive", wait=5)
                return [c for c in got["cmbs"] if sent["key"] in c["parents"]]

            answer = (await _until(answered, 60, "the peer's answer in `receive`"))[0]
            assert answer["author"] == "reviewer-m" and answer["fields"]
            assert (await _call(session, "receive"))["cmbs"] == []  # drained: the next call is empty

            hits = await _call(session, "recall", query="rate limiter", since="1h")
            assert {sent["key"], answer["key"]} <= {h["key"] for h in hits}
            followup = await _call(
                session,
                "publish",
                focus="rate limiter",
                commitment="add a burst test",
                parents=[answer["key"][:17]],
            )
            [mine] = [
                h
                for h in await _call(session, "recall", author="claude-test", limit=5)
                if h["key"] == followup["key"]
            ]
            assert mine["parents"] == [answer["key"]] and mine["fields"]["commitment"] == "add a burst test"
            woke = await _call(session, "wakes", peer="reviewer-m")
            assert any(w["workflow_id"].endswith(sent["key"]) and w["outcome"] == "emitted" for w in woke)

            bad = await session.call_tool("publish", {"focus": "x", "to": "nobody-here"})
            assert bad.isError and "nobody-here" in bad.content[0].text
    finally:
        peer.stop()


async def test_an_operator_copilot_approves_and_denies_held_wakes(tmp_path: Path):
    env = _env()
    group = f"t-{uuid.uuid4().hex[:8]}"
    gates = [{"name": "rocket", "pattern": "launch the rocket", "action": "approve"}]
    peer = PeerProcess(
        peer_config("gated-m", "writer", group, safety={"gates": gates}), tmp_path, env
    ).start()
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "xmesh_agent.cli.app", "mcp", "--group", group, "--name", "ops-test", "--operator"],
        env=env,
        cwd=str(Path(__file__).resolve().parents[2]),
    )
    try:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()

            async def held(key: str) -> str | None:
                rows = await _call(session, "wakes", peer="gated-m", stage="awaiting-approval")
                return next((r["workflow_id"] for r in rows if r["workflow_id"].endswith(key)), None)

            go = await _call(session, "publish", focus="launch the rocket on friday", intent="go for launch")
            wid = await _until(lambda: held(go["key"]), 60, "the gated wake in `wakes`")
            [row] = [
                r for r in await _call(session, "wakes", stage="awaiting-approval") if r["workflow_id"] == wid
            ]
            assert "launch the rocket" in json.dumps(row["held"])  # the reply it would emit, to judge it by
            assert "approved" in await _call(
                session, "approve", workflow_id=go["key"][:17]
            )  # a prefix names it

            async def answered() -> list[dict]:
                return [c for c in (await _call(session, "receive"))["cmbs"] if go["key"] in c["parents"]]

            reply = (await _until(answered, 60, "the approved reply"))[0]
            assert reply["author"] == "gated-m" and "launch the rocket" in json.dumps(reply["fields"])

            stop = await _call(session, "publish", focus="launch the rocket tonight", intent="go now")
            wid = await _until(lambda: held(stop["key"]), 60, "the second gated wake")
            await _call(session, "deny", workflow_id=wid, reason="not before the review")

            async def denied() -> bool:
                rows = await _call(session, "wakes", peer="gated-m", outcome="denied")
                return any(r["workflow_id"] == wid for r in rows)

            await _until(denied, 60, "the denied wake")
            again = await session.call_tool("approve", {"workflow_id": wid})
            assert again.isError
    finally:
        peer.stop()


async def test_stdout_carries_only_mcp_messages(tmp_path: Path):
    """stdio is the transport: one stray print would corrupt it. Every stdout line must be JSON-RPC."""
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "mcp",
        "--group",
        "quiet",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    hello = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"},
        },
    }
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(hello).encode() + b"\n")
    await proc.stdin.drain()
    first = await asyncio.wait_for(proc.stdout.readline(), 30)
    proc.stdin.close()
    rest, err = await asyncio.wait_for(proc.communicate(), 30)
    lines = [first, *rest.splitlines()]
    assert all(json.loads(line)["jsonrpc"] == "2.0" for line in lines if line.strip()), lines
    assert json.loads(first)["result"]["serverInfo"]["name"] == "xmesh"
    assert proc.returncode == 0, err.decode()


async def test_bad_group_is_one_line_on_stderr():
    proc = await asyncio.create_subprocess_exec(
        *CLI, "mcp", "--group", "No Such!", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and out == b""
    assert err.decode().strip().splitlines() == [
        "xmesh-agent: invalid group 'No Such!': 1-64 of a-z 0-9 _ . -"
    ]
