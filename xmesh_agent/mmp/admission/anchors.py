"""What an admission compares against: per group, the peer's most recent stored CMBs in store order.

SVAF's anchors for an inbound CMB are the group's CMBs the peer held when that CMB was stored: the
`limit` most recent with a smaller store sequence number (the SQLite rowid, which only grows while
the table holds rows). Not the most recent at the time the wake runs: then two blocks arriving
together would each be the other's baseline, and a wake started late, or replayed, would decide on
whatever arrived meanwhile. With the store-order rule the same arrival sequence gives the same
decisions however wakes are scheduled.

`AnchorWindow` keeps, per group, the last `capacity` stored CMBs in memory (appended by
`CMBStore.put`), each with the unit vectors an encoder made of it, so an admission runs no SQL and
parses no JSON. When it cannot answer (never loaded, or the trigger is older than what it still
holds) the store answers with the same rule in SQL. No numpy and no encoder here: the node imports
the store, and the vectors are filled in by `encoder.admit_stored`.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from xmesh_agent.mmp.cmb import CMB

WINDOW_CAPACITY = 512
"""Stored CMBs held per group (at least; up to twice as many between trims): a wake may start this
many arrivals minus its 50 anchors late and still be answered from memory (later ones read SQLite).
Each holds its CMB and its field vectors (~4 KiB per field, shared with the encoder's text cache)."""


@dataclass(eq=False)
class StoredCMB:
    """One stored CMB as admission sees it: its store sequence number, arrival time and vectors."""

    seq: int
    received_at: int
    cmb: CMB
    vectors: dict[str, Any] = field(default_factory=dict)
    """encoder kernel id -> {field -> UnitVector} of the fields that carry content (filled lazily)."""


@dataclass
class _Group:
    entries: list[StoredCMB] = field(default_factory=list)
    by_key: dict[str, StoredCMB] = field(default_factory=dict)
    complete: bool = False
    """True while `entries` starts at the group's oldest stored CMB (nothing older was dropped)."""


class AnchorWindow:
    """Per group, the last `capacity` stored CMBs in store order. Callers hold the store's lock."""

    def __init__(self, capacity: int = WINDOW_CAPACITY):
        self.capacity = max(1, capacity)
        self._groups: dict[str, _Group] = {}

    def loaded(self, group: str) -> bool:
        return group in self._groups

    def load(self, group: str, newest_first: list[StoredCMB], complete: bool) -> None:
        """Start holding `group` from the store's rows (its most recent, newest first)."""
        g = _Group(complete=complete)
        for entry in reversed(newest_first):
            g.entries.append(entry)
            g.by_key[entry.cmb.key] = entry
        self._groups[group] = g

    def stored(self, entry: StoredCMB) -> None:
        """A CMB was just stored (its seq is the largest yet): append it if its group is held."""
        g = self._groups.get(entry.cmb.group or "")
        if g is None:
            return
        g.entries.append(entry)
        g.by_key[entry.cmb.key] = entry
        if len(g.entries) > 2 * self.capacity:  # trim in halves: amortised O(1) per put
            for old in g.entries[: -self.capacity]:
                if g.by_key.get(old.cmb.key) is old:
                    del g.by_key[old.cmb.key]
            del g.entries[: -self.capacity]
            g.complete = False

    def find(self, group: str, key: str) -> StoredCMB | None:
        g = self._groups.get(group)
        return g.by_key.get(key) if g else None

    def before(self, group: str, seq: int, limit: int) -> list[StoredCMB] | None:
        """The `limit` most recent entries of `group` stored before `seq`, newest first; None when
        the window cannot tell (not held, or older entries were dropped and fewer than `limit` left)."""
        g = self._groups.get(group)
        if g is None:
            return None
        end = bisect.bisect_left(g.entries, seq, key=lambda e: e.seq)
        if end < limit and not g.complete:
            return None
        return g.entries[max(0, end - limit) : end][::-1]

    def clear(self) -> None:
        """Forget everything (rows were deleted or a write rolled back): reload on next use."""
        self._groups.clear()
