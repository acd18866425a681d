"""The peer's own wake ledger: CMBs waiting for a wake (the spool), CMBs already woken, emissions.

Temporal dedups wake ids only for the namespace's retention, and cannot take a start while it is
unreachable; this ledger makes both guarantees hold on the peer's disk.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from xmesh_agent.clock import now_ms
from xmesh_agent.safety._db import STATE_CACHE_KIB

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    cmb_key     TEXT PRIMARY KEY,
    author      TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS woken (
    cmb_key     TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    started_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS emissions (
    wake_id     TEXT PRIMARY KEY,
    cmb_key     TEXT NOT NULL,
    emitted_at  INTEGER NOT NULL
);
"""


class WakeLedger:
    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA cache_size=-{STATE_CACHE_KIB}")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _exec(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def enqueue(self, cmb_key: str, author: str) -> bool:
        """Spool a CMB for waking; False when it is already spooled or already woken."""
        with self._lock:
            if self._db.execute("SELECT 1 FROM woken WHERE cmb_key = ?", (cmb_key,)).fetchone():
                return False
            cur = self._db.execute(
                "INSERT OR IGNORE INTO pending (cmb_key, author, received_at) VALUES (?, ?, ?)",
                (cmb_key, author, now_ms()),
            )
            return cur.rowcount == 1

    def pending(self, limit: int = 100) -> list[tuple[str, str]]:
        return [
            (k, a)
            for k, a in self._exec(
                "SELECT cmb_key, author FROM pending ORDER BY received_at LIMIT ?", (limit,)
            )
        ]

    def note_attempt(self, cmb_key: str) -> None:
        self._exec("UPDATE pending SET attempts = attempts + 1 WHERE cmb_key = ?", (cmb_key,))

    def mark_woken(self, cmb_key: str, workflow_id: str) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM pending WHERE cmb_key = ?", (cmb_key,))
            self._db.execute(
                "INSERT OR IGNORE INTO woken (cmb_key, workflow_id, started_at) VALUES (?, ?, ?)",
                (cmb_key, workflow_id, now_ms()),
            )
            self._db.execute("COMMIT")

    def was_woken(self, cmb_key: str) -> bool:
        return bool(self._exec("SELECT 1 FROM woken WHERE cmb_key = ?", (cmb_key,)))

    def emission_of(self, wake_id: str) -> str | None:
        rows = self._exec("SELECT cmb_key FROM emissions WHERE wake_id = ?", (wake_id,))
        return rows[0][0] if rows else None

    def record_emission(self, wake_id: str, cmb_key: str) -> None:
        self._exec(
            "INSERT OR IGNORE INTO emissions (wake_id, cmb_key, emitted_at) VALUES (?, ?, ?)",
            (wake_id, cmb_key, now_ms()),
        )

    def counts(self) -> dict[str, int]:
        return {
            table: self._exec(f"SELECT COUNT(*) FROM {table}")[0][0]
            for table in ("pending", "woken", "emissions")
        }
