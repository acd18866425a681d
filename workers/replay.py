"""Replays of two kinds.

- `replay_wake`: re-run a failed or suppressed wake from its trigger CMB as a NEW workflow
  `<old>-replay-<n>` linked to the old one (memo `replay_of`), on the old wake's task queue, so the
  running peer picks it up. The old history stays as it was: nothing is rewritten.
- `check_history`: run the CURRENT workflow code against a recorded history with Temporal's Replayer.
  A wake that replays cleanly can be resumed by the new code after an upgrade; one that does not
  would get stuck in a non-determinism loop, so we find out before deploying.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowHistory,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.service import RPCError
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from xmesh_agent.wake.payloads import Outcome, WakeInput
from xmesh_agent.workers.client import XMESH_PLUGIN
from xmesh_agent.workers.inspect import InspectError, rpc_error, trigger_from_id
from xmesh_agent.workflows import search
from xmesh_agent.workflows.wake import WakeWorkflow

MAX_REPLAYS = 100
_REPLAY_SUFFIX = re.compile(r"-replay-\d+$")
_CORE_REASON = re.compile(r"Nondeterminism error: ([^\"]+)")


def replay_root(workflow_id: str) -> str:
    """The wake a chain of replays started from: `wake-p-k-replay-2` -> `wake-p-k`."""
    return _REPLAY_SUFFIX.sub("", workflow_id)


async def _started_input(client: Client, handle: WorkflowHandle) -> tuple[WakeInput, str]:
    """The old wake's input and task queue, read from its first history event."""
    async for event in handle.fetch_history_events():
        attrs = event.workflow_execution_started_event_attributes
        payloads = list(attrs.input.payloads)
        if not payloads:
            break
        (wake,) = await client.data_converter.decode(payloads, [WakeInput])
        return wake, attrs.task_queue.name
    raise InspectError(f"{handle.id}: its history has no start event with a wake input")


async def replay_wake(client: Client, workflow_id: str, *, force: bool = False) -> WorkflowHandle:
    """Start `<root>-replay-<n>` with the old wake's input plus `replay_of`; returns the new handle.

    Refuses a wake still running, and (unless `force`) one that already emitted: replaying it would
    answer the same CMB twice on the mesh.
    """
    handle = client.get_workflow_handle(workflow_id)
    try:
        desc = await handle.describe()
        wake, queue = await _started_input(client, handle)
    except RPCError as exc:
        raise rpc_error(workflow_id, exc) from None
    if desc.status == WorkflowExecutionStatus.RUNNING:
        raise InspectError(f"{workflow_id} is still running; replay re-runs finished wakes")
    memo = await desc.memo()
    result = memo.get("result") if isinstance(memo.get("result"), dict) else {}
    if result.get("outcome") == Outcome.EMITTED.value and not force:
        raise InspectError(
            f"{workflow_id} already emitted {result.get('emitted_key')}; replaying it would answer the "
            "same CMB twice (add --force if that is what you want)"
        )
    attrs = desc.typed_search_attributes
    pairs = [SearchAttributePair(search.STAGE, "queued")]
    for key, fallback in ((search.PEER, wake.peer), (search.GROUP, wake.group)):
        pairs.append(SearchAttributePair(key, attrs.get(key) or fallback))
    pairs.append(
        SearchAttributePair(search.TRIGGER_AUTHOR, attrs.get(search.TRIGGER_AUTHOR) or wake.trigger_author)
    )
    # a replay decides admission again in its own admit step (the config may have changed since)
    replay_input = wake.model_copy(update={"replay_of": workflow_id, "rejected": None})
    summary = f"replay of {workflow_id}"
    root = replay_root(workflow_id)
    for n in range(1, MAX_REPLAYS + 1):
        try:
            return await client.start_workflow(
                WakeWorkflow.run,
                replay_input,
                id=f"{root}-replay-{n}",
                task_queue=queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                execution_timeout=timedelta(seconds=wake.approval_timeout_seconds + 3600),
                search_attributes=TypedSearchAttributes(pairs),
                static_summary=summary,
                memo={
                    "trigger": wake.cmb_key or trigger_from_id(workflow_id) or "",
                    "replay_of": workflow_id,
                },
            )
        except WorkflowAlreadyStartedError:
            continue
    raise InspectError(f"{root} has been replayed {MAX_REPLAYS} times already; no more replay ids")


async def has_worker(client: Client, queue: str) -> bool:
    """Whether any worker polls `queue` for workflow tasks (i.e. the wake's peer is running)."""
    request = DescribeTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    )
    try:
        response = await client.workflow_service.describe_task_queue(request)
    except RPCError:
        return False
    return bool(response.pollers)


@dataclass(frozen=True)
class ReplayCheck:
    """What the Replayer said about one history."""

    ok: bool
    nondeterministic: bool
    message: str


_RUNTIME: Runtime | None = None


def _quiet_runtime() -> Runtime:
    """A runtime whose core logs only errors: the report says what diverged, without the core's warnings."""
    global _RUNTIME
    if _RUNTIME is None:
        quiet = TelemetryFilter(core_level="ERROR", other_level="ERROR")
        _RUNTIME = Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(filter=quiet)))
    return _RUNTIME


def load_history(text: str, workflow_id: str = "recorded-wake") -> WorkflowHistory:
    """A history from Temporal's JSON (`replay --save`, `temporal workflow show -o json`) or the readable
    JSON of `wakes export` (its decoded payloads are encoded back first)."""
    from xmesh_agent.workers.history_json import replayable

    try:
        return WorkflowHistory.from_json(workflow_id, replayable(text))
    except Exception as exc:  # noqa: BLE001 - protobuf/json raise many kinds; all mean "not a history"
        raise InspectError(f"not a Temporal workflow history in JSON: {exc}") from None


async def check_history(history: WorkflowHistory, workflows: Sequence[type] = (WakeWorkflow,)) -> ReplayCheck:
    """Replay `history` against `workflows` (the current code by default) and say whether it diverged."""
    if not history.events:
        return ReplayCheck(False, False, "the history has no events")
    replayer = Replayer(workflows=list(workflows), plugins=[XMESH_PLUGIN], runtime=_quiet_runtime())
    try:
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    except Exception as exc:  # noqa: BLE001 - a malformed history must be a report, not a crash
        return ReplayCheck(False, False, f"the Replayer could not run this history: {exc}")
    failure = result.replay_failure
    if failure is None:
        return ReplayCheck(
            True, False, f"{history.workflow_id}: replays cleanly ({len(history.events)} events)"
        )
    if isinstance(failure, NondeterminismError):
        found = _CORE_REASON.search(str(failure))
        return ReplayCheck(
            False,
            True,
            f"{history.workflow_id}: NON-DETERMINISM — the current workflow code does not match the "
            f"recorded history: {found.group(1) if found else failure}",
        )
    return ReplayCheck(False, False, f"{history.workflow_id}: replay failed: {failure}")
