"""The one way the safety policies open their SQLite state: WAL, a busy timeout, immediate transactions.

Budget, cost and breaker state must survive a restart and stay consistent when several wakes (threads of
one worker, or several worker processes on the same file) decide at once. Each decision therefore runs
inside `BEGIN IMMEDIATE`, which takes SQLite's write lock before the first read, so read-decide-write is
atomic across connections; a per-object lock serialises threads sharing one connection.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

BUSY_TIMEOUT_MS = 15_000
STATE_CACHE_KIB = 256
"""SQLite page cache per state connection (its default is 2 MiB). These tables are read by key and their
index pages are touched at random by every wake, so a default cache fills slowly over thousands of
wakes, and a peer keeps several such connections: a small cache keeps its memory flat over a week
(the OS still caches the file)."""


MINUTE_MS = 60_000


def minute_of(at_ms: int) -> int:
    """The minute bucket a time falls in (floor division, so times before the epoch bucket too)."""
    return at_ms // MINUTE_MS


SQL_MINUTE_OF = "((at_ms - ((at_ms % 60000) + 60000) % 60000) / 60000)"
"""`minute_of(at_ms)` in SQL (SQLite's integer division truncates toward zero; this floors)."""


def sliding_sum(cur: sqlite3.Cursor, now_ms: int, window_ms: int, *, whole: str, edge: str) -> int:
    """A sum over the sliding window `at_ms > now_ms - window_ms` read from per-minute totals: `whole`
    sums the totals of every minute after the one the window starts in (its parameter: that minute),
    `edge` the rows of that minute inside the window (its parameters: the window's start, the minute's
    end). The cost is the same however many rows the window holds."""
    since = now_ms - window_ms
    first = minute_of(since)
    totals = cur.execute(whole, (first,)).fetchone()[0]
    rows = cur.execute(edge, (since, (first + 1) * MINUTE_MS)).fetchone()[0]
    return totals + rows


def check_now(now_ms: object) -> int:
    """A caller's clock reading as an int, or a clear error (a policy must never guess the time)."""
    if isinstance(now_ms, bool) or not isinstance(now_ms, int | float):
        raise TypeError(f"now_ms must be an integer of milliseconds, got {type(now_ms).__name__}")
    if isinstance(now_ms, float) and not math.isfinite(now_ms):
        raise ValueError(f"now_ms must be finite, got {now_ms!r}")
    return int(now_ms)


class SqliteState:
    """Base for a policy whose state lives in a few tables of a SQLite file (":memory:" for tests)."""

    _SCHEMA = ""

    def __init__(self, path: str | Path) -> None:
        self.path = path if str(path) == ":memory:" else Path(path)
        if isinstance(self.path, Path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
        )
        self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if str(path) != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(f"PRAGMA cache_size=-{STATE_CACHE_KIB}")
        with self._tx() as cur:
            for statement in self._SCHEMA.split(";"):
                if statement.strip():
                    cur.execute(statement)
            self._backfill(cur)

    def _backfill(self, cur: sqlite3.Cursor) -> None:
        """Fill summary tables a file from an older version lacks (runs inside the opening transaction)."""

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._db.cursor()
            cur.execute(begin)
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")

    def _tx(self) -> AbstractContextManager[sqlite3.Cursor]:
        """One atomic read-decide-write step, holding the write lock from its first statement."""
        return self._transaction("BEGIN IMMEDIATE")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            yield self._db.cursor()

    def _snapshot(self) -> AbstractContextManager[sqlite3.Cursor]:
        """Several reads that must agree with each other (one read transaction, no write lock)."""
        return self._transaction("BEGIN")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SqliteState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
