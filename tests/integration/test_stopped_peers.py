"""A peer that ran and stopped, read as its operator meets it: `xmesh-agent status/cost/trace/logs` as
real processes against the files a real `xmesh-agent run` peer (offline model) left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.integration.peer_kit import eventually, peer_config
from tests.integration.process_kit import PeerProcess, child_env
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import mint
from xmesh_agent.mmp.node import MeshNode
from xmesh_agent.mmp.store import CMBStore
from xmesh_agent.workers.client import wake_id
from xmesh_agent.workflows.wake import WakeWorkflow


def xmesh(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xmesh_agent.cli.app", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_stopped_peer_answers_status_cost_trace_and_logs_from_disk(temporal_env, tmp_path: Path):
    client = temporal_env.client
    grp = f"t-{uuid.uuid4().hex[:8]}"
    home, loopback = tmp_path / "home", tmp_path / "loopback"
    env = child_env(home, loopback, client.service_client.config.target_host)
    peer = PeerProcess(peer_config("disk-r", "reviewer", grp), tmp_path, env).start()
    author = NodeIdentity.generate("disk-author")
    observer = MeshNode(
        author,
        grp,
        CMBStore(tmp_path / "observer.db"),
        static_peers=[f"127.0.0.1:{peer.status()['port']}"],
        discovery=[],
    )
    await observer.start()
    try:
        await eventually(lambda: len(observer.peers()) == 1)
        seed = mint(
            {"focus": "rate limiter", "intent": "implement a token bucket per API key"},
            identity=author,
            group=grp,
            created_at=1_760_000_000_000,
        )
        await observer.publish(seed)
        handle = client.get_workflow_handle_for(WakeWorkflow.run, wake_id("disk-r", seed.key))
        result = await eventually(lambda: _result(handle), timeout=40)
        assert result.outcome == "emitted" and result.emitted_key
    finally:
        await observer.stop()
    assert peer.stop() == 0, peer.log()

    # status, one peer: stopped, from its files
    r = xmesh(env, "status", "disk-r")
    assert r.returncode == 0, r.stderr
    assert "disk-r (stopped: not running; last run" in r.stdout
    assert "wake budget" in r.stdout and "1 started, 1 emitted, 0 spooled" in r.stdout
    st = json.loads(xmesh(env, "status", "disk-r", "--json").stdout)
    assert st["state"] == "stopped" and st["group"] == grp and st["model"]["adapter"] == "offline"
    assert st["node_id"] and st["last_run"]["stopped_at"] >= st["last_run"]["started_at"] > 0
    assert st["budget"]["counts"]["day"] == 1 and st["budget"]["limits"]["minute"] == 10
    assert st["cost"]["calls"] == 1 and st["cost"]["run_calls"] == 1 and st["breaker"]["state"] == "closed"
    assert st["wakes"] == {"spooled": 0, "woken": 1, "emitted": 1}

    # status and cost without a name: every peer of this machine
    r = xmesh(env, "status")
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith("disk-r"))
    assert row.split()[:4] == ["disk-r", "stopped", "1", "closed"]
    assert [v["peer"] for v in json.loads(xmesh(env, "status", "--json").stdout)] == ["disk-r"]
    r = xmesh(env, "cost", "disk-r")
    assert r.returncode == 0 and "disk-r is stopped" in r.stdout and "this run" in r.stdout
    cost = json.loads(xmesh(env, "cost", "disk-r", "--json").stdout)
    assert cost["state"] == "stopped" and cost["caps"]["run_usd"] == 5.0 and cost["calls"] == 1
    r = xmesh(env, "cost")
    assert r.returncode == 0 and "LIFETIME" in r.stdout and "disk-r  stopped" in r.stdout
    assert json.loads(xmesh(env, "cost", "--json").stdout)[0]["peer"] == "disk-r"

    # trace from the stopped peer's store; a reply whose focus is neutral shows the field with text
    r = xmesh(env, "trace", "disk-r", result.emitted_key)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(result.emitted_key) and "disk-r" in lines[0]
    assert lines[1].startswith(f"  └─ {seed.key}") and "rate limiter" in lines[1]
    store = CMBStore(home / "peers" / "disk-r" / "cmbs.db")
    committed = mint(
        {"focus": "neutral", "commitment": "I will review the limiter by Friday"},
        identity=author,
        group=grp,
        created_at=1_760_000_000_100,
        parents=[seed],
    )
    store.put(committed, source="test")
    store.close()
    r = xmesh(env, "trace", "disk-r", committed.key)
    assert "commitment: I will review the limiter by Friday" in r.stdout.splitlines()[0], r.stdout
    assert "neutral" not in r.stdout.splitlines()[0]
    traced = json.loads(xmesh(env, "trace", "disk-r", committed.key, "--json").stdout)
    assert traced["max_depth"] == 20 and traced["nodes"][0]["created_by"] == "disk-author"
    r = xmesh(env, "trace", "disk-r", "cmb1-" + "f" * 32)
    assert r.returncode == 1 and "unknown CMB key" in r.stderr

    # logs: one readable line per event, the reply's text on `emitted`; --json keeps the events
    r = xmesh(env, "logs", "disk-r", "-n", "500")
    assert r.returncode == 0, r.stderr
    emitted = next(line for line in r.stdout.splitlines() if " emitted " in line)
    assert "disk-r" in emitted and result.emitted_key[:13] in emitted and "rate limiter" in emitted
    assert not r.stdout.lstrip().startswith("{")
    model = next(line for line in r.stdout.splitlines() if " model-call " in line)
    assert "offline/offline-echo" in model and "tokens" in model
    events = [
        json.loads(line) for line in xmesh(env, "logs", "disk-r", "-n", "500", "--json").stdout.splitlines()
    ]
    data = next(e["data"] for e in events if e["evt"] == "emitted")
    assert data["key"] == result.emitted_key and data["wake_id"] == handle.id and "delivered_to" in data
    assert "rate limiter" in data["text"]
    assert all("wakeId" not in e["data"] and "cmbKey" not in e["data"] for e in events)

    # a name that never ran: one line naming the peers that did
    r = xmesh(env, "status", "ghost")
    assert r.returncode == 1 and "no peer named ghost" in r.stderr and "disk-r (stopped)" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (home / "peers" / "ghost").exists()
    assert os.environ.get("XMESH_HOME") != str(home)


async def _result(handle):
    try:
        return await handle.result()
    except Exception:  # noqa: BLE001 - not started yet
        return None
