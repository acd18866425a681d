"""A peer's CMB store: SQLite (WAL), dedup by key, lineage walks, recents by author and by group.

Every stored CMB has a store sequence number (its rowid: it only grows while the table holds rows),
and admission's anchors follow it (`admission_view`, see anchors.py): in memory when the window of
the group can answer, else with the same rule in SQL.

Writes made on an event loop are group-committed: the first `put` of a loop iteration opens a
transaction and the commit runs as the next callback, so a burst of frames read in one iteration
costs one WAL write instead of one per CMB. The commit is queued before anything the caller
schedules afterwards (the node hands a stored CMB to its on_cmb worker only after `put`), so what
is surfaced has been committed. Writes from threads without a loop commit at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from xmesh_agent import clock
from xmesh_agent.mmp.admission.anchors import WINDOW_CAPACITY, AnchorWindow, StoredCMB
from xmesh_agent.mmp.cmb import CMB

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cmbs (
    key         TEXT PRIMARY KEY,
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    grp         TEXT,
    received_at INTEGER NOT NULL,
    source      TEXT NOT NULL,          -- 'own' or the sending node's name
    body        TEXT NOT NULL           -- the CMB in spec v1.1 JSON
);
CREATE INDEX IF NOT EXISTS cmbs_by_author ON cmbs (created_by, received_at DESC);
CREATE INDEX IF NOT EXISTS cmbs_by_group ON cmbs (grp, received_at DESC);
"""

PAGE_CACHE_KIB = 512
"""SQLite's page cache on the store's connection (its default is 2 MiB). Keys are content hashes, so
every stored CMB touches a random page of the key index and a default cache fills over days of wakes,
growing the peer with it; reads past the cache come from the OS's file cache."""


class CMBStore:
    """Thread-safe: the node's event loop and activity threads share one connection under a lock."""

    def __init__(
        self,
        path: str | Path,
        *,
        retention_days: float | None = None,
        group_commit: bool = True,
        window_capacity: int = WINDOW_CAPACITY,
    ):
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
        self._db.executescript(_SCHEMA)
        self.retention_days = retention_days
        self.group_commit = group_commit
        self.anchors = AnchorWindow(window_capacity)

    @contextmanager
    def _cursor(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            yield self._db.cursor()

    def close(self) -> None:
        with self._lock:
            self.flush()
            self._db.close()

    def flush(self) -> None:
        """Commit a pending group commit now (no-op when none is open)."""
        with self._lock:
            if self._db.in_transaction:
                self._db.commit()

    def _begin_group(self) -> None:
        """Open a transaction committed by the running loop's next callback, when on a loop."""
        if not self.group_commit or self._db.in_transaction:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # a worker thread: autocommit
        self._db.execute("BEGIN")
        loop.call_soon(self._commit_group)

    def _commit_group(self) -> None:
        try:
            self.flush()
        except sqlite3.ProgrammingError:
            pass  # closed meanwhile (close() already committed)
        except sqlite3.Error:
            log.exception("CMB store commit failed")
            with self._lock:
                if self._db.in_transaction:
                    self._db.rollback()
                self.anchors.clear()  # it may hold rows that were rolled back

    def put(self, cmb: CMB, *, source: str, body: str | None = None) -> bool:
        """Store a CMB once. Returns False when the key was already there (a duplicate).

        `body` may pass the CMB's canonical JSON (`dumps_cmb`) when the caller already has it.
        """
        if body is None:
            body = dumps_cmb(cmb)
        now = clock.now_ms()
        with self._cursor() as cur:
            self._begin_group()
            cur.execute(
                "INSERT OR IGNORE INTO cmbs (key, created_by, created_at, grp, received_at, source,"
                " body) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (cmb.key, cmb.created_by, cmb.created_at, cmb.group, now, source, body),
            )
            if cur.rowcount != 1:
                return False
            if cmb.group is not None:
                self.anchors.stored(StoredCMB(cur.lastrowid or 0, now, cmb))
            return True

    def has(self, key: str) -> bool:
        with self._cursor() as cur:
            row = cur.execute("SELECT 1 FROM cmbs WHERE key = ?", (key,)).fetchone()
        return row is not None

    def get(self, key: str) -> CMB | None:
        with self._cursor() as cur:
            row = cur.execute("SELECT body FROM cmbs WHERE key = ?", (key,)).fetchone()
        return CMB.from_wire(json.loads(row[0])) if row else None

    def received_at(self, key: str) -> int | None:
        """When this node stored the CMB (ms): for an inbound one, when its frame arrived."""
        with self._cursor() as cur:
            row = cur.execute("SELECT received_at FROM cmbs WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def source_of(self, key: str) -> str | None:
        with self._cursor() as cur:
            row = cur.execute("SELECT source FROM cmbs WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _rows(self, sql: str, args: tuple) -> list[CMB]:
        with self._cursor() as cur:
            rows = cur.execute(sql, args).fetchall()
        return [CMB.from_wire(json.loads(r[0])) for r in rows]

    def recent_by_author(self, author: str, limit: int) -> list[CMB]:
        return self._rows(
            "SELECT body FROM cmbs WHERE created_by = ? ORDER BY received_at DESC, rowid DESC LIMIT ?",
            (author, limit),
        )

    def recent_in_group(self, group: str, limit: int, *, exclude_author: str | None = None) -> list[CMB]:
        return self._rows(
            "SELECT body FROM cmbs WHERE grp = ? AND created_by != ?"
            " ORDER BY received_at DESC, rowid DESC LIMIT ?",
            (group, exclude_author or "", limit),
        )

    def admission_view(self, key: str, group: str, limit: int) -> tuple[StoredCMB, list[StoredCMB]] | None:
        """The CMB `key` and its anchors: the `limit` most recent CMBs of `group` stored before it,
        newest first. The same answer however late it is asked (until retention prunes); None when
        `key` is not stored."""
        with self._lock:
            if not self.anchors.loaded(group):
                rows = self._stored_rows(
                    "WHERE grp = ? ORDER BY rowid DESC LIMIT ?", (group, self.anchors.capacity)
                )
                self.anchors.load(group, rows, complete=len(rows) < self.anchors.capacity)
            trigger = self.anchors.find(group, key)
            if trigger is None:
                found = self._stored_rows("WHERE key = ?", (key,))
                if not found:
                    return None
                trigger = found[0]
            anchors = self.anchors.before(group, trigger.seq, limit)
            if anchors is None:
                anchors = self._stored_rows(
                    "WHERE grp = ? AND rowid < ? ORDER BY rowid DESC LIMIT ?", (group, trigger.seq, limit)
                )
        return trigger, anchors

    def _stored_rows(self, where: str, args: tuple) -> list[StoredCMB]:
        with self._cursor() as cur:
            rows = cur.execute(f"SELECT rowid, received_at, body FROM cmbs {where}", args).fetchall()
        return [StoredCMB(seq, at, CMB.from_wire(json.loads(body))) for seq, at, body in rows]

    def lineage(self, key: str, depth: int) -> list[tuple[int, CMB]]:
        """Ancestors of `key` breadth-first to `depth`, nearest first; unknown keys skipped."""
        start = self.get(key)
        if start is None or depth <= 0:
            return []
        seen = {key}
        frontier = list(start.parents or start.ancestors)
        found: list[tuple[int, CMB]] = []
        for level in range(1, depth + 1):
            next_frontier: list[str] = []
            for k in frontier:
                if k in seen:
                    continue
                seen.add(k)
                cmb = self.get(k)
                if cmb is None:
                    continue
                found.append((level, cmb))
                next_frontier.extend(cmb.parents)
            frontier = next_frontier
            if not frontier:
                break
        return found

    def inbound_since(self, since_ms: int) -> list[tuple[str, str]]:
        """(key, author) of CMBs received from other nodes since `since_ms`, oldest first."""
        with self._cursor() as cur:
            rows = cur.execute(
                "SELECT key, created_by FROM cmbs WHERE source != 'own' AND received_at >= ?"
                " ORDER BY received_at, rowid",
                (since_ms,),
            ).fetchall()
        return [(k, a) for k, a in rows]

    def count(self) -> int:
        with self._cursor() as cur:
            return cur.execute("SELECT COUNT(*) FROM cmbs").fetchone()[0]

    def prune(self, now_ms: int | None = None) -> int:
        """Drop CMBs older than the retention period; returns how many went."""
        if not self.retention_days:
            return 0
        cutoff = (now_ms or clock.now_ms()) - int(self.retention_days * 86_400_000)
        with self._cursor() as cur:
            cur.execute("DELETE FROM cmbs WHERE received_at < ?", (cutoff,))
            if cur.rowcount:
                self.anchors.clear()  # reloaded from what is left on next use
            return cur.rowcount


def dumps_cmb(cmb: CMB) -> str:
    """The body column: the CMB in spec JSON, minified (the same text as json.dumps of to_wire).

    pydantic's serializer is ~3x faster than to_wire + json.dumps. It would write a NaN or an
    infinity in a vector as null, which would not read back, so CMBs with vectors take the slow path.
    """
    if any(f.vector for f in cmb.fields.values()):
        return json.dumps(cmb.to_wire(), separators=(",", ":"), ensure_ascii=False)
    return cmb.model_dump_json(by_alias=True, exclude_none=True)
