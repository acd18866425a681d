"""The approval inbox as an operator uses it (issue 24 item 1): real `xmesh-agent` processes against a
real peer holding `git push` replies at an approval gate.

A held wake shows the reply it would emit, in full, wherever it is shown (`wakes`, `wakes export`, the
Web UI's current details); `approve`/`deny` take a unique prefix or `--peer` (ambiguous: the candidates
are listed; `--all` decides each).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowExecutionStatus

from tests.fakes.model_servers import FakeOpenAIServer
from tests.integration.envelope_kit import Observer, deliver, group_name, openai_config, result_of, trigger
from tests.integration.peer_kit import eventually, start_peer
from tests.integration.process_kit import PeerProcess, child_env
from tests.integration.test_approval_auth import held, run_cli, xmesh
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.wake.payloads import Outcome
from xmesh_agent.workers.client import wake_id

REPLY = {
    "focus": "release of the rate limiter for billing",
    "intent": "git push origin main once CI is green",
    "mood": "confident",
}


async def test_held_replies_are_shown_in_full_and_decided_by_prefix_or_peer(temporal_env):
    client = temporal_env.client
    address = client.service_client.config.target_host
    group = group_name()
    author = NodeIdentity.generate("author-x")
    with FakeOpenAIServer() as fake:
        fake.script(*[fake.tool_call(REPLY)] * 2)
        safety = {"approval_gates": "approve", "approval_timeout_seconds": 600}
        peer = await start_peer(client, openai_config("inbox-p", group, fake.base_url, safety=safety))
        try:
            first = await deliver(peer, trigger(author, group, 0))
            second = await deliver(peer, trigger(author, group, 1))
            await held(client, first)
            await held(client, second)

            async def both_listed() -> dict | None:
                out = await xmesh(
                    address, "wakes", "--peer", "inbox-p", "--stage", "awaiting-approval", "--json"
                )
                rows = json.loads(out.stdout) if out.returncode == 0 else []
                return {r["workflow_id"]: r for r in rows} if len(rows) == 2 else None

            rows = await eventually(both_listed, timeout=30, interval=0.5)
            assert set(rows) == {first, second}
            held_first = rows[first]["held"]
            assert held_first["reply"] == REPLY
            assert held_first["reason"] == 'rule git-push on intent: "git push"'

            table = await xmesh(address, "wakes", "--peer", "inbox-p", "--stage", "awaiting-approval")
            assert table.returncode == 0, table.stderr
            assert "2 wake(s) await approval" in table.stdout
            assert "intent: git push origin main once CI is green" in table.stdout
            assert f"xmesh-agent approve {first.rsplit('-', 1)[1][:12]}" in table.stdout
            assert "****" not in table.stdout

            # the Web UI shows a running workflow's current details (the SDK's metadata query)
            meta = await client.get_workflow_handle(first).query(
                "__temporal_workflow_metadata", result_type=WorkflowMetadata
            )
            assert "git push origin main once CI is green" in meta.current_details
            assert f"xmesh-agent approve {first.rsplit('-', 1)[1][:12]}" in meta.current_details

            exported = await xmesh(address, "wakes", "export", first)
            assert exported.returncode == 0 and "git push origin main once CI is green" in exported.stdout
            # and the timer it waits on says what it waits for, not only "one hour"
            timer = next(
                e
                for e in json.loads(exported.stdout)["events"]
                if e["eventType"] == "EVENT_TYPE_TIMER_STARTED"
            )
            assert timer["userMetadata"]["summary"]["json"].startswith(
                "awaiting approval (git-push): xmesh-agent approve "
            )

            # the peer says so in `status` and `watch`, with the command lines that decide
            status = await run_cli("status", "inbox-p")
            assert status.returncode == 0, status.stderr
            assert "(in flight 2, 2 awaiting approval)" in status.stdout
            assert "approve all: xmesh-agent approve --peer inbox-p --all" in status.stdout
            assert "intent: git push origin main once CI is green" in status.stdout
            status_json = json.loads((await run_cli("status", "inbox-p", "--json")).stdout)
            held_now = {w["workflow_id"]: w for w in status_json["awaiting_approval"]}
            assert set(held_now) == {first, second} and held_now[first]["reply"] == REPLY
            watch = await run_cli("watch", "--once", "--no-color")
            header, _rule, row = watch.stdout.splitlines()[1:4]
            assert row.split()[header.split().index("HELD")] == "2"
            notes = [line for line in watch.stdout.splitlines() if line.startswith("inbox-p awaits approval")]
            assert len(notes) == 2 and 'rule git-push on intent: "git push"' in notes[0]
            assert f"xmesh-agent approve {first.rsplit('-', 1)[1][:12]}" in watch.stdout
            assert watch.stdout.count("  intent: git push origin main once CI is green") == 2

            # both wakes fit `--peer inbox-p` and the prefix `wake-inbox-p`: listed, nothing decided
            for args in (["--peer", "inbox-p"], ["wake-inbox-p"]):
                ambiguous = await xmesh(address, "approve", *args)
                assert ambiguous.returncode == 2, ambiguous.stdout + ambiguous.stderr
                assert "2 wakes awaiting approval match" in ambiguous.stderr
                assert first in ambiguous.stderr and second in ambiguous.stderr
            nothing = await xmesh(address, "approve", "cmb1-ffffffffff")
            assert nothing.returncode == 1 and "no wake awaiting approval matches" in nothing.stderr
            assert (await xmesh(address, "approve")).returncode == 2

            approved = await xmesh(
                address, "approve", "--peer", "inbox-p", "--all", "--by", "alice", "--json"
            )
            assert approved.returncode == 0, approved.stdout + approved.stderr
            decided = {d["workflow_id"]: d for d in json.loads(approved.stdout)}
            assert set(decided) == {first, second}
            assert {d["decision"] for d in decided.values()} == {"approved"}
            assert decided[first]["reply"] == REPLY and decided[first]["error"] is None
            for wid in (first, second):
                assert (await result_of(client, wid)).outcome == Outcome.EMITTED
        finally:
            await peer.stop()


async def test_run_says_a_reply_waits_and_how_to_decide_it(temporal_env, tmp_path):
    """`xmesh-agent run` as its own process; the trigger arrives over the mesh from another node."""
    client = temporal_env.client
    address = client.service_client.config.target_host
    group = group_name()
    env = child_env(Path(os.environ["XMESH_HOME"]), Path(os.environ["XMESH_SYM_LOOPBACK_DIR"]), address)
    with FakeOpenAIServer() as fake:
        fake.script(fake.tool_call(REPLY))
        safety = {"approval_gates": "approve", "approval_timeout_seconds": 600}
        cfg = openai_config("run-p", group, fake.base_url, safety=safety)
        peer = PeerProcess(cfg, tmp_path, env).start()
        observer = await Observer(tmp_path, group).start()
        try:
            await eventually(lambda: observer.node.peers(), timeout=30)
            cmb = trigger(observer.identity, group, 0)
            observer.store.put(cmb, source=observer.identity.name)
            await observer.node.publish(cmb)
            wid = wake_id("run-p", cmb.key)
            await held(client, wid)
            ref = cmb.key.removeprefix("cmb1-")[:12]
            said = await eventually(
                lambda: "waits for your approval" in peer.log() and peer.log(), timeout=20
            )
            assert f"wake {wid}" in said and 'rule git-push on intent: "git push"' in said
            assert "intent: git push origin main once CI is green" in said
            assert f'xmesh-agent approve {ref}   |   xmesh-agent deny {ref} --reason "…"' in said
            approved = await xmesh(address, "approve", ref)
            assert approved.returncode == 0, approved.stdout + approved.stderr
            assert (await result_of(client, wid)).outcome == Outcome.EMITTED
            await eventually(lambda: observer.from_author("run-p"), timeout=20)
        finally:
            await observer.stop()
            peer.stop()


async def test_a_held_wake_outlives_its_peer_and_is_decided_when_it_runs_again(temporal_env):
    client = temporal_env.client
    address = client.service_client.config.target_host
    group = group_name()
    author = NodeIdentity.generate("author-x")
    with FakeOpenAIServer() as fake:
        fake.script(fake.tool_call(REPLY))
        safety = {"approval_gates": "approve", "approval_timeout_seconds": 600}
        cfg = openai_config("again-p", group, fake.base_url, safety=safety)
        peer = await start_peer(client, cfg)
        try:
            wid = await deliver(peer, trigger(author, group, 0))
            await held(client, wid)
        finally:
            await peer.stop()
        started = time.monotonic()
        early = await xmesh(address, "approve", "--peer", "again-p")
        assert early.returncode == 1 and "peer again-p is not running" in early.stderr, early.stderr
        assert "start the peer" in early.stderr and time.monotonic() - started < 40
        assert (await client.get_workflow_handle(wid).describe()).status == WorkflowExecutionStatus.RUNNING

        peer = await start_peer(client, cfg)
        try:
            approved = await xmesh(address, "approve", "--peer", "again-p")
            assert approved.returncode == 0, approved.stdout + approved.stderr
            assert (await result_of(client, wid)).outcome == Outcome.EMITTED
        finally:
            await peer.stop()
