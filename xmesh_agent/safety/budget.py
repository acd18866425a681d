"""The wake budget: how many wakes a peer may start per minute (burst), hour (sustained) and day.

Sliding windows: a reservation made at `t` counts at `now` while `t > now - window`, so it leaves the
minute window exactly 60 000 ms later. Reservations live in SQLite (not in memory, as the original
runtime kept them) so a restart does not hand out a fresh budget, and they are keyed by wake id so a
retried or replayed wake gets back the decision it got the first time instead of spending twice.
Windows are counted from per-minute totals of allowed wakes, kept in the same transaction as each
reservation: a decision costs the same at the day's 10,000th wake as at its first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from xmesh_agent.config import BudgetConfig
from xmesh_agent.safety._db import (
    MINUTE_MS,
    SQL_MINUTE_OF,
    SqliteState,
    check_now,
    minute_of,
    sliding_sum,
)

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
KEEP_MS = 2 * DAY_MS
"""Reservations older than this are forgotten (they count in no window; a retry after that re-decides)."""
SOFT_WARN_RATIO = (4, 5)
"""Soft warning at 80 % of a cap, kept as a fraction so 0.8 x cap never suffers float rounding."""

BudgetWindow = Literal["burst", "sustained", "daily"]


class BudgetCounts(BaseModel):
    minute: int
    hour: int
    day: int


class BudgetDecision(BaseModel):
    """Why a wake may or may not start; `reason` names the window whose cap was reached."""

    wake_id: str
    allowed: bool
    reason: BudgetWindow | None = None
    counts: BudgetCounts
    soft_warning: BudgetWindow | None = None
    reserved_at_ms: int
    replayed: bool = False
    """True when this wake id had already been decided; the stored decision is returned unchanged."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS wake_reservations (
    wake_id      TEXT PRIMARY KEY,
    at_ms        INTEGER NOT NULL,
    allowed      INTEGER NOT NULL,
    reason       TEXT,
    minute_count INTEGER NOT NULL,
    hour_count   INTEGER NOT NULL,
    day_count    INTEGER NOT NULL,
    soft_warning TEXT
);
CREATE INDEX IF NOT EXISTS wake_reservations_by_time ON wake_reservations (at_ms);
CREATE TABLE IF NOT EXISTS wake_minutes (
    minute  INTEGER PRIMARY KEY,         -- at_ms // 60 000
    allowed INTEGER NOT NULL
)
"""

_SELECT_DECISION = (
    "SELECT wake_id, at_ms, allowed, reason, minute_count, hour_count, day_count, soft_warning"
    " FROM wake_reservations WHERE wake_id = ?"
)
"""A stored reservation, in the column order `_from_row` reads."""


def _soft_warn(post: int, cap: int) -> bool:
    num, den = SOFT_WARN_RATIO
    return post * den >= cap * num


class WakeBudget(SqliteState):
    """Burst / sustained / daily wake caps, persisted and idempotent by wake id."""

    _SCHEMA = _SCHEMA

    def __init__(self, path: str | Path, config: BudgetConfig | None = None) -> None:
        self.config = config or BudgetConfig()
        super().__init__(path)

    @property
    def limits(self) -> BudgetCounts:
        c = self.config
        return BudgetCounts(minute=c.max_wakes_per_minute, hour=c.max_wakes_per_hour, day=c.max_wakes_per_day)

    def _backfill(self, cur) -> None:
        if cur.execute("SELECT 1 FROM wake_minutes LIMIT 1").fetchone():
            return
        cur.execute(
            f"INSERT INTO wake_minutes SELECT {SQL_MINUTE_OF}, COUNT(*) FROM wake_reservations"
            f" WHERE allowed = 1 GROUP BY {SQL_MINUTE_OF}"
        )

    @staticmethod
    def _window(cur, now_ms: int, window_ms: int) -> int:
        return sliding_sum(
            cur,
            now_ms,
            window_ms,
            whole="SELECT COALESCE(SUM(allowed), 0) FROM wake_minutes WHERE minute > ?",
            edge="SELECT COUNT(*) FROM wake_reservations WHERE allowed = 1 AND at_ms > ? AND at_ms < ?",
        )

    @classmethod
    def _count(cls, cur, now_ms: int) -> BudgetCounts:
        return BudgetCounts(
            minute=cls._window(cur, now_ms, MINUTE_MS),
            hour=cls._window(cur, now_ms, HOUR_MS),
            day=cls._window(cur, now_ms, DAY_MS),
        )

    def counts(self, now_ms: int) -> BudgetCounts:
        """Wakes counted in each window at `now_ms`, without reserving (the status view)."""
        now_ms = check_now(now_ms)
        with self._snapshot() as cur:
            return self._count(cur, now_ms)

    def decision_for(self, wake_id: str) -> BudgetDecision | None:
        """The stored decision for a wake id, if it was ever reserved."""
        with self._read() as cur:
            row = cur.execute(_SELECT_DECISION, (wake_id,)).fetchone()
        return self._from_row(row, replayed=True) if row else None

    @staticmethod
    def _from_row(row: tuple, *, replayed: bool) -> BudgetDecision:
        return BudgetDecision(
            wake_id=row[0],
            reserved_at_ms=row[1],
            allowed=bool(row[2]),
            reason=row[3],
            counts=BudgetCounts(minute=row[4], hour=row[5], day=row[6]),
            soft_warning=row[7],
            replayed=replayed,
        )

    def reserve(self, wake_id: str, now_ms: int) -> BudgetDecision:
        """Decide whether wake `wake_id` may start at `now_ms` and, if so, count it.

        The check runs before recording (a denied wake is not counted): minute >= cap -> "burst",
        else hour >= cap -> "sustained", else day >= cap -> "daily". After an allowed reservation the
        first window whose new count reached 80 % of its cap is named in `soft_warning`. Denied
        decisions are stored too, so a retry of the same wake id is denied the same way.
        """
        if not isinstance(wake_id, str) or not wake_id:
            raise ValueError("wake_id must be a non-empty string")
        now_ms = check_now(now_ms)
        limits = self.limits
        with self._tx() as cur:
            row = cur.execute(_SELECT_DECISION, (wake_id,)).fetchone()
            if row:
                return self._from_row(row, replayed=True)
            counts = self._count(cur, now_ms)
            reason: BudgetWindow | None = None
            if counts.minute >= limits.minute:
                reason = "burst"
            elif counts.hour >= limits.hour:
                reason = "sustained"
            elif counts.day >= limits.day:
                reason = "daily"
            soft: BudgetWindow | None = None
            if reason is None:
                counts = BudgetCounts(minute=counts.minute + 1, hour=counts.hour + 1, day=counts.day + 1)
                for window, post, cap in (
                    ("burst", counts.minute, limits.minute),
                    ("sustained", counts.hour, limits.hour),
                    ("daily", counts.day, limits.day),
                ):
                    if _soft_warn(post, cap):
                        soft = window  # type: ignore[assignment]
                        break
            self._forget(cur, now_ms - KEEP_MS)
            if reason is None:
                cur.execute(
                    "INSERT INTO wake_minutes (minute, allowed) VALUES (?, 1)"
                    " ON CONFLICT (minute) DO UPDATE SET allowed = allowed + 1",
                    (minute_of(now_ms),),
                )
            cur.execute(
                "INSERT INTO wake_reservations (wake_id, at_ms, allowed, reason, minute_count,"
                " hour_count, day_count, soft_warning) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (wake_id, now_ms, int(reason is None), reason, counts.minute, counts.hour, counts.day, soft),
            )
        return BudgetDecision(
            wake_id=wake_id,
            allowed=reason is None,
            reason=reason,
            counts=counts,
            soft_warning=soft,
            reserved_at_ms=now_ms,
        )

    def prune(self, now_ms: int, keep_ms: int = KEEP_MS) -> int:
        """Forget reservations older than `keep_ms` (they no longer count in any window)."""
        now_ms = check_now(now_ms)
        keep_ms = max(keep_ms, DAY_MS)
        with self._tx() as cur:
            return self._forget(cur, now_ms - keep_ms)

    @staticmethod
    def _forget(cur, until_ms: int) -> int:
        """Drop reservations at or before `until_ms`, and the minute totals wholly before it (a total
        straddling it stays: it lies more than a day back, so no window reads it)."""
        cur.execute("DELETE FROM wake_minutes WHERE minute < ?", (minute_of(until_ms),))
        cur.execute("DELETE FROM wake_reservations WHERE at_ms <= ?", (until_ms,))
        return cur.rowcount
