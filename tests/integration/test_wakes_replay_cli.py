"""`wakes`, `replay`, `approve`/`deny` through the real CLI against a real peer on the session's Temporal.

The CLI runs in a worker thread (it owns its event loop, as from a shell) and connects with
--temporal-address; the peer (node + worker + listener) runs on the test's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

from temporalio import workflow
from temporalio.client import Client
from temporalio.service import RPCError
from typer.testing import CliRunner

from tests.fakes.model_servers import FakeOllamaServer
from tests.integration.peer_kit import eventually, peer_config, start_peer
from xmesh_agent.cli.app import app
from xmesh_agent.clock import now_ms
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import CMB, mint
from xmesh_agent.wake.payloads import WakeInput, WakeResult
from xmesh_agent.workers.client import wake_id
from xmesh_agent.workers.peer import Peer
from xmesh_agent.workers.replay import check_history, has_worker, load_history
from xmesh_agent.workflows.wake import WakeWorkflow

runner = CliRunner()


async def cli(env, *args: str):
    """Run `xmesh-agent <args> --temporal-address <session server>` off the loop, like a shell would."""
    address = env.client.service_client.config.target_host
    return await asyncio.to_thread(runner.invoke, app, [*args, "--temporal-address", address])


@contextlib.asynccontextmanager
async def gated_peer(client: Client, name: str, gates: list[dict]) -> AsyncIterator[Peer]:
    group = f"t-{uuid.uuid4().hex[:8]}"
    peer = await start_peer(client, peer_config(name, "reviewer", group, safety={"gates": gates}))
    try:
        yield peer
    finally:
        await peer.stop()


async def deliver(peer: Peer, focus: str) -> CMB:
    """A CMB from another author arriving at the peer (stored, then handed to the listener)."""
    author = NodeIdentity.generate("author-x")
    cmb = mint(
        {"focus": focus, "issue": "needs a second pair of eyes"},
        identity=author,
        group=peer.config.group,
        created_at=now_ms(),
    )
    peer.store.put(cmb, source="author-x")
    await peer.starter.on_cmb(cmb)
    return cmb


async def finished(client: Client, workflow_id: str) -> WakeResult:
    """The wake's result, once the listener has started it and it has ended."""
    handle = client.get_workflow_handle_for(WakeWorkflow.run, workflow_id)

    async def exists() -> bool:
        try:
            await handle.describe()
            return True
        except RPCError:
            return False

    await eventually(exists, timeout=30)
    return await handle.result()


async def test_list_replay_and_replayer_checks(temporal_env, tmp_path: Path):
    client = temporal_env.client
    gates = [{"name": "no-bananas", "pattern": "banana", "action": "block"}]
    async with gated_peer(client, "gate-a", gates) as peer:
        cmb = await deliver(peer, "banana bread recipe review")
        old_id = wake_id("gate-a", cmb.key)
        assert (await finished(client, old_id)).outcome == "suppressed-gate"

        # wakes: visibility is eventually consistent, poll until the closed wake is listed
        async def listed():
            result = await cli(temporal_env, "wakes", "--peer", "gate-a", "--json")
            rows = json.loads(result.stdout) if result.exit_code == 0 else []
            return rows if rows and rows[0]["outcome"] == "suppressed-gate" else None

        (row,) = await eventually(listed, timeout=30, interval=0.5)
        assert row["workflow_id"] == old_id and row["trigger_key"] == cmb.key
        assert row["cost_usd"] == 0.0 and row["trigger_author"] == "author-x" and row["status"] == "completed"
        none = await cli(temporal_env, "wakes", "--peer", "gate-a", "--outcome", "emitted", "--json")
        assert none.exit_code == 0 and json.loads(none.stdout) == []
        table = await cli(temporal_env, "wakes", "--peer", "gate-a", "--since", "1h")
        assert table.exit_code == 0 and cmb.key[5:17] in table.stdout and "suppressed-gate" in table.stdout
        assert "banana bread" in table.stdout and max(map(len, table.stdout.splitlines())) <= 100
        wide = await cli(temporal_env, "wakes", "--peer", "gate-a", "--wide")
        assert wide.exit_code == 0 and old_id in wide.stdout
        assert row["summary"].endswith("banana bread recipe review")
        typo = await cli(temporal_env, "wakes", "--outcome", "emited")
        assert (
            typo.exit_code == 2 and "did you mean emitted" in typo.output and "suppressed-gate" in typo.output
        )
        stage = await cli(temporal_env, "wakes", "--stage", "awaiting-aproval")
        assert stage.exit_code == 2 and "did you mean awaiting-approval" in stage.output
        future = await cli(temporal_env, "wakes", "--peer", "gate-a", "--since", "2999-01-01")
        assert "no wakes match" in future.stdout
        assert (await cli(temporal_env, "wakes", "--since", "yesterday-ish")).exit_code == 2

        # replay: a new workflow, linked to the old one, executed by the running peer
        replayed = await cli(temporal_env, "replay", old_id)
        assert replayed.exit_code == 0, replayed.output
        new_id = f"{old_id}-replay-1"
        assert new_id in replayed.stdout and "no worker polls" not in replayed.output
        assert not await has_worker(client, f"xmesh-{uuid.uuid4().hex}-nobody")
        assert (await finished(client, new_id)).outcome == "suppressed-gate"
        desc = await client.get_workflow_handle(new_id).describe()
        assert (await desc.memo())["replay_of"] == old_id
        history = await client.get_workflow_handle(new_id).fetch_history()
        (started,) = await client.data_converter.decode(
            history.events[0].workflow_execution_started_event_attributes.input.payloads, [WakeInput]
        )
        assert started.replay_of == old_id and started.cmb_key == cmb.key
        again = await cli(temporal_env, "replay", new_id)
        assert again.exit_code == 0 and f"{old_id}-replay-2" in again.stdout
        await finished(client, f"{old_id}-replay-2")

        # history: save it, the current code replays it cleanly
        saved = tmp_path / "wake.json"
        save = await cli(temporal_env, "replay", "--workflow-id", old_id, "--save", str(saved), "--check")
        assert save.exit_code == 0, save.output
        assert "replays cleanly" in save.output
        clean = await asyncio.to_thread(runner.invoke, app, ["replay", "--history", str(saved)])
        assert clean.exit_code == 0 and "replays cleanly" in clean.output
        exported = await cli(temporal_env, "wakes", "export", old_id)
        assert exported.exit_code == 0 and json.loads(exported.stdout)["events"]

        # a history whose recorded activity differs from what the code schedules: non-determinism
        data = json.loads(saved.read_text())
        for event in data["events"]:
            scheduled = event.get("activityTaskScheduledEventAttributes")
            if scheduled:
                scheduled["activityType"]["name"] = "call_model_v0"
        tampered = tmp_path / "tampered.json"
        tampered.write_text(json.dumps(data))
        bad = await asyncio.to_thread(runner.invoke, app, ["replay", "--history", str(tampered)])
        assert bad.exit_code == 1, bad.output
        assert "NON-DETERMINISM" in bad.output

        # and an incompatible change of the workflow code itself, against the real history
        report = await check_history(load_history(saved.read_text(), old_id), [ExtraStepWake])
        assert not report.ok and report.nondeterministic
        assert (await check_history(load_history(saved.read_text(), old_id))).ok

        # error paths
        unknown = await cli(temporal_env, "replay", "wake-nobody-cmb1-" + "0" * 64)
        assert unknown.exit_code == 1 and "no wake" in unknown.output
        assert (await cli(temporal_env, "wakes", "export", "no-such-wake")).exit_code == 1
        junk = tmp_path / "junk.json"
        junk.write_text("{not json")
        assert (
            await asyncio.to_thread(runner.invoke, app, ["replay", "--history", str(junk)])
        ).exit_code == 1
        assert (await asyncio.to_thread(runner.invoke, app, ["replay"])).exit_code == 2


@workflow.defn(name="WakeWorkflow", sandboxed=False)
class ExtraStepWake(WakeWorkflow):
    """The wake as a careless upgrade might change it: one more activity before admission."""

    @workflow.run
    async def run(self, wake: WakeInput) -> WakeResult:
        await workflow.execute_activity(
            "audit_trigger", wake.cmb_key, start_to_close_timeout=timedelta(seconds=5)
        )
        return await super().run(wake)


async def awaiting(client: Client, workflow_id: str) -> None:
    async def at_gate() -> bool:
        try:
            return await client.get_workflow_handle(workflow_id).query("stage") == "awaiting-approval"
        except Exception:  # noqa: BLE001 - not started yet
            return False

    await eventually(at_gate, timeout=30, interval=0.2)


async def test_approve_lets_a_gated_wake_emit(temporal_env):
    client = temporal_env.client
    gates = [{"name": "rocket", "pattern": "launch the rocket", "action": "approve"}]
    async with gated_peer(client, "gate-b", gates) as peer:
        cmb = await deliver(peer, "launch the rocket on friday")
        wid = wake_id("gate-b", cmb.key)
        await awaiting(client, wid)

        async def listed_waiting():
            result = await cli(
                temporal_env, "wakes", "--stage", "awaiting-approval", "--peer", "gate-b", "--json"
            )
            return result.exit_code == 0 and [r["workflow_id"] for r in json.loads(result.stdout)] == [wid]

        await eventually(listed_waiting, timeout=30, interval=0.5)
        approved = await cli(temporal_env, "approve", wid, "--by", "alice")
        assert approved.exit_code == 0, approved.output
        assert "approved" in approved.stdout
        result = await finished(client, wid)
        assert result.outcome == "emitted" and peer.store.has(result.emitted_key)
        late = await cli(temporal_env, "approve", wid)
        assert late.exit_code == 1
        assert "already finished" in late.output or "not awaiting approval" in late.output


async def test_deny_ends_a_gated_wake_denied(temporal_env):
    client = temporal_env.client
    gates = [{"name": "rocket", "pattern": "launch the rocket", "action": "approve"}]
    async with gated_peer(client, "gate-c", gates) as peer:
        cmb = await deliver(peer, "launch the rocket tonight")
        wid = wake_id("gate-c", cmb.key)
        await awaiting(client, wid)
        assert (await cli(temporal_env, "deny", wid)).exit_code == 2  # --reason is required
        denied = await cli(temporal_env, "deny", wid, "--reason", "not before the review")
        assert denied.exit_code == 0, denied.output
        result = await finished(client, wid)
        assert result.outcome == "denied" and result.reason == "not before the review"
        assert result.emitted_key is None


async def test_decisions_on_unknown_or_ungated_wakes_fail_clearly(temporal_env):
    client = temporal_env.client
    async with gated_peer(client, "gate-d", []) as peer:
        cmb = await deliver(peer, "tidy the changelog")
        wid = wake_id("gate-d", cmb.key)
        await finished(client, wid)
        done = await cli(temporal_env, "approve", wid)
        assert done.exit_code == 1 and "already finished" in done.output
    unknown = await cli(temporal_env, "deny", "wake-nobody-x", "--reason", "no")
    assert unknown.exit_code == 1 and "no wake" in unknown.output


async def test_approving_a_wake_not_at_a_gate_shows_the_validators_refusal(temporal_env):
    """While the model call is in flight the wake is running but not waiting: the update validator refuses."""
    client = temporal_env.client
    with FakeOllamaServer() as srv:
        reply = FakeOllamaServer.tool_call({"issue": "looks fine"})
        reply.delay = 8.0  # the approve below must land inside the call, even on a loaded machine
        srv.script(reply)
        group = f"t-{uuid.uuid4().hex[:8]}"
        model = {"adapter": "ollama", "base_url": srv.base_url}
        peer = await start_peer(client, peer_config("gate-e", "reviewer", group, model=model))
        try:
            cmb = await deliver(peer, "rename the config loader")
            await asyncio.to_thread(srv.wait_for_requests, 1, 20.0)
            early = await cli(temporal_env, "approve", wake_id("gate-e", cmb.key))
            assert early.exit_code == 1
            assert "not awaiting approval" in early.output
            assert (await finished(client, wake_id("gate-e", cmb.key))).outcome == "emitted"
        finally:
            await peer.stop()


def test_without_a_reachable_temporal_the_commands_say_so():
    no_server = runner.invoke(app, ["wakes"])
    assert no_server.exit_code == 1 and "embedded Temporal server is not running" in no_server.output
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    refused = runner.invoke(app, ["approve", "wake-x", "--temporal-address", f"127.0.0.1:{closed}"])
    assert refused.exit_code == 1 and f"cannot reach Temporal at 127.0.0.1:{closed}" in refused.output
