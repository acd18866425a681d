"""`stop/status/cost/trace/peers/logs` against real peers: in-process peers on the session Temporal (their
control sockets are real Unix sockets), and one `xmesh-agent run` subprocess for the graceful stop."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.fakes.model_servers import FakeOpenAIServer
from tests.integration.peer_kit import all_wakes, closed_wakes, eventually, peer_config, start_peer
from xmesh_agent.cli.app import app
from xmesh_agent.config import to_toml
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import mint
from xmesh_agent.mmp.dialects.stock_keys import stock_key_for
from xmesh_agent.mmp.node import MeshNode
from xmesh_agent.mmp.store import CMBStore
from xmesh_agent.wake.ledger import WakeLedger
from xmesh_agent.workers.client import wake_id
from xmesh_agent.workers.control import PeerAlreadyRunning, control_path, is_live
from xmesh_agent.workers.peer import Peer, status_file
from xmesh_agent.workflows.wake import WakeWorkflow

runner = CliRunner()


async def cli(*args: str):
    """Run the CLI in a thread: its blocking socket calls must not stall the peers on this loop."""
    return await asyncio.to_thread(runner.invoke, app, list(args))


def group() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


async def test_read_commands_against_two_running_peers(temporal_env):
    client, grp = temporal_env.client, group()
    writer = await start_peer(client, peer_config("ops-w", "writer", grp))
    reviewer = await start_peer(client, peer_config("ops-r", "reviewer", grp))
    try:
        await eventually(lambda: len(writer.node.peers()) == 1 and len(reviewer.node.peers()) == 1)
        seed = mint(
            {"focus": "rate limiter", "intent": "implement a token bucket per API key"},
            identity=writer.identity,
            group=grp,
            created_at=1_760_000_000_000,
        )
        await writer.node.publish(seed)
        handle = client.get_workflow_handle_for(WakeWorkflow.run, wake_id("ops-r", seed.key))
        await eventually(lambda: all_wakes(client, f"WorkflowId = '{handle.id}'"), timeout=30)
        result = await handle.result()
        assert result.outcome == "emitted"
        await eventually(lambda: reviewer.control.seen.get("emitted", 0) >= 1)
        assert reviewer.control.in_flight() == []
        await eventually(lambda: not reviewer.control._watchers)  # a finished wake leaves nothing behind

        r = await cli("status", "ops-r", "--json")
        assert r.exit_code == 0, r.output
        st = json.loads(r.stdout)
        assert st["ok"] and st["state"] == "running" and st["group"] == grp
        assert st["node_id"] == reviewer.identity.node_id and st["port"] == reviewer.node.port
        assert [(p["name"], p["transport"]) for p in st["peers"]] == [("ops-w", "tcp")]
        assert st["model"] == {"adapter": "offline", "name": "offline-echo"}
        assert st["budget"]["counts"]["day"] >= 1 and st["budget"]["limits"]["minute"] == 10
        assert st["breaker"]["state"] == "closed" and st["cost"]["run_calls"] >= 1
        assert st["wakes"]["seen_this_run"]["emitted"] >= 1
        assert st["wakes"]["visibility"].get("emitted", 0) >= 1

        r = await cli("status", "ops-r")
        assert r.exit_code == 0 and "wake budget" in r.stdout and "breaker" in r.stdout
        assert "ops-w" in r.stdout and "MESH PEER" in r.stdout

        r = await cli("cost", "ops-r")
        assert r.exit_code == 0 and "this run" in r.stdout and "CAP" in r.stdout
        cost = json.loads((await cli("cost", "ops-r", "--json")).stdout)
        assert cost["caps"]["run_usd"] == 5.0 and cost["run_calls"] >= 1

        # trace: the reply, its parent the seed, and a parent nobody has
        r = await cli("trace", "ops-r", result.emitted_key)
        assert r.exit_code == 0, r.output
        lines = r.stdout.splitlines()
        assert lines[0].startswith(result.emitted_key) and "ops-r" in lines[0]
        assert lines[1].startswith(f"  └─ {seed.key}") and "rate limiter" in lines[1]
        for typed in (result.emitted_key[:16] + "…", stock_key_for(reviewer.store.get(result.emitted_key))):
            r = await cli("trace", "ops-r", typed)  # a prefix as the demo prints it, a stock key
            assert r.exit_code == 0 and r.stdout.splitlines() == lines, (typed, r.output)
        orphan = mint(
            {"focus": "follow-up"},
            identity=writer.identity,
            group=grp,
            created_at=1_760_000_000_500,
            parents=[seed],
        )
        body = orphan.model_dump(by_alias=True, exclude_none=True)
        body["lineage"]["parents"].append("cmb1-" + "0" * 32)
        reviewer.store.put(type(orphan).model_validate(body), source="test")
        traced = json.loads((await cli("trace", "ops-r", orphan.key, "--json")).stdout)
        missing = [n for n in traced["nodes"] if n["missing"]]
        assert [n["key"] for n in missing] == ["cmb1-" + "0" * 32] and missing[0]["depth"] == 1
        assert "(missing" in (await cli("trace", "ops-r", orphan.key)).stdout

        r = await cli("trace", "ops-r", "cmb1-ffffffffffffffffffffffffffffffff")
        assert r.exit_code == 1 and "unknown CMB key" in r.output

        r = await cli("peers")
        assert r.exit_code == 0 and "SEEN BY" in r.stdout
        assert {ln.split()[0] for ln in r.stdout.splitlines()[2:]} == {"ops-w", "ops-r"}
        views = json.loads((await cli("peers", "--json")).stdout)
        assert sorted(v["peer"] for v in views) == ["ops-r", "ops-w"]

        r = await cli("logs", "ops-r", "--lines", "500", "--json")
        assert r.exit_code == 0
        events = [json.loads(line) for line in r.stdout.splitlines()]
        kinds = {e["evt"] for e in events}
        assert {"peer-connected", "wake-started", "admitted", "model-call", "emitted"} <= kinds
        assert all(e["peer"] == "ops-r" for e in events)
        emitted = next(e for e in events if e["evt"] == "emitted")
        assert emitted["data"]["key"] == result.emitted_key and emitted["data"]["route"] == "broadcast"
        assert len((await cli("logs", "ops-r", "-n", "2")).stdout.splitlines()) == 2
    finally:
        await writer.stop()
        await reviewer.stop()
    assert not control_path("ops-r").exists() and not status_file("ops-r").exists()


async def test_not_running_names_the_running_peers(temporal_env):
    r = await cli("status", "ghost")
    assert (
        r.exit_code == 1
        and "no peer is running or has run here" in r.output
        and "xmesh-agent run" in r.output
    )
    r = await cli("peers")
    assert r.exit_code == 1 and "no peer is running" in r.output
    peer = await start_peer(temporal_env.client, peer_config("ops-live", "writer", group()))
    try:
        r = await cli("stop", "ghost")
        assert r.exit_code == 1 and "running peers: ops-live" in r.output
        for cmd in (["cost", "ghost"], ["trace", "ghost", "cmb1-x"], ["status", "ghost"]):
            r = await cli(*cmd)
            assert (
                r.exit_code == 1
                and "no peer named ghost on this machine; peers here: ops-live (running)" in r.output
            ), cmd
        r = await cli("logs", "ghost")
        assert r.exit_code == 1 and "no log for peer ghost" in r.output
    finally:
        await peer.stop()


async def test_control_socket_refuses_bad_requests_and_keeps_serving(temporal_env):
    peer = await start_peer(temporal_env.client, peer_config("ops-bad", "writer", group()))
    try:
        path = control_path("ops-bad")
        assert path.stat().st_mode & 0o777 == 0o600

        def exchange(lines: list[bytes]) -> list[dict]:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                sock.connect(str(path))
                replies = []
                stream = sock.makefile("rb")
                for line in lines:
                    sock.sendall(line + b"\n")
                    replies.append(json.loads(stream.readline()))
                return replies

        replies = await asyncio.to_thread(
            exchange,
            [
                b'{"cmd": "__proto__"}',
                b'{"cmd": "constructor"}',
                b'{"cmd": "__class__"}',
                b'{"cmd": ["status"]}',
                b"[1, 2]",
                b"not json",
                b"{}",
                b'{"cmd": "trace"}',
                b'{"cmd": "status"}',
            ],
        )
        assert all(r["ok"] is False for r in replies[:8])
        assert "unknown command" in replies[0]["error"] and "known: status" in replies[0]["error"]
        assert replies[8]["ok"] is True and replies[8]["peer"] == "ops-bad"
        oversized = await asyncio.to_thread(exchange, [b'{"cmd": "' + b"x" * 70_000 + b'"}'])
        assert oversized[0]["ok"] is False
        assert (await cli("status", "ops-bad")).exit_code == 0
    finally:
        await peer.stop()


async def test_second_live_peer_refused_and_stale_socket_replaced(temporal_env):
    client, grp = temporal_env.client, group()
    first = await start_peer(client, peer_config("ops-dup", "writer", grp))
    try:
        with pytest.raises(PeerAlreadyRunning, match="already running.*xmesh-agent stop ops-dup"):
            Peer(peer_config("ops-dup", "writer", grp), client)
        # the refused peer took nothing away from the live one
        assert is_live(control_path("ops-dup")) and status_file("ops-dup").exists()
        assert (await cli("status", "ops-dup")).exit_code == 0
    finally:
        await first.stop()

    # a socket file left by a dead process: bound, never listening, nobody answers
    stale = control_path("ops-stale")
    stale.parent.mkdir(parents=True, exist_ok=True)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(stale))
    dead.close()
    assert stale.exists() and not is_live(stale)
    peer = await start_peer(client, peer_config("ops-stale", "writer", grp))
    try:
        assert is_live(stale) and (await cli("status", "ops-stale")).exit_code == 0
    finally:
        await peer.stop()


async def test_stop_drains_an_in_flight_wake_then_exits_zero(temporal_env, tmp_path: Path):
    client, grp = temporal_env.client, group()
    api_key = "sk-test-" + "k" * 40
    with FakeOpenAIServer() as srv:
        slow = srv.tool_call({"focus": "bucket review", "commitment": "I will review the limiter"})
        slow.delay = 8.0  # stop and status below must land while the wake is inside its model call
        srv.script(slow)
        cfg = peer_config(
            "ops-stop",
            "reviewer",
            grp,
            model={"adapter": "openai", "api_key": api_key, "base_url": srv.base_url},
        )
        config_file = tmp_path / "ops-stop.toml"
        config_file.write_text(to_toml(cfg))
        env = {**os.environ, "TEMPORAL_ADDRESS": client.service_client.config.target_host}
        proc = subprocess.Popen(
            [sys.executable, "-m", "xmesh_agent.cli.app", "run", "--config", str(config_file)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        author = NodeIdentity.generate("ops-author")
        obs_store = CMBStore(tmp_path / "observer.db")
        observer = None
        try:
            await eventually(lambda: is_live(control_path("ops-stop")) or proc.poll() is not None, timeout=30)
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            port = json.loads(status_file("ops-stop").read_text())["port"]
            observer = MeshNode(author, grp, obs_store, static_peers=[f"127.0.0.1:{port}"], discovery=[])
            await observer.start()
            await eventually(lambda: len(observer.peers()) == 1)

            # a second peer of the same name refuses to start, and leaves the live one alone
            dup = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "xmesh_agent.cli.app", "run", "--config", str(config_file)],
                env=env,
                capture_output=True,
                timeout=60,
            )
            assert dup.returncode == 1 and b"already running" in dup.stderr
            assert is_live(control_path("ops-stop")) and status_file("ops-stop").exists()

            seed = mint(
                {"focus": "limiter", "intent": "add a token bucket"},
                identity=author,
                group=grp,
                created_at=1_760_000_000_000,
            )
            await observer.publish(seed)
            await asyncio.to_thread(srv.wait_for_requests, 1, 30)  # the wake is inside its model call

            r = await cli("stop", "ops-stop")
            assert r.exit_code == 0 and "stop accepted" in r.stdout and "1 in-flight" in r.stdout
            st = json.loads((await cli("status", "ops-stop", "--json")).stdout)
            assert st["state"] == "draining"
            late = mint(
                {"focus": "late", "intent": "arrives while draining"},
                identity=author,
                group=grp,
                created_at=1_760_000_000_001,
            )
            await observer.publish(late)

            code = await asyncio.to_thread(proc.wait, 60)
            assert code == 0, proc.stderr.read().decode() if proc.stderr else ""
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if observer is not None:
                await observer.stop()
    # the in-flight wake finished and its reply reached the mesh before the process left
    result = await client.get_workflow_handle_for(WakeWorkflow.run, wake_id("ops-stop", seed.key)).result()
    assert result.outcome == "emitted" and result.emitted_key
    assert obs_store.has(result.emitted_key)
    # the CMB that came during the drain started no wake: it waits in the spool for the next run
    assert not await all_wakes(client, f"WorkflowId = '{wake_id('ops-stop', late.key)}'")
    assert await closed_wakes(client, f"XmGroup = '{grp}'")
    ledger = WakeLedger(Path(os.environ["XMESH_HOME"]) / "peers" / "ops-stop" / "wakes.db")
    try:
        assert late.key in [k for k, _ in ledger.pending()]
    finally:
        ledger.close()
    obs_store.close()
    assert not control_path("ops-stop").exists() and not status_file("ops-stop").exists()
    raw_log = (Path(os.environ["XMESH_HOME"]) / "peers" / "ops-stop" / "peer.log").read_text()
    assert api_key not in raw_log and "k" * 40 not in raw_log
    assert '"evt": "stopping"' in raw_log and '"evt": "model-call"' in raw_log
