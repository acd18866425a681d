"""Looking at wakes from outside a peer: list them from Temporal visibility, export a history, decide.

Every wake is a `WakeWorkflow` tagged with our search attributes, so an operator needs no peer
process to see what happened: visibility answers "which wakes, why did they end like that".
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from temporalio.client import Client, WorkflowExecution
from temporalio.service import RPCError, RPCStatusCode

from xmesh_agent.durations import parse_since as since_time
from xmesh_agent.workflows import search

WORKFLOW_TYPE = "WakeWorkflow"
_KEY_IN_ID = re.compile(r"(cmb1-[0-9a-f]{64})")
_QUOTE_SAFE = re.compile(r"^[A-Za-z0-9_.:+-]{1,128}$")


class InspectError(Exception):
    """A request about wakes that cannot be answered; the message says why in the user's terms."""


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`--since` (`durations.parse_since`), as this module's error."""
    try:
        return since_time(text, now)
    except ValueError as exc:
        raise InspectError(str(exc)) from None


def _quoted(name: str, value: str) -> str:
    if not _QUOTE_SAFE.fullmatch(value):
        raise InspectError(f"{name} {value!r}: only letters, digits and . _ - : + are allowed")
    return f"'{value}'"


def wake_query(
    peer: str | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    group: str | None = None,
    stage: str | None = None,
) -> str:
    """The visibility query for wakes matching the filters (all wakes when none is given)."""
    parts = [f"WorkflowType = '{WORKFLOW_TYPE}'"]
    if peer:
        parts.append(f"{search.PEER.name} = {_quoted('--peer', peer)}")
    if group:
        parts.append(f"{search.GROUP.name} = {_quoted('--group', group)}")
    if outcome:
        parts.append(f"{search.OUTCOME.name} = {_quoted('--outcome', outcome)}")
    if stage:
        parts.append(f"{search.STAGE.name} = {_quoted('--stage', stage)}")
    if since:
        parts.append(f"StartTime > '{since.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}'")
    return " AND ".join(parts)


def trigger_from_id(workflow_id: str) -> str | None:
    """The trigger CMB key inside a wake id `wake-<peer>-<cmb key>[-replay-<n>]`."""
    match = _KEY_IN_ID.search(workflow_id)
    return match.group(1) if match else None


@dataclass
class WakeRow:
    """One wake as `xmesh-agent wakes` shows it."""

    workflow_id: str
    peer: str | None
    group: str | None
    trigger_author: str | None
    trigger_key: str | None
    outcome: str | None
    stage: str | None
    status: str
    tokens: int | None
    cost_usd: float | None
    start_time: str | None
    replay_of: str | None
    summary: str | None = None
    reason: str | None = None
    held: dict | None = None
    """A wake held at an approval gate: rule, reason and the reply it would emit (secret shapes masked)."""

    def as_json(self) -> dict:
        return asdict(self)


async def _summary(client: Client, workflow_id: str) -> str | None:
    """The wake's one-line summary ("peer <- author: topic") of a wake started without it in its memo."""
    try:
        return await (await client.get_workflow_handle(workflow_id).describe()).static_summary()
    except (RPCError, ValueError):
        return None


async def _row(wf: WorkflowExecution, client: Client | None = None) -> WakeRow:
    attrs = wf.typed_search_attributes
    try:
        memo = await wf.memo()
    except Exception:  # noqa: BLE001 - a memo we cannot decode only costs us the trigger column
        memo = {}
    result = memo.get("result") if isinstance(memo.get("result"), dict) else {}
    cost = attrs.get(search.COST)
    if cost is None and result:
        cost = result.get("cost_usd")
    return WakeRow(
        workflow_id=wf.id,
        peer=attrs.get(search.PEER),
        group=attrs.get(search.GROUP),
        trigger_author=attrs.get(search.TRIGGER_AUTHOR),
        trigger_key=(memo.get("trigger") or None) or trigger_from_id(wf.id),
        outcome=attrs.get(search.OUTCOME),
        stage=attrs.get(search.STAGE),
        status=wf.status.name.lower() if wf.status else "unknown",
        tokens=attrs.get(search.TOKENS),
        cost_usd=cost,
        start_time=wf.start_time.astimezone(UTC).isoformat(timespec="seconds") if wf.start_time else None,
        replay_of=memo.get("replay_of") or None,
        summary=memo.get("summary") or (await _summary(client, wf.id) if client else None),
        reason=result.get("reason") or None,
        held=memo.get("held") if isinstance(memo.get("held"), dict) else None,
    )


async def list_wakes(client: Client, query: str, limit: int | None = 50) -> list[WakeRow]:
    """Wakes matching a visibility query, newest first."""
    try:
        found = [wf async for wf in client.list_workflows(query, limit=limit)]
        return list(await asyncio.gather(*(_row(wf, client) for wf in found)))
    except RPCError as exc:
        raise InspectError(f"Temporal rejected the wake query ({exc.message})") from None


async def export_history(client: Client, workflow_id: str, decoded: bool = False) -> str:
    """The wake's full event history as Temporal's JSON (what `replay --history` reads back); `decoded`:
    every JSON payload decoded in place (workers/history_json.py), which `replay --history` reads too."""
    from xmesh_agent.workers.history_json import readable

    try:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
    except RPCError as exc:
        raise rpc_error(workflow_id, exc) from None
    return readable(history.to_json()) if decoded else history.to_json()


def rpc_error(workflow_id: str, exc: RPCError) -> InspectError:
    if exc.status == RPCStatusCode.NOT_FOUND:
        return InspectError(f"no wake {workflow_id!r} (see `xmesh-agent wakes` for ids)")
    return InspectError(f"Temporal: {exc.message}")
