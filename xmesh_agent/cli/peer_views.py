"""Tables the operating commands print: aligned columns, USD amounts, a stopped peer's `status`, and
every peer of the machine in one table (running or not)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def table(rows: list[list[Any]], header: list[str] | None = None) -> str:
    """Aligned columns, two spaces apart; the header underlined."""
    cells = [[str(c) for c in row] for row in ([header] if header else []) + rows]
    if not cells:
        return ""
    widths = [max(len(r[i]) for r in cells if i < len(r)) for i in range(max(map(len, cells)))]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in cells]
    if header:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.4f}"


STATUS_HEADER = ["PEER", "STATE", "WAKES TODAY", "BREAKER", "COST (RUN)", "COST (LIFETIME)"]


def status_row(r: dict[str, Any]) -> list[Any]:
    """One peer in `status` without a name; running and stopped replies share these fields."""
    day = (r.get("budget") or {}).get("counts", {}).get("day", "-")
    run = "last run" if r["state"] == "stopped" else "run"
    return [
        r["peer"],
        r["state"],
        day,
        (r.get("breaker") or {}).get("state", "-"),
        f"{_usd(r['cost'].get('run_usd'))} ({run})",
        _usd(r["cost"].get("lifetime_usd")),
    ]


def _when(ms: int | None) -> str:
    if not ms:
        return "?"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_stopped(r: dict[str, Any]) -> str:
    """`status` of a stopped peer: what its files say."""
    last, b, c = r["last_run"], r.get("budget"), r["cost"]
    ended = f"stopped {_when(last['stopped_at'])}" if last.get("stopped_at") else "did not stop cleanly"
    ran = f"last run {_when(last['started_at'])}, {ended}" if last.get("started_at") else "no run recorded"
    rows: list[list[Any]] = [
        ["peer", f"{r['peer']} (stopped: not running; {ran})"],
        ["node", f"{r['node_id'] or '?'}, group {r['group'] or '?'}"],
    ]
    if r.get("model"):
        rows.append(["model", f"{r['model']['adapter']} / {r['model']['name']}"])
    if b:
        counts, limits = b["counts"], b["limits"] or {}
        rows.append(
            [
                "wake budget",
                "  ".join(f"{w} {counts[w]}/{limits.get(w, '?')}" for w in ("minute", "hour", "day")),
            ]
        )
    if r.get("breaker"):
        rows.append(["breaker", f"{r['breaker']['state']} ({r['breaker']['consecutive_failures']} failures)"])
    rows += [
        [f"fallback {i}", f"{f['model']}: breaker {f['breaker']['state']}"]
        for i, f in enumerate(r["fallback"], 1)
    ]
    rows.append(
        [
            "cost",
            f"last run {_usd(c['run_usd'])}  lifetime {_usd(c['lifetime_usd'])}  "
            f"({c['calls']} calls, {c['unknown_calls']} of unknown price)",
        ]
    )
    if r.get("wakes"):
        w = r["wakes"]
        rows.append(
            [
                "wakes",
                f"{w['woken']} started, {w['emitted']} emitted, {w['spooled']} spooled for the next start",
            ]
        )
    if r.get("store"):
        rows.append(["store", f"{r['store']['cmbs']} CMBs"])
    rows.append(["log", r.get("log", "")])
    return table(rows) + "\n\nstart it again with `xmesh-agent run --config <its agent.toml>`"
