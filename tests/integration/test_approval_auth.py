"""Only a peer's operator decides its held wakes (issue 22 item 3).

The embedded dev server has no authentication: any uid on the machine can reach it with the `temporal`
CLI. The attacker here is really another uid (`nobody`, through setpriv), running the real `temporal`
binary against the server a real peer works on, and it tries to approve a `git push` reply held at an
approval gate. The wake must refuse it and keep waiting; the operator's `xmesh-agent approve` (a real
CLI process, which signs with the peer's key) then lets it emit.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from tests.fakes.model_servers import FakeOpenAIServer
from tests.integration.envelope_kit import deliver, group_name, openai_config, result_of, trigger
from tests.integration.peer_kit import eventually, start_peer
from xmesh_agent.clock import now_ms
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.wake import approval
from xmesh_agent.wake.payloads import ApprovalDecision, Outcome
from xmesh_agent.workers.devserver import temporal_binary

ROOT = Path(__file__).resolve().parents[2]
NOBODY = "65534"
PUSH = {"focus": "release of the rate limiter", "intent": "git push origin main"}


def _needs_a_second_uid() -> None:
    if os.geteuid() != 0:
        pytest.skip("running the attacker as another uid (nobody) needs root")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed: cannot run the attacker as another uid")


def as_nobody(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """`argv` run as uid/gid 65534 with no supplementary groups and a home it owns nothing in."""
    cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--", *argv]
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


async def temporal_update(address: str, workflow_id: str, payload: dict) -> subprocess.CompletedProcess:
    """The attack: `temporal workflow update execute --name decide` from the other uid."""
    argv = [
        str(temporal_binary()),
        "workflow",
        "update",
        "execute",
        "--address",
        address,
        "--workflow-id",
        workflow_id,
        "--name",
        "decide",
        "--input",
        json.dumps(payload),
    ]
    return await asyncio.to_thread(as_nobody, *argv)


async def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`xmesh-agent <args>` as its own process, as the operator (this uid, this XMESH_HOME)."""
    cmd = [sys.executable, "-m", "xmesh_agent.cli.app", *args]
    return await asyncio.to_thread(
        subprocess.run, cmd, capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )


async def xmesh(address: str, *args: str) -> subprocess.CompletedProcess:
    """A Temporal command of `xmesh-agent` (wakes, approve, deny) against the server at `address`."""
    return await run_cli(*args, "--temporal-address", address)


async def stage(client: Client, workflow_id: str) -> str:
    return await client.get_workflow_handle(workflow_id).query("stage")


async def held(client: Client, workflow_id: str) -> None:
    async def waiting() -> bool:
        try:
            return await stage(client, workflow_id) == "awaiting-approval"
        except Exception:  # noqa: BLE001 - not started yet
            return False

    await eventually(waiting, timeout=30, interval=0.1)


async def signed_decision_in(client: Client, workflow_id: str) -> dict:
    """The operator's signed decision as the wake's history shows it to anyone who can read it."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    for event in history.events:
        if event.HasField("workflow_execution_update_accepted_event_attributes"):
            args = event.workflow_execution_update_accepted_event_attributes.accepted_request.input.args
            (decision,) = await client.data_converter.decode(args.payloads, [ApprovalDecision])
            return decision.model_dump()
    raise AssertionError(f"no accepted update in {workflow_id}")


async def test_another_uid_cannot_decide_a_held_git_push(temporal_env):
    _needs_a_second_uid()
    assert as_nobody("id", "-u").stdout.strip() == NOBODY
    client = temporal_env.client
    address = client.service_client.config.target_host
    group = group_name()
    author = NodeIdentity.generate("author-x")
    with FakeOpenAIServer() as fake:
        push = fake.tool_call(PUSH)
        fake.script(push, push)
        safety = {"approval_gates": "approve", "approval_timeout_seconds": 600}
        peer = await start_peer(client, openai_config("gatekept-p", group, fake.base_url, safety=safety))
        try:
            first = await deliver(peer, trigger(author, group, 0))
            second = await deliver(peer, trigger(author, group, 1))
            await held(client, first)
            await held(client, second)

            # what the Temporal CLI sends by default: an unsigned decision
            unsigned = await temporal_update(address, first, {"approved": True, "by": "mallory"})
            assert unsigned.returncode != 0, f"another uid approved the wake: {unsigned.stdout}"
            assert "only the operator of peer gatekept-p" in unsigned.stderr, (
                unsigned.stdout + unsigned.stderr
            )
            assert "not signed" in unsigned.stderr

            # signed, but with the attacker's own key
            info = await client.get_workflow_handle(first).describe()
            mallory = NodeIdentity.generate("gatekept-p")
            forged = approval.sign(
                mallory, first, info.run_id, approved=True, by="gatekept-p", reason="", now_ms=now_ms()
            )
            bad = await temporal_update(address, first, forged.model_dump())
            assert bad.returncode != 0 and "does not verify with gatekept-p's key" in bad.stderr, bad.stderr
            assert await stage(client, first) == "awaiting-approval"
            assert peer.store.recent_by_author("gatekept-p", 5) == []
            history = await client.get_workflow_handle(first).fetch_history()
            assert not [e for e in history.events if "UPDATE" in EventType.Name(e.event_type)]

            # the operator, through the real CLI, by a prefix of the trigger key
            key = first.rsplit("-", 1)[1]
            approved = await xmesh(address, "approve", key[:10], "--by", "alice")
            assert approved.returncode == 0, approved.stdout + approved.stderr
            assert f"{first}: approved" in approved.stdout
            assert (await result_of(client, first)).outcome == Outcome.EMITTED

            # the operator's signature, read from the first wake's history, replayed on the second
            replayed = await temporal_update(address, second, await signed_decision_in(client, first))
            assert replayed.returncode != 0 and "does not verify" in replayed.stderr, replayed.stderr
            assert await stage(client, second) == "awaiting-approval"

            denied = await xmesh(address, "deny", "--peer", "gatekept-p", "--reason", "not on a Friday")
            assert denied.returncode == 0, denied.stdout + denied.stderr
            result = await result_of(client, second)
            assert result.outcome == Outcome.DENIED and result.reason == "not on a Friday"
            assert len(peer.store.recent_by_author("gatekept-p", 5)) == 1
        finally:
            await peer.stop()
