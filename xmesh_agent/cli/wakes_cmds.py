"""`wakes`, `replay`: an operator's view of wakes through Temporal (`approve`/`deny`: approval_cmds).

None of these need the peer's process except to execute a replay or finish an approved wake: they
talk to Temporal (visibility, histories, workflow updates), where every wake is recorded.
"""

from __future__ import annotations

import asyncio
import difflib
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import typer

from xmesh_agent.cli import common
from xmesh_agent.cli.common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, TemporalOption, fail, print_json

T = TypeVar("T")

wakes_app = typer.Typer(
    help="List wakes from Temporal visibility (newest first), or export one wake's history.\n\n"
    "Every inbound CMB a peer admits becomes one wake workflow; this shows how each ended.\n\n"
    "Examples: `xmesh-agent wakes --peer reviewer-01 --since 1h`, "
    "`xmesh-agent wakes --outcome suppressed-gate --json`, `xmesh-agent wakes --stage awaiting-approval`, `xmesh-agent wakes export <id> > h.json`.",
    invoke_without_command=True,
    no_args_is_help=False,
)


def _run(temporal_address: str | None, action: Callable[..., Awaitable[T]]) -> T:
    """Connect (flag, TEMPORAL_ADDRESS, else the running embedded server) and run `action(client)`."""
    from xmesh_agent.workers.client import TemporalTarget, TemporalUnreachable, connect, external_target
    from xmesh_agent.workers.devserver import running_server
    from xmesh_agent.workers.inspect import InspectError

    target = external_target(temporal_address)
    if target is None:
        info = running_server()
        if info is None:
            fail(
                "the embedded Temporal server is not running (start a peer with `xmesh-agent run`, or "
                "`xmesh-agent server`), or pass --temporal-address"
            )
        target = TemporalTarget(address=info.address)

    async def go() -> T:
        common.skip_finalization = True
        try:
            client = await connect(target)
        except TemporalUnreachable as exc:
            fail(str(exc))
        except RuntimeError as exc:
            why = re.search(r'message: "([^"]+)"', str(exc))
            fail(f"cannot reach Temporal at {target.address} ({why.group(1) if why else exc})")
        return await action(client)

    try:
        return asyncio.run(go())
    except InspectError as exc:
        fail(str(exc))


TABLE_WIDTH = 100
NAME_WIDTH = 14


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def short_id(row) -> str:  # noqa: ANN001 - workers.inspect.WakeRow
    """The trigger key's first 12 hex digits (and `rN` for a replay): with the peer, names the wake."""
    key = row.trigger_key or row.workflow_id
    replay = re.search(r"-replay-(\d+)$", row.workflow_id)
    return key.removeprefix("cmb1-")[:12] + (f" r{replay.group(1)}" if replay else "")


def _topic(row) -> str:  # noqa: ANN001 - workers.inspect.WakeRow
    """The wake's summary without the `peer <- author: ` its own columns show, else how it ended."""
    text = row.summary or ""
    head = f"{row.peer} <- {row.trigger_author}: "
    return (text[len(head) :] if text.startswith(head) else text) or row.reason or ""


def _ended(row) -> str:  # noqa: ANN001 - workers.inspect.WakeRow
    if row.outcome:
        return row.outcome
    return row.stage if row.status == "running" and row.stage else row.status


def _started(row) -> str:  # noqa: ANN001 - workers.inspect.WakeRow
    when = row.start_time or "?"
    return (
        when[11:19] if when[:10] == datetime.now(UTC).strftime("%Y-%m-%d") else when[5:16].replace("T", " ")
    )


def _table(rows: list, wide: bool) -> None:
    """At most 100 columns (the summary is cut with an ellipsis); --wide: full ids and every column."""
    if wide:
        headers = [
            "WORKFLOW ID",
            "PEER",
            "FROM",
            "OUTCOME",
            "STAGE",
            "STATUS",
            "TOKENS",
            "COST",
            "STARTED",
            "SUMMARY",
        ]
        lines = [
            [
                r.workflow_id,
                r.peer or "?",
                r.trigger_author or "?",
                r.outcome or "-",
                r.stage or "-",
                r.status,
                "-" if r.tokens is None else str(r.tokens),
                "-" if r.cost_usd is None else f"${r.cost_usd:.6f}",
                r.start_time or "?",
                _topic(r),
            ]
            for r in rows
        ]
    else:
        headers = ["TRIGGER", "PEER", "FROM", "OUTCOME", "COST", "STARTED", "SUMMARY"]
        lines = [
            [
                short_id(r),
                _cut(r.peer or "?", NAME_WIDTH),
                _cut(r.trigger_author or "?", NAME_WIDTH),
                _ended(r),
                "-" if r.cost_usd is None else f"${r.cost_usd:.4f}",
                _started(r),
                _topic(r),
            ]
            for r in rows
        ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    if not wide:
        widths[-1] = max(TABLE_WIDTH - sum(widths[:-1]) - 2 * (len(widths) - 1), len(headers[-1]))
        for line in lines:
            line[-1] = _cut(line[-1], widths[-1])
    for line in [headers, *lines]:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    if not wide:
        typer.echo("(times UTC; full workflow ids: --wide or --json)")


# XmStage values: where a wake waits (queued, model, awaiting-approval), then done; histories from before
# the lean stage upserts also show the quick steps in between.
STAGES = ("queued", "admission", "reserve", "context", "model", "safety", "emit", "awaiting-approval", "done")


def _one_of(option: str, value: str | None, valid: list[str]) -> None:
    """A filter value that matches nothing by construction is a usage error that names the valid ones."""
    if value is None or value in valid:
        return
    close = difflib.get_close_matches(value, valid, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    fail(f"{option} {value!r} is not one of them; {hint}valid: {', '.join(valid)}", EXIT_USAGE)


@wakes_app.callback()
def wakes(
    ctx: typer.Context,
    peer: str | None = typer.Option(None, "--peer", "-p", help="Only this peer's wakes."),
    outcome: str | None = typer.Option(
        None, "--outcome", "-o", help="Only wakes that ended so: emitted, suppressed-gate, denied, failed, …"
    ),
    since: str | None = typer.Option(
        None,
        "--since",
        "-s",
        help="Only wakes started after: a duration (30m, 1h, 2d) or a date (2026-11-25).",
    ),
    stage: str | None = typer.Option(
        None,
        "--stage",
        help="Only wakes at this stage: awaiting-approval (they wait for approve/deny), model, …",
    ),
    limit: int = typer.Option(50, "--limit", "-n", min=1, help="At most this many wakes."),
    wide: bool = typer.Option(False, "--wide", "-w", help="Full workflow ids, stage, status and tokens."),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="A JSON list (workflow_id, outcome, trigger_key, held: what a held wake holds, …).",
    ),
    temporal_address: str | None = TemporalOption,
) -> None:
    """List wakes, newest first, in 100 columns: the trigger CMB (its key's first 12 hex digits), peer,
    trigger author, outcome, cost, start time (UTC) and summary; --wide adds full ids, stage, status, tokens."""
    if ctx.invoked_subcommand is not None:
        return
    from xmesh_agent.wake.payloads import Outcome
    from xmesh_agent.workers.inspect import InspectError, list_wakes, parse_since, wake_query

    _one_of("--outcome", outcome, [o.value for o in Outcome])
    _one_of("--stage", stage, list(STAGES))

    try:
        query = wake_query(peer, outcome, parse_since(since) if since else None, stage=stage)
    except InspectError as exc:
        fail(str(exc), EXIT_USAGE)
    rows = _run(temporal_address, lambda client: list_wakes(client, query, limit))
    if as_json:
        print_json([r.as_json() for r in rows])
    elif not rows:
        typer.echo("no wakes match (peers wake on admitted CMBs; `xmesh-agent demo` shows some)")
    else:
        _table(rows, wide)
        _held_inbox(rows)
    raise typer.Exit(EXIT_OK)


def _held_inbox(rows: list) -> None:
    """Under the table: every listed wake still waiting at a gate, with its reply and how to decide it."""
    from xmesh_agent.wake.approval import inbox_lines

    held = [r for r in rows if r.stage == "awaiting-approval" and r.status == "running"]
    if not held:
        return
    typer.echo(f"\n{len(held)} wake(s) await approval:")
    wakes = [
        {**(r.held or {"reply": None}), "workflow_id": r.workflow_id, "peer": r.peer, "started": r.start_time}
        for r in held
    ]
    typer.echo("\n".join(inbox_lines(wakes)))


@wakes_app.command("export")
def export(
    workflow_id: str = typer.Argument(..., help="The wake's workflow id (from `xmesh-agent wakes`)."),
    raw: bool = typer.Option(False, "--raw", help="Temporal's own JSON: payloads as base64."),
    temporal_address: str | None = TemporalOption,
) -> None:
    """Print one wake's full event history as JSON, to read or to keep for `replay --history FILE`.

    Every payload (the trigger, the model's reply, verdicts, decisions, memo) is decoded in place as
    `{"metadata": {"encoding": "json/plain"}, "json": …}`; `--raw` keeps Temporal's base64 form.

    Example: `xmesh-agent wakes export wake-reviewer-01-cmb1-… > wake.json`.
    """
    from xmesh_agent.workers.inspect import export_history

    typer.echo(_run(temporal_address, lambda client: export_history(client, workflow_id, decoded=not raw)))


def replay(
    workflow_id: str | None = typer.Argument(None, help="The wake to re-run (a failed or suppressed one)."),
    history: Path | None = typer.Option(
        None, "--history", help="Check this recorded history (JSON) against the current workflow code."
    ),
    check_id: str | None = typer.Option(
        None, "--workflow-id", help="Fetch this wake's history from Temporal (with --check and/or --save)."
    ),
    check: bool = typer.Option(False, "--check", help="Replay the history against the current code."),
    save: Path | None = typer.Option(None, "--save", help="Write the fetched history to this file."),
    force: bool = typer.Option(False, "--force", help="Replay even a wake that already emitted."),
    temporal_address: str | None = TemporalOption,
) -> None:
    """Re-run a wake as a new linked workflow, or check recorded histories for non-determinism.

    `replay <id>` re-runs a failed or suppressed wake from its trigger CMB as `<id>-replay-<n>`.

    The new wake's memo names the old one (replay_of); the running peer's worker executes it.

    `replay --history FILE` or `replay --workflow-id ID --check` replays recorded events on the CURRENT code.

    That is what a worker does after an upgrade: exit 0 "replays cleanly", exit 1 on non-determinism.

    Examples: `xmesh-agent replay wake-reviewer-01-cmb1-…`, `xmesh-agent replay --history wake.json`,
    `xmesh-agent replay --workflow-id wake-… --save wake.json`.
    """
    from xmesh_agent.workers.inspect import export_history
    from xmesh_agent.workers.replay import check_history, has_worker, load_history, replay_wake

    if history is not None:
        if workflow_id or check_id:
            fail("--history checks a file; do not also give a workflow id", EXIT_USAGE)
        try:
            text = history.read_text()
        except OSError as exc:
            fail(f"cannot read {history}: {exc.strerror}", EXIT_USAGE)
        _report(asyncio.run(_check_text(text, history.stem, check_history, load_history)))
    target_id = check_id or workflow_id
    if target_id is None:
        fail("give a workflow id to replay, or --history FILE / --workflow-id ID --check", EXIT_USAGE)
    if check_id or check or save:
        text = _run(temporal_address, lambda client: export_history(client, target_id))
        if save:
            save.write_text(text)
            typer.echo(f"saved the history of {target_id} to {save}")
        if check or not save:
            _report(asyncio.run(_check_text(text, target_id, check_history, load_history)))
        raise typer.Exit(EXIT_OK)

    async def start(client):  # noqa: ANN001, ANN202 - temporalio Client; (handle, queue, served)
        handle = await replay_wake(client, target_id, force=force)
        queue = (await handle.describe()).task_queue
        return handle, queue, await has_worker(client, queue)

    handle, queue, served = _run(temporal_address, start)
    typer.echo(f"started {handle.id} (replay_of {target_id}); follow it with `xmesh-agent wakes`")
    if not served:
        typer.echo(f"note: no worker polls {queue}: the replay runs once its peer is started", err=True)


async def _check_text(text: str, workflow_id: str, check_history: Callable, load_history: Callable):
    from xmesh_agent.workers.inspect import InspectError

    try:
        return await check_history(load_history(text, workflow_id))
    except InspectError as exc:
        fail(str(exc))


def _report(result) -> None:  # noqa: ANN001 - workers.replay.ReplayCheck, imported lazily
    typer.echo(result.message, err=not result.ok)
    raise typer.Exit(EXIT_OK if result.ok else EXIT_FAIL)
