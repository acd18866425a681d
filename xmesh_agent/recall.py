"""Recall: search what peers hold, running or stopped, ranked by each peer's own SVAF field encoder.

The store is only read (see lookup.py). Full-text candidates come from a side index next to the
store (`recall-index.db`, SQLite FTS5 over the seven field texts, keyed by the store's rowid): it
is brought up to date from the store's new rows on every recall, so the peer never writes it and
a recall over 100,000 CMBs reads a few hundred rows, not all of them (the newest that carry all
the query's words, then any of them). The candidates are then ranked by the peer's encoder: the cosine of the query against each field, weighted by the peer's
α (the same vectors SVAF compares). An empty query lists the newest CMBs.

A peer writes its encoder and weights to `profile.json` when it starts (`save_profile`), so a
stopped peer is still searched the way it would judge.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xmesh_agent import paths
from xmesh_agent.durations import parse_since as since_time
from xmesh_agent.lookup import StoreReader
from xmesh_agent.mmp.cmb import CAT7, CMB, NEUTRAL
from xmesh_agent.roles import preset_weights

INDEX_FILE = "recall-index.db"
PROFILE_FILE = "profile.json"
CANDIDATES = 200
"""Full-text candidates re-ranked by the encoder per peer."""
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_FIELD_SQL = " || ' ' || ".join(f"coalesce(json_extract(body, '$.fields.{f}.text'), '')" for f in CAT7)


class RecallError(ValueError):
    """Bad input (an unreadable --since), one line."""


@dataclass
class Hit:
    cmb: CMB
    peers: list[str]
    """Every searched peer that holds it."""
    received_at: int
    score: float | None = None

    def to_json(self) -> dict[str, Any]:
        mood = self.cmb.fields.get("mood")
        out: dict[str, Any] = {
            "key": self.cmb.key,
            "author": self.cmb.created_by,
            "created_at": self.cmb.created_at,
            "parents": self.cmb.parents,
            "fields": self.cmb.texts(),
            "group": self.cmb.group,
            "to": self.cmb.to,
            "held_by": self.peers,
            "score": None if self.score is None else round(self.score, 4),
        }
        if mood is not None and (mood.valence is not None or mood.arousal is not None):
            out["mood"] = {"valence": mood.valence, "arousal": mood.arousal}
        return out


@dataclass
class Query:
    text: str = ""
    group: str | None = None
    author: str | None = None
    since_ms: int | None = None
    limit: int = 10
    candidates: int = CANDIDATES
    parent: str | None = None
    """Only CMBs that answer this key (it is among their lineage parents)."""


# -- the peer's profile --------------------------------------------------------------------------


def profile_path(peer: str) -> Path:
    return paths.peer_dir(peer) / PROFILE_FILE


def save_profile(peer: str, encoder: str, weights: Mapping[str, float], group: str) -> None:
    """What recall needs to rank the way this peer judges (written by the peer at start)."""
    data = {"peer": peer, "encoder": encoder, "weights": dict(weights), "group": group}
    path = profile_path(peer)
    paths.ensure_dir(path.parent)
    path.write_text(json.dumps(data, indent=2) + "\n")


def load_profile(peer: str) -> dict[str, Any]:
    try:
        data = json.loads(profile_path(peer).read_text())
    except (OSError, ValueError):
        data = {}
    weights = data.get("weights") if isinstance(data.get("weights"), dict) else None
    return {
        "encoder": data.get("encoder") if data.get("encoder") in ("lexical", "semantic") else "lexical",
        "weights": weights or preset_weights("generic"),
    }


# -- input ---------------------------------------------------------------------------------------


def parse_since(text: str, now: datetime | None = None) -> int:
    """`--since` (`durations.parse_since`) as epoch ms."""
    try:
        return int(since_time(text, now).timestamp() * 1000)
    except ValueError as exc:
        raise RecallError(str(exc)) from None


def query_terms(text: str) -> list[str]:
    from xmesh_agent.mmp.admission.encoder import _STOPWORDS

    words = [w for w in _WORD.findall(text.casefold())]
    content = [w for w in words if w not in _STOPWORDS]
    return list(dict.fromkeys(content or words))


# -- the side index ------------------------------------------------------------------------------


class RecallIndex:
    """FTS5 over the field texts of one peer's store, keyed by store rowid; caught up on open."""

    def __init__(self, reader: StoreReader, path: Path | str | None = None):
        """`path`: where the index lives (default beside the store; ":memory:" builds one per call)."""
        self.reader = reader
        path = path or reader.path.with_name(INDEX_FILE)
        self.db = sqlite3.connect(str(path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(
            "CREATE VIRTUAL TABLE IF NOT EXISTS texts USING fts5(body, content='', "
            "tokenize='unicode61 remove_diacritics 2');"
            "CREATE TABLE IF NOT EXISTS state (id INTEGER PRIMARY KEY CHECK (id = 1), watermark INTEGER);"
        )
        self.db.execute("ATTACH DATABASE ? AS store", (f"file:{reader.path}?mode=ro",))

    def close(self) -> None:
        self.db.close()

    def catch_up(self) -> int:
        """Index the store's rows added since the last recall; returns how many."""
        row = self.db.execute("SELECT watermark FROM state WHERE id = 1").fetchone()
        mark = row[0] if row else 0
        top = self.db.execute("SELECT coalesce(max(rowid), 0) FROM store.cmbs").fetchone()[0]
        if top < mark:  # the store was emptied or replaced: start over
            self.db.execute("DELETE FROM texts")
            mark = 0
        if top == mark:
            return 0
        self.db.execute("BEGIN")
        cur = self.db.execute(
            f"INSERT INTO texts (rowid, body) SELECT rowid, {_FIELD_SQL} FROM store.cmbs WHERE rowid > ?",
            (mark,),
        )
        added = cur.rowcount
        self.db.execute("INSERT OR REPLACE INTO state (id, watermark) VALUES (1, ?)", (top,))
        self.db.execute("COMMIT")
        return added

    def candidates(self, terms: list[str], query: Query) -> list[tuple[int, str, int]]:
        """(rowid, body, received_at) of the newest full-text matches that pass the filters.

        CMBs carrying every term come first, then (when they are too few) those carrying any. Both
        walk the index newest first and stop at `query.candidates`, so a common word in a large
        store costs no more than a rare one; the encoder ranks what they found.
        """
        quoted = ['"' + t.replace('"', '""') + '"*' for t in terms]
        where, args = _filters(query, "c.")
        sql = (
            "SELECT c.rowid, c.body, c.received_at FROM texts JOIN store.cmbs c ON c.rowid = texts.rowid "
            f"WHERE texts MATCH ? {where} ORDER BY texts.rowid DESC LIMIT ?"
        )
        found = self.db.execute(sql, (" AND ".join(quoted), *args, query.candidates)).fetchall()
        if len(quoted) > 1 and len(found) < query.candidates:
            seen = {row[0] for row in found}
            more = self.db.execute(sql, (" OR ".join(quoted), *args, query.candidates)).fetchall()
            found += [row for row in more if row[0] not in seen][: query.candidates - len(found)]
        return found


def _filters(query: Query, prefix: str = "") -> tuple[str, list[Any]]:
    parts, args = [], []
    if query.group:
        parts.append(f"{prefix}grp = ?")
        args.append(query.group)
    if query.author:
        parts.append(f"{prefix}created_by = ?")
        args.append(query.author)
    if query.since_ms is not None:
        parts.append(f"{prefix}created_at >= ?")
        args.append(query.since_ms)
    if query.parent:
        parts.append(f"EXISTS (SELECT 1 FROM json_each({prefix}body, '$.lineage.parents') WHERE value = ?)")
        args.append(query.parent)
    return "".join(f" AND {p}" for p in parts), args


def newest(reader: StoreReader, query: Query) -> list[Hit]:
    where, args = _filters(query)
    rows = reader.db.execute(
        f"SELECT body, received_at FROM cmbs WHERE 1 = 1 {where} ORDER BY rowid DESC LIMIT ?",
        (*args, query.limit),
    ).fetchall()
    return [Hit(CMB.from_wire(json.loads(body)), [reader.peer], at) for body, at in rows]


def _candidates(index: RecallIndex, terms: list[str], query: Query) -> list[tuple[int, str, int]]:
    try:
        index.catch_up()
        return index.candidates(terms, query)
    finally:
        index.close()


def _carries(text: str) -> bool:
    return bool(text.strip()) and text.strip().casefold() != NEUTRAL


def rank(reader: StoreReader, query: Query) -> list[Hit]:
    """The peer's best matches for `query.text`, scored by its encoder (0..1, higher is closer)."""
    terms = query_terms(query.text)
    if not terms:
        return newest(reader, query)
    try:
        rows = _candidates(RecallIndex(reader), terms, query)
    except sqlite3.OperationalError:  # the peer's directory is not ours to write: index in memory
        rows = _candidates(RecallIndex(reader, ":memory:"), terms, query)
    profile = load_profile(reader.peer)
    encoder = _encoder(profile["encoder"])
    weights = profile["weights"]
    q = _vector(encoder, query.text)
    hits = []
    for _rowid, body, at in rows:
        cmb = CMB.from_wire(json.loads(body))
        total, mass = 0.0, 0.0
        for name in CAT7:
            text = cmb.text(name)
            if not _carries(text):
                continue
            vec = _vector(encoder, text)
            alpha = float(weights.get(name, 1.0))
            if q is not None and vec is not None and vec.shape == q.shape:
                total += alpha * max(0.0, float(q @ vec))
            mass += alpha
        hits.append(Hit(cmb, [reader.peer], at, total / mass if mass else 0.0))
    hits.sort(key=lambda h: (-(h.score or 0.0), -h.received_at))
    return hits[: query.limit]


def _vector(encoder: Any, text: str) -> Any:
    """The unit vector (numpy) of `text`, or None when it has no words."""
    import numpy as np

    unit = getattr(encoder, "unit", None)
    if callable(unit):
        found = unit(text)
        return None if found is None else found.array
    vec = np.asarray(encoder.encode(text), dtype=np.float64)
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm else None


def _encoder(name: str) -> Any:
    from xmesh_agent.mmp.admission.semantic import encoder_named

    return encoder_named(name)


def recall(readers: list[StoreReader], query: Query) -> list[Hit]:
    """Search every reader's store; a CMB several peers hold is one hit naming them all."""
    merged: dict[str, Hit] = {}
    for reader in readers:
        for hit in rank(reader, query):
            seen = merged.get(hit.cmb.key)
            if seen is None:
                merged[hit.cmb.key] = hit
            else:
                seen.peers.append(reader.peer)
                if (hit.score or 0.0) > (seen.score or 0.0):
                    seen.score = hit.score
    hits = list(merged.values())
    if query.text.strip() and query_terms(query.text):
        hits.sort(key=lambda h: (-(h.score or 0.0), -h.received_at))
    else:
        hits.sort(key=lambda h: -h.received_at)
    return hits[: query.limit]


def when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def now_ms() -> int:
    return int(time.time() * 1000)
