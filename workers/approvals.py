"""The approval inbox: which wakes wait at a gate, which one an operator means, and the signed decision.

A wake is named by its whole workflow id, a unique prefix of it or of its trigger key, or by its peer
(`--peer NAME`: the one wake it holds, or `--all` of them). The decision is signed with that peer's
identity key (xmesh_agent.wake.approval), so only a user who can read the key decides.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.service import RPCError, RPCStatusCode

from xmesh_agent.identity import key_paths, load_identity
from xmesh_agent.wake import approval
from xmesh_agent.workers.inspect import WORKFLOW_TYPE, InspectError, _quoted, rpc_error, trigger_from_id
from xmesh_agent.workers.replay import has_worker
from xmesh_agent.workflows import search

PROBE_TIMEOUT = timedelta(seconds=5)
"""A running peer answers the wake's `stage` query in milliseconds; no answer: its worker is gone."""
DECIDE_TIMEOUT = timedelta(seconds=20)
"""How long `approve`/`deny` wait for the peer's worker to take the decision (it runs the validator)."""
WAITING = f"WorkflowType = '{WORKFLOW_TYPE}' AND {search.STAGE.name} = 'awaiting-approval' AND ExecutionStatus = 'Running'"


class Ambiguous(InspectError):
    """More than one waiting wake fits; `candidates` lists them."""

    def __init__(self, message: str, candidates: list[HeldWake]) -> None:
        super().__init__(message)
        self.candidates = candidates


@dataclass
class HeldWake:
    workflow_id: str
    run_id: str
    peer: str
    started: str | None
    task_queue: str = ""
    running: bool = True
    held: dict[str, Any] = field(default_factory=dict)
    """What the wake holds (memo `held`): rule, reason, reply fields. Empty for wakes held by older code."""

    def as_json(self) -> dict[str, Any]:
        return {
            "workflow_id": self.workflow_id,
            "run_id": self.run_id,
            "peer": self.peer,
            "started": self.started,
            "rule": self.held.get("rule"),
            "reason": self.held.get("reason"),
            "reply": self.held.get("reply"),
        }


async def _held(wf: WorkflowExecution) -> HeldWake:
    try:
        memo = await wf.memo()
    except Exception:  # noqa: BLE001 - an undecodable memo only costs the reply
        memo = {}
    held = memo.get("held") if isinstance(memo.get("held"), dict) else {}
    return HeldWake(
        workflow_id=wf.id,
        run_id=wf.run_id,
        peer=wf.typed_search_attributes.get(search.PEER) or "",
        started=wf.start_time.astimezone(UTC).isoformat(timespec="seconds") if wf.start_time else None,
        task_queue=wf.task_queue,
        running=wf.status == WorkflowExecutionStatus.RUNNING,
        held=held,
    )


async def waiting(client: Client, peer: str | None = None) -> list[HeldWake]:
    """Wakes waiting at an approval gate now (of one peer, or all), oldest first."""
    query = WAITING + (f" AND {search.PEER.name} = {_quoted('--peer', peer)}" if peer else "")
    try:
        found = [await _held(wf) async for wf in client.list_workflows(query)]
    except RPCError as exc:
        raise InspectError(f"Temporal rejected the approval query ({exc.message})") from None
    return sorted(found, key=lambda w: w.started or "")


def _fits(wake: HeldWake, ref: str) -> bool:
    key = trigger_from_id(wake.workflow_id) or ""
    return (
        wake.workflow_id.startswith(ref) or key.startswith(ref) or key.removeprefix("cmb1-").startswith(ref)
    )


async def _exact(client: Client, workflow_id: str) -> HeldWake | None:
    try:
        desc = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise rpc_error(workflow_id, exc) from None
    return await _held(desc)


async def resolve(client: Client, ref: str | None, peer: str | None, every: bool) -> list[HeldWake]:
    """The wakes an operator means by `ref` (id or prefix) and/or `--peer`; `every`: all that fit."""
    if ref:
        exact = await _exact(client, ref)
        if exact is not None and (peer is None or exact.peer == peer):
            return [exact]
    if not ref and not peer:
        raise InspectError("name the wake (its id or a unique prefix) or its peer (--peer NAME)")
    fits = [w for w in await waiting(client, peer) if ref is None or _fits(w, ref)]
    what = " and ".join(p for p in (f"{ref!r}" if ref else "", f"peer {peer}" if peer else "") if p)
    if not fits:
        raise InspectError(
            f"no wake awaiting approval matches {what} (`xmesh-agent wakes --stage awaiting-approval` lists them)"
        )
    if len(fits) > 1 and not every:
        raise Ambiguous(f"{len(fits)} wakes awaiting approval match {what}: name one, or pass --all", fits)
    return fits


def _signer(peer: str):  # noqa: ANN202 - NodeIdentity
    key_file = key_paths(peer)[0]
    try:
        identity = load_identity(peer)
    except PermissionError:
        identity = None
    except (OSError, ValueError) as exc:
        raise InspectError(f"cannot read {peer}'s key at {key_file}: {exc}") from None
    if identity is None:
        raise InspectError(
            f"cannot sign for peer {peer!r}: its key {key_file} is not readable here. Only its operator "
            "(the user who runs it, with its key) can approve or deny its wakes"
        )
    return identity


async def decide(client: Client, wake: HeldWake, *, approved: bool, by: str, reason: str) -> str:
    """Sign the operator's decision with the wake's peer's key and send it; returns the wake's answer."""
    if not wake.peer:
        raise InspectError(f"{wake.workflow_id}: not a wake (no XmPeer attribute)")
    decision = approval.sign(
        _signer(wake.peer),
        wake.workflow_id,
        wake.run_id,
        approved=approved,
        by=by,
        reason=reason,
        now_ms=int(time.time() * 1000),
    )
    stopped = (
        f"{wake.workflow_id}: peer {wake.peer} is not running, and only its worker can take the decision; "
        f"the wake stays held: start the peer (`xmesh-agent run --config …`) and decide then"
    )
    if not wake.running:
        raise InspectError(f"{wake.workflow_id}: this wake has already finished")
    if wake.task_queue and not await has_worker(client, wake.task_queue):
        raise InspectError(stopped)
    handle = client.get_workflow_handle(wake.workflow_id, run_id=wake.run_id)
    try:  # before the update: one sent to a stopped peer would wait in Temporal and land when it returns
        await handle.query("stage", rpc_timeout=PROBE_TIMEOUT)
    except WorkflowQueryFailedError:
        pass  # a worker answered: the peer runs; the update says what the wake thinks of the decision
    except RPCError as exc:
        if exc.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
            raise InspectError(stopped) from None
        raise rpc_error(wake.workflow_id, exc) from None
    try:
        return await handle.execute_update("decide", decision, result_type=str, rpc_timeout=DECIDE_TIMEOUT)
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        raise InspectError(
            f"{wake.workflow_id}: peer {wake.peer} did not take the decision within {DECIDE_TIMEOUT.seconds} s; "
            "it waits in Temporal and is taken if the peer answers within 10 minutes of signing"
        ) from None
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        message = getattr(cause, "message", None) or str(cause or exc)
        raise InspectError(f"{wake.workflow_id}: {message}") from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND and "completed" in exc.message.lower():
            raise InspectError(f"{wake.workflow_id}: this wake has already finished") from None
        raise rpc_error(wake.workflow_id, exc) from None
