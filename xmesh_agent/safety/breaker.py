"""The circuit breaker across wakes: stop calling a model that keeps failing, then probe it once.

closed --(5 consecutive failures)--> open --(60 s)--> half-open --(probe succeeds)--> closed
                                       ^                   |
                                       +--(probe fails: re-open, fresh 60 s timer)

Half-open admits a single probe: the first `allow()` after the timer claims it and every other caller
is refused until that probe reports (or its lease of `probe_lease_ms` runs out, so a probe lost to a
crash cannot wedge the breaker). The original runtime let every call through while half-open and never
re-opened on a failed probe; both are fixed here. State lives in SQLite so a restart keeps it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from xmesh_agent.safety._db import SqliteState, check_now

FAILURE_THRESHOLD = 5
RESET_AFTER_MS = 60_000
BASE_BACKOFF_MS = 1_000
MAX_BACKOFF_MS = 30_000

BreakerState = Literal["closed", "open", "half-open"]


class BreakerSnapshot(BaseModel):
    state: BreakerState
    consecutive_failures: int
    opened_at_ms: int | None = None
    last_failure_ms: int | None = None
    last_failure_transient: bool | None = None
    probe_started_ms: int | None = None
    next_backoff_ms: int
    """Suggested pause after the latest failure: min(30 s, 1 s x 2^(n-1)); 0 with no failures."""


class BreakerPermit(BaseModel):
    allowed: bool
    probe: bool = False
    """True when this caller holds the half-open probe; its outcome decides open vs closed."""
    snapshot: BreakerSnapshot


_SCHEMA = """
CREATE TABLE IF NOT EXISTS circuit_breakers (
    name                   TEXT PRIMARY KEY,
    consecutive_failures   INTEGER NOT NULL DEFAULT 0,
    opened_at_ms           INTEGER,
    last_failure_ms        INTEGER,
    last_failure_transient INTEGER,
    probe_started_ms       INTEGER
)
"""


def backoff_ms(failures: int) -> int:
    if failures <= 0:
        return 0
    return min(MAX_BACKOFF_MS, BASE_BACKOFF_MS * 2 ** min(failures - 1, 30))


class CircuitBreaker(SqliteState):
    """One named breaker (normally one per peer's model) in a SQLite file.

    Which failures count: both. A transient failure (429, 5xx, timeout) and a permanent one (bad key,
    unknown model) each add to the consecutive count, because a peer whose every wake fails should stop
    spending wakes either way; `transient` is kept for the status view. Record one outcome per model
    call attempt, after Temporal's retries of that attempt, i.e. per wake that reached the model.
    """

    _SCHEMA = _SCHEMA

    def __init__(
        self,
        path: str | Path,
        name: str = "model",
        *,
        failure_threshold: int = FAILURE_THRESHOLD,
        reset_after_ms: int = RESET_AFTER_MS,
        probe_lease_ms: int | None = None,
    ) -> None:
        if failure_threshold < 1 or reset_after_ms < 0:
            raise ValueError("failure_threshold must be >= 1 and reset_after_ms >= 0")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_after_ms = reset_after_ms
        self.probe_lease_ms = reset_after_ms if probe_lease_ms is None else probe_lease_ms
        super().__init__(path)
        with self._tx() as cur:
            cur.execute("INSERT OR IGNORE INTO circuit_breakers (name) VALUES (?)", (name,))

    def _load(self, cur) -> tuple[int, int | None, int | None, int | None, int | None]:
        row = cur.execute(
            "SELECT consecutive_failures, opened_at_ms, last_failure_ms, last_failure_transient,"
            " probe_started_ms FROM circuit_breakers WHERE name = ?",
            (self.name,),
        ).fetchone()
        return row if row else (0, None, None, None, None)

    def _save(self, cur, failures: int, opened: int | None, last: int | None, transient, probe) -> None:
        cur.execute(
            "UPDATE circuit_breakers SET consecutive_failures = ?, opened_at_ms = ?, last_failure_ms = ?,"
            " last_failure_transient = ?, probe_started_ms = ? WHERE name = ?",
            (failures, opened, last, transient, probe, self.name),
        )

    def _snapshot(self, row: tuple, now_ms: int) -> BreakerSnapshot:
        failures, opened, last, transient, probe = row
        if opened is None:
            state: BreakerState = "closed"
        elif now_ms - opened >= self.reset_after_ms:
            state = "half-open"
        else:
            state = "open"
        return BreakerSnapshot(
            state=state,
            consecutive_failures=failures,
            opened_at_ms=opened,
            last_failure_ms=last,
            last_failure_transient=None if transient is None else bool(transient),
            probe_started_ms=probe,
            next_backoff_ms=backoff_ms(failures),
        )

    def snapshot(self, now_ms: int) -> BreakerSnapshot:
        now_ms = check_now(now_ms)
        with self._read() as cur:
            return self._snapshot(self._load(cur), now_ms)

    def allow(self, now_ms: int) -> BreakerPermit:
        """May a model call start now? Closed: yes. Open: no. Half-open: only the one probe."""
        now_ms = check_now(now_ms)
        with self._tx() as cur:
            row = self._load(cur)
            snap = self._snapshot(row, now_ms)
            if snap.state == "closed":
                return BreakerPermit(allowed=True, snapshot=snap)
            if snap.state == "open":
                return BreakerPermit(allowed=False, snapshot=snap)
            probe = row[4]
            if probe is not None and now_ms - probe < self.probe_lease_ms:
                return BreakerPermit(allowed=False, snapshot=snap)
            self._save(cur, row[0], row[1], row[2], row[3], now_ms)
            snap = snap.model_copy(update={"probe_started_ms": now_ms})
            return BreakerPermit(allowed=True, probe=True, snapshot=snap)

    def can_attempt(self, now_ms: int) -> bool:
        return self.allow(now_ms).allowed

    def record_success(self, now_ms: int) -> BreakerSnapshot:
        """Any success closes the breaker and clears the failure count."""
        now_ms = check_now(now_ms)
        with self._tx() as cur:
            self._save(cur, 0, None, None, None, None)
            return self._snapshot((0, None, None, None, None), now_ms)

    def record_failure(self, now_ms: int, *, transient: bool = True) -> BreakerSnapshot:
        """Count a failure; the threshold opens a closed breaker, any failure re-opens a half-open one."""
        now_ms = check_now(now_ms)
        with self._tx() as cur:
            failures, opened, _last, _t, probe = self._load(cur)
            failures += 1
            if opened is None:
                if failures >= self.failure_threshold:
                    opened = now_ms
            elif now_ms - opened >= self.reset_after_ms or probe is not None:
                # The probe (or a straggler once the timer ran out) failed: re-open with a fresh timer.
                opened, probe = now_ms, None
            # else: a call that started before the breaker opened failed late; the timer stands.
            row = (failures, opened, now_ms, int(bool(transient)), probe)
            self._save(cur, *row)
            return self._snapshot(row, now_ms)
