"""LIVE interop of the command lines: the stock `sym publish` wakes our peer, and our `xmesh-agent
publish` is stored by a stock node.

Skipped unless SYM_NODE_DIR names a stock `sym` 0.12.x checkout with its npm dependencies
(docs/interop.md). The stock CLI's daemon-less `sym publish --standalone` reaches the mesh only
through a relay (it reads SYM_RELAY_URL / SYM_RELAY_TOKEN) and joins the `default` room, so the first
test runs our relay server on loopback and our peer in `default`, isolated by a fresh relay token.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import uuid
from pathlib import Path

import pytest

from tests.integration.peer_kit import eventually, peer_config
from tests.interop.node_process import NodeProcess, driver_command
from xmesh_agent.mmp.relay.server import RelayServer
from xmesh_agent.workers.client import wake_id
from xmesh_agent.workers.peer import Peer
from xmesh_agent.workflows.wake import WakeWorkflow

SYM_NODE_DIR = os.environ.get("SYM_NODE_DIR", "")
DRIVER = Path(__file__).with_name("stock_driver.js")

pytestmark = [
    pytest.mark.interop,
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which("node"), reason="install node.js to run a stock node"),
    pytest.mark.skipif(
        not (SYM_NODE_DIR and Path(SYM_NODE_DIR, "bin", "sym.js").exists()),
        reason="set SYM_NODE_DIR to a stock sym 0.12.x checkout (npm installed)",
    ),
]


async def test_stock_sym_publish_wakes_our_peer(temporal_env, tmp_path: Path):
    token = f"cli-{uuid.uuid4().hex[:8]}"
    relay = RelayServer("127.0.0.1", 0, {token})
    await relay.start()
    mesh = {"discovery": [], "relay": relay.url, "relay_token": token}
    peer = Peer(peer_config("xm-reviewer-cli", "reviewer", "default", mesh=mesh), temporal_env.client)
    stock_home = tmp_path / "stock-home"
    stock_home.mkdir()
    focus = f"login endpoint rate limiting {uuid.uuid4().hex[:6]}"
    fields = {
        "focus": focus,
        "issue": "credential stuffing spikes on /api/login at night",
        "intent": "add a token bucket per account and per IP",
        "mood": {"text": "concerned", "valence": -0.3, "arousal": 0.4},
    }
    try:
        await peer.start()
        env = {
            **os.environ,
            "HOME": str(stock_home),
            "SYM_RELAY_URL": relay.url,
            "SYM_RELAY_TOKEN": token,
        }
        env.pop("SYM_STATE_DIR", None)
        proc = await asyncio.create_subprocess_exec(
            shutil.which("node") or "node",
            str(Path(SYM_NODE_DIR, "bin", "sym.js")),
            "publish",
            "--standalone",
            "--name",
            "stock-cli",
            json.dumps(fields),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, (out + err).decode()
        assert "Shared:" in out.decode()

        def stored():
            return next(iter(peer.store.recent_by_author("stock-cli", 1)), None)

        trigger = await eventually(stored, timeout=30)
        assert trigger.text("focus") == focus
        handle = temporal_env.client.get_workflow_handle_for(
            WakeWorkflow.run, wake_id("xm-reviewer-cli", trigger.key)
        )
        result = await asyncio.wait_for(handle.result(), 90)
        assert result.outcome == "emitted", result
    finally:
        await peer.stop()
        await relay.stop()


async def test_our_publish_is_stored_by_a_stock_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    group = f"t-{uuid.uuid4().hex[:8]}"
    stock_home = tmp_path / "stock-home"
    stock_home.mkdir()
    loopback = stock_home / ".sym" / "loopback"  # our registry IS the stock node's ~/.sym/loopback
    monkeypatch.setenv("XMESH_SYM_LOOPBACK_DIR", str(loopback))
    argv, env = driver_command(
        DRIVER, {"name": "stock-keeper", "room": group}, stock_home, SYM_NODE_DIR=SYM_NODE_DIR
    )
    stock = NodeProcess(argv, env, "stock node")
    await stock.start()
    try:
        await stock.wait(lambda e: e.get("event") == "started", 20)
        focus = f"cache eviction under memory pressure ({group})"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "xmesh_agent.cli.app",
            "publish",
            "--group",
            group,
            "--name",
            "operator-interop",
            "--focus",
            focus,
            "--intent",
            "evict least recently used entries first",
            "--wait",
            "10",
            "--json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert json.loads(out)["delivered_to"] == ["stock-keeper"]
        sig = await stock.wait(lambda e: e["event"] == "signature" and e["from"] == "operator-interop")
        assert sig["verified"] is True and sig["rejected"] is False
        accepted = await stock.wait(
            lambda e: e["event"] == "cmb-accepted" and "operator-interop" in (e["source"] or "")
        )
        assert focus in (accepted["content"] or "")
    finally:
        await stock.stop({"cmd": "stop"})
