"""`xmesh-agent publish` as a user runs it: a real `xmesh-agent run` peer process on the embedded-style
Temporal, the real CLI in its own process, real sockets, the same-host registry.

A broadcast about another topic than the peer's memory is SVAF-rejected; the same kind of directive
directed to the peer (`--to <name>`) wakes it and reaches the model (MMP §9.2.2), once.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.envelope_kit import group_name
from tests.integration.peer_kit import all_wakes, eventually, peer_config
from tests.integration.process_kit import PeerProcess, child_env, free_port
from xmesh_agent.config import to_toml
from xmesh_agent.lookup import open_reader
from xmesh_agent.operator import Target, directive_from_fields, publish
from xmesh_agent.wake.payloads import Outcome
from xmesh_agent.workers.client import wake_id
from xmesh_agent.workflows.wake import WakeWorkflow

TOPIC = {
    "focus": "token bucket rate limiter for the login endpoint",
    "issue": "bursts of login attempts exhaust the limiter",
    "intent": "cap bursts at twenty requests per second per API key",
}


def run_cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xmesh_agent.cli.app", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )


async def wake_result(client, peer: str, key: str):
    handle = client.get_workflow_handle_for(WakeWorkflow.run, wake_id(peer, key))
    await eventually(lambda: all_wakes(client, f"WorkflowId = '{handle.id}'"), timeout=30)
    return await asyncio.wait_for(handle.result(), 40)


@pytest.mark.slow
async def test_publish_reaches_a_running_peer_broadcast_is_gated_directed_wakes_it(temporal_env, tmp_path):
    client = temporal_env.client
    address = client.service_client.config.target_host
    env = child_env(Path(os.environ["XMESH_HOME"]), Path(os.environ["XMESH_SYM_LOOPBACK_DIR"]), address)
    group = group_name()
    peer = PeerProcess(peer_config("pub-r", "reviewer", group), tmp_path, env)
    await asyncio.to_thread(peer.start)
    try:
        # the peer's memory: six directives about one topic (published in-process, same code path)
        for i in range(6):
            texts = {k: f"{v} (take {i})" for k, v in TOPIC.items()}
            result = await publish(directive_from_fields(texts), Target(group=group), wait=10)
            assert result.delivered_to == ["pub-r"]
            await wake_result(client, "pub-r", result.key)

        other = {
            "--focus": "migrate the billing export to parquet files",
            "--issue": "nightly invoices spreadsheet grows too large",
            "--intent": "write monthly partitions to object storage",
        }
        args = [a for kv in other.items() for a in kv]
        done = await asyncio.to_thread(run_cli, env, "publish", *args, "--group", group, "--json")
        assert done.returncode == 0, done.stderr
        broadcast = json.loads(done.stdout)
        assert broadcast["delivered_to"] == ["pub-r"] and broadcast["key"].startswith("cmb1-")
        gated = await wake_result(client, "pub-r", broadcast["key"])
        assert gated.outcome == Outcome.REJECTED and not gated.directed

        directive = json.dumps({"focus": "translate the onboarding guide into german", "intent": "ship it"})
        done = await asyncio.to_thread(
            run_cli, env, "publish", "-", "--group", group, "--to", "pub-r", "--json", stdin=directive
        )
        assert done.returncode == 0, done.stderr
        directed = json.loads(done.stdout)
        assert directed["delivered_to"] == ["pub-r"]
        woken = await wake_result(client, "pub-r", directed["key"])
        assert woken.outcome == Outcome.EMITTED and woken.directed and woken.remixed is False
        assert woken.admission == "rejected"  # SVAF's memory verdict, recorded beside the delivery
        wakes = await all_wakes(client, f"WorkflowId = '{wake_id('pub-r', directed['key'])}'")
        assert len(wakes) == 1
        desc = await client.get_workflow_handle(wake_id("pub-r", directed["key"])).describe()
        assert "(directed)" in (await desc.static_summary() or "")  # what the Web UI lists
        details = await desc.static_details() or ""
        assert "**directed**" in details and "not kept in memory" in details
        assert (await desc.memo())["result"]["directed"] is True

        with open_reader("pub-r") as store:  # the peer holds it as sent: signed, directed, operator
            held = store.get(directed["key"])
        assert held is not None and held.cmb.to and held.cmb.sig
        assert held.cmb.text("perspective") == "operator" and held.cmb.created_by.startswith("operator-")

        began = time.monotonic()
        text = await asyncio.to_thread(
            run_cli,
            env,
            "publish",
            "--focus",
            "hello",
            "--group",
            group,
            "--parents",
            directed["key"][:14] + "…",
            "--wait",
            "30",
        )
        assert text.returncode == 0 and text.stdout.startswith("published cmb1-") and "pub-r" in text.stdout
        assert time.monotonic() - began < 15  # it left once the registry's one peer was connected
        follow_up = text.stdout.split()[1]
        again = await asyncio.to_thread(run_cli, env, "publish", *args, "--group", group)  # the broadcast's
        assert again.returncode == 0 and "published before" in again.stderr
    finally:
        assert peer.stop() == 0

    # the peer is stopped: its store on disk still answers recall and show
    done = await asyncio.to_thread(
        run_cli, env, "recall", "billing parquet export", "--peer", "pub-r", "--json"
    )
    assert done.returncode == 0, done.stderr
    hits = json.loads(done.stdout)
    assert hits[0]["key"] == broadcast["key"] and hits[0]["author"].startswith("operator-")
    assert hits[0]["fields"]["focus"] == "migrate the billing export to parquet files"
    done = await asyncio.to_thread(run_cli, env, "show", follow_up[:16], "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["key"] == follow_up and shown["parents"] == [directed["key"]]
    assert shown["signature"]["verified"] is True and shown["held_by"][0]["peer"] == "pub-r"
    done = await asyncio.to_thread(run_cli, env, "show", shown["stock_key"])
    assert done.returncode == 0 and done.stdout.startswith(follow_up) and "signature verifies" in done.stdout


async def test_publish_with_nobody_to_reach_or_bad_input_fails_in_one_line(tmp_path):
    env = child_env(Path(os.environ["XMESH_HOME"]), Path(os.environ["XMESH_SYM_LOOPBACK_DIR"]), "")
    done = await asyncio.to_thread(
        run_cli, env, "publish", "--focus", "anyone?", "--group", group_name(), "--wait", "0.3", "--json"
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "nobody reached" in done.stderr
    config = tmp_path / "p.toml"
    closed = free_port()  # nothing listens there
    config.write_text(
        to_toml(peer_config("p", "writer", group_name(), mesh={"peers": [f"127.0.0.1:{closed}"]}))
    )
    done = await asyncio.to_thread(
        run_cli, env, "publish", "--focus", "hi", "--config", str(config), "--wait", "0.5"
    )
    assert done.returncode == 1 and "1 known peer address(es) did not answer" in done.stderr
    for args, stdin, words in [
        (['{"colour": "red"}'], None, "unknown field 'colour'"),
        (["-"], "{not json", "not valid JSON"),
        (["--focus", "  "], None, "empty directive"),
        (["--focus", "x", "--to", "pub-r", "--parents", "cmb1-0000"], None, "too short"),
    ]:
        done = await asyncio.to_thread(run_cli, env, "publish", *args, "--group", "g", stdin=stdin)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and words in done.stderr and "Traceback" not in done.stderr
