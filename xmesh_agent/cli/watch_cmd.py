"""`watch`: a live table of every peer running on this machine, refreshed in place."""

from __future__ import annotations

import time
from typing import Any

import typer

from xmesh_agent.cli.common import EXIT_USAGE, fail, print_json
from xmesh_agent.cli.ops_cmds import _duration, _usd, table
from xmesh_agent.durations import parse_duration

HEADER = [
    "PEER",
    "STATE",
    "MODEL",
    "GROUP",
    "UP",
    "MESH",
    "EMITTED",
    "OTHER",
    "IN-FLIGHT",
    "HELD",
    "COST/RUN",
    "BUDGET used/limit m h d",
    "BREAKER",
]


def _row(name: str, status: dict[str, Any]) -> list[Any]:
    seen: dict[str, int] = status["wakes"]["seenThisRun"]
    emitted = seen.get("emitted", 0)
    counts, limits = status["budget"]["counts"], status["budget"]["limits"]
    model = status["model"]
    return [
        name,
        status["state"],
        f"{model['adapter']}/{model['name']}",
        status["group"],
        _duration(status["uptimeSeconds"]),
        len(status["peers"]),
        emitted,
        sum(seen.values()) - emitted,
        status["wakes"]["inFlight"],
        "?" if status.get("awaiting_approval") is None else len(status["awaiting_approval"]),
        _usd(status["cost"]["run_usd"]),
        " ".join(f"{counts[w]}/{limits[w]}" for w in ("minute", "hour", "day")),
        status["breaker"]["state"],
    ]


def collect() -> list[tuple[str, dict[str, Any] | None, str]]:
    """(peer, status or None, problem) for every local peer whose control socket exists."""
    from xmesh_agent.workers.control import PeerNotRunning, call, running_peers

    found = []
    for name in running_peers():
        try:
            reply = call(name, "status", timeout=3.0, brief=True)
        except PeerNotRunning:
            found.append((name, None, "STALE (control socket gone)"))
            continue
        except OSError as exc:
            found.append((name, None, f"STALE ({exc.__class__.__name__})"))
            continue
        if reply.get("ok"):
            found.append((name, reply, ""))
        else:
            found.append((name, None, f"ERROR {reply.get('error', 'no answer')}"))
    return found


def render(found: list[tuple[str, dict[str, Any] | None, str]], color: bool) -> str:
    if not found:
        return "no peers running on this machine; start one with `xmesh-agent run --config <peer>.toml`"
    rows = [_row(name, status) if status else [name, problem] for name, status, problem in found]
    lines = table(rows, HEADER).splitlines()
    if color:
        for i, (_, status, _problem) in enumerate(found, start=2):  # 2: header + rule
            if status is None:
                lines[i] = typer.style(lines[i], fg="red")
            elif status["breaker"]["state"] != "closed" or status["state"] != "running":
                lines[i] = typer.style(lines[i], fg="yellow")
    return "\n".join(lines + _held_notes(found, color))


def _held_notes(found: list[tuple[str, dict[str, Any] | None, str]], color: bool) -> list[str]:
    """Under the table: each held wake, the gate that holds it, the command that decides it, its reply."""
    from xmesh_agent.wake.approval import decide_commands

    notes = []
    for name, status, _problem in found:
        for wake in (status or {}).get("awaiting_approval") or []:
            note = f"{name} awaits approval ({wake.get('reason') or wake.get('rule')}): {decide_commands(wake['workflow_id'])}"
            notes.append(typer.style(note, fg="yellow", bold=True) if color else note)
            notes += [f"  {field}: {text}" for field, text in (wake.get("reply") or {}).items() if text]
    return ["", *notes] if notes else []


MS_THRESHOLD = 100


def _interval(text: str) -> float:
    """Seconds between refreshes; a bare number over 100 is read as milliseconds, with a note."""
    try:
        seconds = parse_duration(text, allow_ms=True)
    except ValueError as exc:
        fail(f"--interval {exc}", EXIT_USAGE)
    if text.strip().replace(".", "", 1).isdigit() and seconds > MS_THRESHOLD:
        seconds /= 1000
        typer.echo(
            f"note: --interval {text.strip()} read as milliseconds ({seconds:g}s); "
            f"write {seconds:g}s or {text.strip()}ms to say so",
            err=True,
        )
    if seconds < 0.2:
        fail(f"--interval must be at least 200ms (got {text})", EXIT_USAGE)
    return seconds


def watch(
    interval_text: str = typer.Option(
        "2s",
        "--interval",
        "-i",
        help="Time between refreshes: 2s, 500ms, 1m; a bare number is seconds, or milliseconds when "
        "over 100 (the original runtime's --interval 2000).",
    ),
    once: bool = typer.Option(False, "--once", help="Print one table and exit (for scripts and logs)."),
    no_color: bool = typer.Option(False, "--no-color", help="No ANSI colours and no screen clearing."),
    as_json: bool = typer.Option(False, "--json", help="With --once: the peers' status replies as JSON."),
) -> None:
    """Watch every peer running on this machine in one live table (Ctrl-C to quit).

    One row per peer: state, model, group, uptime, mesh peers, wakes emitted / ended otherwise this
    run, wakes in flight, wakes held at an approval gate, cost this run, wake budget used/limit per
    minute, hour and day, and the circuit breaker (yellow when not closed; a peer whose socket no longer
    answers is shown STALE in red). Under the table, each held wake with the command that decides it.
    Example: `xmesh-agent watch --interval 5s`, or `xmesh-agent watch --once --json | jq`.
    """
    interval = _interval(interval_text)
    color = not no_color and not as_json
    try:
        while True:
            found = collect()
            if as_json:
                print_json([{"peer": n, "status": s, "problem": p or None} for n, s, p in found])
            else:
                if color and not once:
                    typer.echo("\x1b[2J\x1b[H", nl=False)
                stamp = time.strftime("%H:%M:%S")
                typer.echo(
                    f"{len(found)} peer(s) at {stamp}"
                    + ("" if once else f", every {interval:g}s, Ctrl-C quits")
                )
                typer.echo(render(found, color))
            if once:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return
