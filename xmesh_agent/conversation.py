"""A group's conversation as people read it: one block per CMB, and how local peers' wakes ended.

What is said comes from a store on disk (`StoreFollower`: any peer's `cmbs.db`, running or stopped,
read by store order) or straight from an observer node; how a wake ended comes from the local peers'
event logs (`OutcomeFollower`), which `tail` and the MCP server read as they grow.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from xmesh_agent import paths
from xmesh_agent.mmp.cmb import CAT7, CMB, NEUTRAL

SHORT_KEY = 17
"""`cmb1-` and 12 hex: how the demo prints a key, and a prefix `show`/`trace` accept."""


def short(key: str) -> str:
    return key[:SHORT_KEY]


def spoken(cmb: CMB) -> dict[str, str]:
    """The fields that carry text (not empty, not the minted "neutral"), in CAT7 order."""
    return {f: t for f in CAT7 if (t := cmb.text(f).strip()) and t != NEUTRAL}


@dataclass(frozen=True)
class Said:
    """One CMB as the conversation shows it: the block, where it was stored, and when it arrived."""

    cmb: CMB
    received_at: int | None = None
    source: str | None = None

    def as_json(self) -> dict[str, Any]:
        cmb = self.cmb
        out: dict[str, Any] = {
            "kind": "cmb",
            "key": cmb.key,
            "author": cmb.created_by,
            "created_at": cmb.created_at,
            "received_at": self.received_at,
            "group": cmb.group,
            "to": cmb.to,
            "parents": cmb.parents,
            "fields": cmb.texts(),
        }
        mood = cmb.fields.get("mood")
        if mood is not None and (mood.valence is not None or mood.arousal is not None):
            out["mood_affect"] = {"valence": mood.valence, "arousal": mood.arousal}
        return out


@dataclass(frozen=True)
class Woke:
    """How a local peer's wake on one CMB ended (or where it waits), as its event log says."""

    peer: str
    cmb_key: str
    outcome: str
    reply: str | None = None
    reason: str | None = None
    at: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": "wake",
            "peer": self.peer,
            "cmb": self.cmb_key,
            "outcome": self.outcome,
            "reply": self.reply,
            "reason": self.reason,
            "at": self.at,
        }


def _clock(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%H:%M:%S") if ms else "--:--:--"


def render_said(said: Said, outcomes: list[Woke] = ()) -> str:  # type: ignore[assignment]
    """`[12:03:04] writer-01 -> all  cmb1-3f2a9c1b0d4e  re cmb1-…` then one line per field with text."""
    cmb = said.cmb
    audience = cmb.to or "all"
    head = f"[{_clock(cmb.created_at)}] {cmb.created_by} -> {audience}  {short(cmb.key)}"
    if cmb.parents:
        head += "  re " + ", ".join(short(p) for p in cmb.parents)
    fields = spoken(cmb)
    width = max((len(f) for f in fields), default=0)
    lines = [head]
    lines += [f"  {f.ljust(width)}  {t}" for f, t in fields.items()] or ["  (every field neutral)"]
    lines += [f"  {render_woke(w)}" for w in outcomes]
    return "\n".join(lines)


def render_woke(woke: Woke) -> str:
    line = f"{woke.peer} woke on {short(woke.cmb_key)}: {woke.outcome}"
    if woke.reply:
        line += f" -> {short(woke.reply)}"
    if woke.reason and woke.outcome != "emitted":
        line += f" ({woke.reason})"
    return line


class StoreFollower:
    """New rows of a CMB store, in store order, read-only (the owning peer may be running)."""

    def __init__(self, path: Path):
        if not path.exists():
            raise FileNotFoundError(path)
        self.path = path
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self.last = 0

    def close(self) -> None:
        self._db.close()

    def recent(
        self, *, limit: int | None = None, since_ms: int | None = None, group: str | None = None
    ) -> list[Said]:
        """History before following: the last `limit` rows, or rows stored since `since_ms`; sets the cursor."""
        where, args = [], []
        if since_ms is not None:
            where.append("received_at >= ?")
            args.append(since_ms)
        if group is not None:
            where.append("grp = ?")
            args.append(group)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT rowid, received_at, source, body FROM cmbs {clause} ORDER BY rowid DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self._db.execute(sql, args).fetchall()
        self.last = self._max_rowid()
        return [self._said(r) for r in reversed(rows)]

    def skip_to_end(self) -> None:
        self.last = self._max_rowid()

    def _max_rowid(self) -> int:
        return self._db.execute("SELECT COALESCE(MAX(rowid), 0) FROM cmbs").fetchone()[0]

    def poll(self, group: str | None = None, batch: int = 5000) -> list[Said]:
        rows = self._db.execute(
            "SELECT rowid, received_at, source, body FROM cmbs WHERE rowid > ? ORDER BY rowid LIMIT ?",
            (self.last, batch),
        ).fetchall()
        if rows:
            self.last = rows[-1][0]
        out = [self._said(r) for r in rows]
        return [s for s in out if group is None or s.cmb.group == group]

    @staticmethod
    def _said(row: tuple) -> Said:
        _, received_at, source, body = row
        return Said(CMB.from_wire(json.loads(body)), received_at, source)


_OUTCOME_EVENTS = {"rejected", "suppressed", "emitted", "approval-requested"}


class _LogTail:
    """Lines appended to one JSONL file since the last read; starts over when the file is rotated."""

    def __init__(self, path: Path, from_start: bool):
        self.path = path
        self._inode: int | None = None
        self._offset = 0
        self._from_start = from_start
        self._partial = b""

    def read(self) -> list[str]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []
        if self._inode != st.st_ino or st.st_size < self._offset:
            first = self._inode is None
            self._inode, self._partial = st.st_ino, b""
            self._offset = 0 if (self._from_start or not first) else st.st_size
        if st.st_size == self._offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = self._partial + f.read()
            self._offset = f.tell()
        *lines, self._partial = data.split(b"\n")
        return [line.decode("utf-8", errors="replace") for line in lines if line]


def woke_from_log(peer: str, line: str) -> Woke | None:
    """The wake outcome a peer.log line tells, if it tells one."""
    try:
        record = json.loads(line)
        evt, data = record.get("evt"), record.get("data") or {}
    except (ValueError, AttributeError):
        return None
    if evt not in _OUTCOME_EVENTS or not isinstance(data, dict):
        return None
    at = record.get("ts")
    if evt == "rejected":
        key = data.get("cmb_key") or data.get("cmbKey")  # logs written before the snake_case keys
        return Woke(peer, key, "rejected", reason=data.get("reason"), at=at) if key else None
    key = _trigger_of(peer, str(data.get("wake_id") or data.get("wakeId") or ""))
    if not key:
        return None
    if evt == "emitted":
        return Woke(peer, key, "emitted", reply=data.get("key"), at=at)
    if evt == "approval-requested":
        return Woke(peer, key, "awaiting-approval", reason=data.get("reason"), at=at)
    return Woke(peer, key, str(data.get("outcome") or "suppressed"), reason=data.get("reason"), at=at)


def _trigger_of(peer: str, wake_id: str) -> str | None:
    prefix = f"wake-{peer}-"
    if not wake_id.startswith(prefix):
        return None
    key = wake_id[len(prefix) :]
    return key.split("-replay-", 1)[0]


def peers_of(group: str | None) -> list[str]:
    """Local peers (lookup.local_peers) that run in `group` (any, for None), or whose group is unknown
    (stopped)."""
    from xmesh_agent.lookup import local_peers

    found = []
    for name in local_peers():
        status = {}
        with contextlib.suppress(OSError, ValueError):
            status = json.loads((paths.peer_dir(name) / "peer.json").read_text())
        if group is None or status.get("group") in (group, None):
            found.append(name)
    return found


class OutcomeFollower:
    """Wake outcomes from the event logs of local peers; peers that appear later are picked up."""

    def __init__(self, group: str | None = None, peers: list[str] | None = None, history: bool = False):
        self.group = group
        self.fixed = peers
        self.history = history
        self._tails: dict[str, _LogTail] = {}
        self.known: dict[str, list[Woke]] = {}

    def _discover(self) -> None:
        from xmesh_agent.logs import default_log_path

        for peer in self.fixed if self.fixed is not None else peers_of(self.group):
            if peer not in self._tails:
                self._tails[peer] = _LogTail(default_log_path(peer), from_start=self.history)

    def poll(self) -> list[Woke]:
        self._discover()
        found = []
        for peer, tail in self._tails.items():
            for line in tail.read():
                woke = woke_from_log(peer, line)
                if woke is not None:
                    found.append(woke)
                    self.known.setdefault(woke.cmb_key, []).append(woke)
        return found
