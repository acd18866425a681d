"""`xmesh-agent logs`: a peer's event log, one readable line per event, or its JSON lines with `--json`.

The log file outlives the process, so this works for a stopped peer too. A line reads
`time  peer  event  [trigger]  what matters`: the reply's text for `emitted`, the model and tokens for
`model-call`, the reason for `rejected` and `suppressed`. Logs written before keys were snake_case
read the same.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import typer

from xmesh_agent.cli.common import fail

_KEY = re.compile(r"cmb1-[0-9a-f]{8,}")
SHORT_KEY = 13
"""`cmb1-` and 8 hex digits: enough to tell a peer's recent wakes apart, short enough for one line."""


def _short(key: Any) -> str:
    return str(key)[:SHORT_KEY] if key else ""


def _trigger(data: dict[str, Any]) -> str:
    """The trigger CMB of a wake event, short: from `cmb_key`, else from the wake id."""
    if data.get("cmb_key"):
        return _short(data["cmb_key"])
    match = _KEY.search(str(data.get("wake_id") or ""))
    return _short(match.group(0)) if match else ""


def _usd(value: Any) -> str:
    return "unknown price" if value is None else f"${value:.6f}"


def _what(evt: str, d: dict[str, Any]) -> str:
    """The text that matters for each event; other events show their fields as k=v."""
    if evt == "wake-started":
        return f"from {d.get('author', '?')}"
    if evt == "admitted":
        return f"{d.get('decision')} (drift {d.get('drift', 0):.3f})"
    if evt == "rejected":
        return f"{d.get('decision')}: {d.get('reason', '')}"
    if evt == "model-call":
        fields = ", ".join(d.get("fields") or []) or "no fields"
        return (
            f"{d.get('adapter')}/{d.get('model')}: {d.get('input_tokens', 0)}+{d.get('output_tokens', 0)} "
            f"tokens, {_usd(d.get('cost_usd'))} -> {fields}"
        )
    if evt == "model-error":
        return f"attempt {d.get('attempt')}: {d.get('error', '')}"
    if evt in ("suppressed", "budget-warning"):
        return f"{d.get('outcome') or ''} {d.get('reason') or d.get('warning') or ''}".strip()
    if evt == "approval-requested":
        return f"rule {d.get('rule')}: {d.get('reason', '')}"
    if evt == "emitted":
        to = f" to {d['to']}" if d.get("to") else ""
        text = d.get("text") or "(text not logged)"
        return (
            f"{_short(d.get('key'))} {d.get('route', '')}{to} to {d.get('delivered_to', 0)} peer(s): {text}"
        )
    if evt in ("peer-connected", "peer-disconnected"):
        return f"{d.get('name', '?')} {d.get('node_id', '')} {d.get('transport', '')}".strip()
    return " ".join(f"{k}={v}" for k, v in d.items() if k not in ("wake_id", "cmb_key"))


def readable(line: str) -> str:
    """One log line as a human reads it; a line that is not an event is shown as it is."""
    from xmesh_agent.jsonkeys import snake_keys

    try:
        record = snake_keys(json.loads(line))
        data = record.get("data") or {}
        when = str(record["ts"])[:19].replace("T", " ")
        evt = str(record["evt"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return line
    level = record.get("level", "info")
    mark = {"warn": "!", "error": "E"}.get(level, " ")
    trigger = _trigger(data) if isinstance(data, dict) else ""
    what = _what(evt, data) if isinstance(data, dict) else str(data)
    return f"{when} {mark} {record.get('peer', '')}  {evt:<18} {trigger:<{SHORT_KEY}}  {what}".rstrip()


def as_json(line: str) -> str:
    """The event as JSON with snake_case keys (older files had some camelCase ones)."""
    from xmesh_agent.jsonkeys import snake_keys

    try:
        return json.dumps(snake_keys(json.loads(line)), ensure_ascii=False)
    except ValueError:
        return line


def logs(
    peer: str = typer.Argument(..., help="Peer name (running or not: the log file outlives the process)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events until Ctrl-C."),
    lines: int = typer.Option(50, "--lines", "-n", min=0, help="How many recent events to print first."),
    json_lines: bool = typer.Option(
        False, "--json", help="Print the raw events, one JSON object per line {ts, level, evt, peer, data}."
    ),
    config: str | None = typer.Option(
        None, "--config", "-c", help="The peer's agent.toml, if its logging file_path moves its log."
    ),
) -> None:
    """Print a peer's event log: one line per event (time, peer, event, trigger, what matters).

    Events: wake-started, admitted/rejected, model-call (model, tokens, cost), suppressed, emitted
    (the reply's text), budget-warning, peer-connected/disconnected, cmb-rejected, stopping. With
    --json each event is a JSON object with snake_case keys, for `jq`:

    Example: xmesh-agent logs reviewer-01 -n 200 --json | jq 'select(.evt == "suppressed")'
    """
    from xmesh_agent.logs import default_log_path, log_path, tail
    from xmesh_agent.logs import follow as follow_file

    if config:
        from xmesh_agent.cli.common import load_or_exit

        path = log_path(load_or_exit(Path(config)))
    else:
        path = default_log_path(peer)
    if not path.exists() and not follow:
        fail(f"no log for peer {peer} at {path} (has it ever run? logs start with `xmesh-agent run`)")
    show = as_json if json_lines else readable
    for line in tail(path, lines):
        typer.echo(show(line))
    if follow:
        try:
            for line in follow_file(path):
                typer.echo(show(line))
        except KeyboardInterrupt:
            return
