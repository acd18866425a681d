"""The cost ledger: what model calls cost, per hour, day, run and lifetime, and whether a cap is reached.

Every call is recorded once, keyed by (wake id, attempt), so a retried activity that records again does
not double-count. Amounts are stored as integer nano-dollars: sums are exact, and "spent >= cap" never
depends on float rounding. Sums are read from per-minute and per-run summaries kept in the same
transaction as each row, so a check costs the same after a week of calls as after the first. A call whose price is unknown is stored as unknown and counted in
`unknown_calls`; it is never silently recorded as free. All three caps are enforced (the original only
polled the per-run cap).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from xmesh_agent.config import BudgetConfig
from xmesh_agent.safety._db import SQL_MINUTE_OF, SqliteState, check_now, minute_of, sliding_sum

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
NANOS_PER_USD = 1_000_000_000

CostCapReason = Literal["cost-cap-hour", "cost-cap-day", "cost-cap-run"]


def usd_to_nanos(usd: float) -> int:
    return round(usd * NANOS_PER_USD)


class CostTotals(BaseModel):
    hour_usd: float
    day_usd: float
    run_usd: float
    lifetime_usd: float
    calls: int
    """Lifetime model calls recorded, priced or not."""
    unknown_calls: int
    """Lifetime calls whose cost is unknown (not included in any sum)."""
    run_calls: int
    run_unknown_calls: int


class CostDecision(BaseModel):
    allowed: bool
    reason: CostCapReason | None = None
    totals: CostTotals


_SCHEMA = """
CREATE TABLE IF NOT EXISTS model_costs (
    wake_id       TEXT NOT NULL,
    attempt       TEXT NOT NULL,
    at_ms         INTEGER NOT NULL,
    run_id        TEXT NOT NULL,
    cost_nanos    INTEGER,               -- NULL: the price of this call is unknown
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    model         TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (wake_id, attempt)
);
CREATE INDEX IF NOT EXISTS model_costs_by_time ON model_costs (at_ms);
CREATE INDEX IF NOT EXISTS model_costs_by_run ON model_costs (run_id);
CREATE TABLE IF NOT EXISTS cost_minutes (
    minute INTEGER PRIMARY KEY,          -- at_ms // 60 000
    nanos  INTEGER NOT NULL              -- priced calls only
);
CREATE TABLE IF NOT EXISTS cost_runs (
    run_id        TEXT PRIMARY KEY,
    nanos         INTEGER NOT NULL,
    calls         INTEGER NOT NULL,
    unknown_calls INTEGER NOT NULL
)
"""

_ADD_MINUTE = (
    "INSERT INTO cost_minutes (minute, nanos) VALUES (?, ?)"
    " ON CONFLICT (minute) DO UPDATE SET nanos = nanos + excluded.nanos"
)
_ADD_RUN = (
    "INSERT INTO cost_runs (run_id, nanos, calls, unknown_calls) VALUES (?, ?, 1, ?)"
    " ON CONFLICT (run_id) DO UPDATE SET nanos = nanos + excluded.nanos, calls = calls + 1,"
    " unknown_calls = unknown_calls + excluded.unknown_calls"
)


class CostLedger(SqliteState):
    """Per-peer model spend; `run_id` names this process's run (the per-run cap counts only it)."""

    _SCHEMA = _SCHEMA

    def __init__(
        self,
        path: str | Path,
        config: BudgetConfig | None = None,
        *,
        run_id: str,
        run_started_ms: int | None = None,
    ) -> None:
        if not isinstance(run_id, str) or not run_id:
            raise ValueError("run_id must be a non-empty string")
        self.config = config or BudgetConfig()
        self.run_id = run_id
        self.run_started_ms = None if run_started_ms is None else check_now(run_started_ms)
        super().__init__(path)

    def _backfill(self, cur) -> None:
        if cur.execute("SELECT 1 FROM cost_runs LIMIT 1").fetchone():
            return
        cur.execute(
            "INSERT INTO cost_runs SELECT run_id, COALESCE(SUM(cost_nanos), 0), COUNT(*),"
            " SUM(cost_nanos IS NULL) FROM model_costs GROUP BY run_id"
        )
        cur.execute(
            f"INSERT INTO cost_minutes SELECT {SQL_MINUTE_OF}, SUM(cost_nanos) FROM model_costs"
            f" WHERE cost_nanos IS NOT NULL GROUP BY {SQL_MINUTE_OF}"
        )

    def record(
        self,
        wake_id: str,
        attempt: str | int,
        cost_usd: float | None,
        now_ms: int,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        model: str = "",
    ) -> bool:
        """Record one model call's cost; False when (wake_id, attempt) was already recorded.

        `cost_usd=None` means the price is unknown. Negative, NaN or infinite costs are refused.
        """
        if not isinstance(wake_id, str) or not wake_id:
            raise ValueError("wake_id must be a non-empty string")
        if isinstance(attempt, bool) or not isinstance(attempt, str | int):
            raise TypeError("attempt must be a string or an integer")
        nanos: int | None = None
        if cost_usd is not None:
            if isinstance(cost_usd, bool) or not isinstance(cost_usd, int | float):
                raise TypeError(f"cost_usd must be a number or None, got {type(cost_usd).__name__}")
            if not math.isfinite(cost_usd) or cost_usd < 0:
                raise ValueError(f"cost_usd must be a finite, non-negative number, got {cost_usd!r}")
            nanos = usd_to_nanos(cost_usd)
        now_ms = check_now(now_ms)
        with self._tx() as cur:
            cur.execute(
                "INSERT OR IGNORE INTO model_costs (wake_id, attempt, at_ms, run_id, cost_nanos,"
                " input_tokens, output_tokens, model) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    wake_id,
                    str(attempt),
                    now_ms,
                    self.run_id,
                    nanos,
                    max(0, int(input_tokens)),
                    max(0, int(output_tokens)),
                    model,
                ),
            )
            if cur.rowcount != 1:
                return False
            if nanos is not None:
                cur.execute(_ADD_MINUTE, (minute_of(now_ms), nanos))
            cur.execute(_ADD_RUN, (self.run_id, nanos or 0, int(nanos is None)))
            return True

    @staticmethod
    def _window_nanos(cur, now_ms: int, window_ms: int) -> int:
        return sliding_sum(
            cur,
            now_ms,
            window_ms,
            whole="SELECT COALESCE(SUM(nanos), 0) FROM cost_minutes WHERE minute > ?",
            edge="SELECT COALESCE(SUM(cost_nanos), 0) FROM model_costs WHERE at_ms > ? AND at_ms < ?",
        )

    def totals(self, now_ms: int) -> CostTotals:
        """Spend in the sliding hour and day ending at `now_ms`, this run, and ever."""
        now_ms = check_now(now_ms)
        with self._snapshot() as cur:
            hour = self._window_nanos(cur, now_ms, HOUR_MS)
            day = self._window_nanos(cur, now_ms, DAY_MS)
            run = cur.execute(
                "SELECT nanos, calls, unknown_calls FROM cost_runs WHERE run_id = ?", (self.run_id,)
            ).fetchone() or (0, 0, 0)
            ever = cur.execute(
                "SELECT COALESCE(SUM(nanos), 0), COALESCE(SUM(calls), 0), COALESCE(SUM(unknown_calls), 0)"
                " FROM cost_runs"
            ).fetchone()
        return CostTotals(
            hour_usd=hour / NANOS_PER_USD,
            day_usd=day / NANOS_PER_USD,
            run_usd=run[0] / NANOS_PER_USD,
            lifetime_usd=ever[0] / NANOS_PER_USD,
            calls=ever[1],
            unknown_calls=ever[2],
            run_calls=run[1],
            run_unknown_calls=run[2],
        )

    def check(self, now_ms: int) -> CostDecision:
        """May another model call start? Denied once spend >= cap (a cap of 0 allows no spending).

        Checked in the order hour, day, run; the first cap reached is the reason. Calls of unknown
        cost cannot reach a cap; callers surface `unknown_calls` instead of treating them as free.
        """
        totals = self.totals(now_ms)
        c = self.config
        reason: CostCapReason | None = None
        for name, spent, cap in (
            ("cost-cap-hour", totals.hour_usd, c.max_cost_usd_per_hour),
            ("cost-cap-day", totals.day_usd, c.max_cost_usd_per_day),
            ("cost-cap-run", totals.run_usd, c.max_cost_usd_per_run),
        ):
            if usd_to_nanos(spent) >= usd_to_nanos(cap):
                reason = name  # type: ignore[assignment]
                break
        return CostDecision(allowed=reason is None, reason=reason, totals=totals)


def clamp_max_tokens(requested: int | None, cap: int) -> int:
    """The max_tokens to send a model: the request, bounded to [1, cap]; no request means the cap."""
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise ValueError(f"the per-call token cap must be a positive integer, got {cap!r}")
    if requested is None or isinstance(requested, bool) or not isinstance(requested, int):
        return cap
    return max(1, min(requested, cap))
