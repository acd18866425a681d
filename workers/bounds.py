"""A bounded run (`run --duration --max-cost --summary`): a peer that stops by itself, and says what it did.

For CI jobs and scripts: the run ends gracefully (in-flight wakes finish, like `xmesh-agent stop`) at the
deadline or once this run's spend reaches the cap, and the summary file holds the run's totals from the
peer's own books (wake results and the cost ledger), not from scraping its log.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xmesh_agent.clock import now_ms
from xmesh_agent.jsonkeys import snake_keys
from xmesh_agent.workers.control import ControlServer

POLL_SECONDS = 0.5


@dataclass(frozen=True)
class RunBounds:
    duration_s: float | None = None
    max_cost_usd: float | None = None
    summary_path: Path | None = None
    config_path: str = ""


async def enforce(control: ControlServer, bounds: RunBounds) -> None:
    """Begin a graceful stop at the deadline or when the run's spend reaches the cap; then return."""
    peer = control.peer
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bounds.duration_s if bounds.duration_s else None
    while True:
        if deadline is not None and loop.time() >= deadline:
            reason = "duration"
            break
        if bounds.max_cost_usd is not None:
            spent = peer.safety.cost.totals(now_ms()).run_usd
            if spent >= bounds.max_cost_usd:
                reason = "cost cap"
                break
        await asyncio.sleep(POLL_SECONDS)
    peer.events.event("run-bound-reached", {"reason": reason})
    control.begin_stop(reason)


def summary(control: ControlServer, started: float, bounds: RunBounds) -> dict[str, Any]:
    """This run's totals: wakes by outcome (their workflow results), CMBs emitted, USD from the ledger."""
    peer, seen = control.peer, dict(control.seen)
    totals = peer.safety.cost.totals(now_ms())
    return snake_keys(
        {
            "peer": peer.config.name,
            "group": peer.config.group,
            "config_path": bounds.config_path,
            "stop_reason": control.stop_reason or "stopped",
            "duration_seconds": round(time.monotonic() - started, 1),
            "wakes": sum(seen.values()),
            "wakes_by_outcome": seen,
            "cmbs_emitted": seen.get("emitted", 0),
            "cost_usd": round(totals.run_usd, 9),
            "model_calls": totals.run_calls,
            "unpriced_calls": totals.run_unknown_calls,
            "max_cost_usd": bounds.max_cost_usd,
        }
    )


def write_summary(path: Path, data: dict[str, Any]) -> None:
    """Atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
