"""What a peer took on trust at first sight, read and forgotten from its file (the operator's side of tofu).

A peer binds a nodeId to the first key that claims it, and under `tofu` pins a name to the first key
seen under it (`mmp/verify.py`). When a squatter got there first, the real owner is refused until the
operator forgets the entry; the next handshake then binds afresh. A running peer keeps what it has read,
so forgetting is done with the peer stopped.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class FirstSight:
    identity: str
    """A nodeId (lower case) or a name."""
    kind: Literal["node_id", "name"]
    public_key: bytes
    proven: bool
    """The key was proven by a signed handshake transcript (nodeIds only)."""
    bound_at_ms: int | None


def _tables(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _rows(db: sqlite3.Connection, tables: set[str], identity: str | None) -> list[FirstSight]:
    found: list[FirstSight] = []
    if "node_keys" in tables:
        where, args = ("WHERE node_id = ?", (identity.lower(),)) if identity else ("", ())
        found += [
            FirstSight(node_id, "node_id", bytes(key), bool(proven), bound_at)
            for node_id, key, proven, bound_at in db.execute(
                f"SELECT node_id, public_key, proven, bound_at FROM node_keys {where} ORDER BY bound_at", args
            )
        ]
    if "pins" in tables:
        where, args = ("WHERE name = ?", (identity,)) if identity else ("", ())
        found += [
            FirstSight(name, "name", bytes(key), False, None)
            for name, key in db.execute(f"SELECT name, public_key FROM pins {where} ORDER BY name", args)
        ]
    return found


def first_sights(db_path: Path) -> list[FirstSight]:
    """Every nodeId binding and name pin in a peer's verify file (none when it has no file yet)."""
    if not db_path.exists():
        return []
    with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        return _rows(db, _tables(db), None)


def forget(db_path: Path, identity: str) -> list[FirstSight]:
    """Forget the binding of a nodeId (any case) or the pin of a name, and that it signed before;
    returns what was forgotten (empty: nothing was known of it)."""
    if not db_path.exists():
        return []
    with closing(sqlite3.connect(str(db_path), isolation_level=None, timeout=15)) as db:
        db.execute("BEGIN IMMEDIATE")
        try:
            tables = _tables(db)
            gone = _rows(db, tables, identity)
            if "node_keys" in tables:
                db.execute("DELETE FROM node_keys WHERE node_id = ?", (identity.lower(),))
            if "pins" in tables:
                db.execute("DELETE FROM pins WHERE name = ?", (identity,))
            if "signers" in tables:
                db.execute("DELETE FROM signers WHERE identity IN (?, ?)", (identity, identity.lower()))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    return gone
