"""Soak accounting: after a run with crashes, prove no wake was lost, doubled, or left unexplained.

Read once the peers are stopped, from each peer's own files (its CMB store and wake ledger, opened
read-only) and from Temporal visibility (the Tally), plus what the demo's observer saw on the mesh:
- no lost wake: every CMB a peer stored during the run has a wake workflow or is still spooled;
- no duplicate emission: no wake emitted two CMBs, no CMB was emitted by two wakes, no peer answered
  the same trigger twice on the mesh;
- every wake accounted for: each closed with a known outcome and none is left running.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from xmesh_agent import paths
from xmesh_agent.demo.watch import Tally
from xmesh_agent.mmp.cmb import CMB
from xmesh_agent.wake.payloads import Outcome
from xmesh_agent.workers.client import wake_id

SHOWN = 5


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"  [{'ok' if self.ok else 'FAIL'}] {self.name}: {self.detail}"


def _rows(db: Path, sql: str, args: tuple = ()) -> list[tuple]:
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql, args).fetchall()
    except sqlite3.DatabaseError:
        return []
    finally:
        con.close()


@dataclass
class PeerFiles:
    """What one peer recorded during the run (since `since_ms`)."""

    name: str
    inbound: list[str]  # keys of CMBs it stored from others
    own_parents: dict[str, list[str]]  # trigger key -> keys of own CMBs answering it
    pending: set[str]
    emissions: dict[str, str]  # wake id -> emitted key

    @classmethod
    def read(cls, name: str, group: str, since_ms: int) -> PeerFiles:
        home = paths.peer_dir(name)
        cmbs, wakes = home / "cmbs.db", home / "wakes.db"
        sql = "SELECT key, source, body FROM cmbs WHERE grp = ? AND received_at >= ?"
        inbound: list[str] = []
        own: dict[str, list[str]] = defaultdict(list)
        for key, source, body in _rows(cmbs, sql, (group, since_ms)):
            if source != "own":
                inbound.append(key)
                continue
            try:
                parents = CMB.from_wire(json.loads(body)).parents
            except (ValueError, TypeError):
                parents = []
            own[",".join(parents) or "(root)"].append(key)
        pending = {k for (k,) in _rows(wakes, "SELECT cmb_key FROM pending")}
        emissions = dict(
            _rows(wakes, "SELECT wake_id, cmb_key FROM emissions WHERE emitted_at >= ?", (since_ms,))
        )
        return cls(name, inbound, dict(own), pending, emissions)


def _sample(items: list[str]) -> str:
    more = f" (+{len(items) - SHOWN} more)" if len(items) > SHOWN else ""
    return "; ".join(i[:120] for i in items[:SHOWN]) + more


def account(
    peers: list[str], group: str, since_ms: int, tally: Tally, observed: list[CMB], seeder: str
) -> list[Check]:
    """The three soak checks over the peers' files, visibility and the observer's view."""
    files = [PeerFiles.read(p, group, since_ms) for p in peers]
    known = set(tally.closed) | tally.running

    lost = [
        f"{f.name} holds {key}"
        for f in files
        for key in f.inbound
        if wake_id(f.name, key) not in known and key not in f.pending
    ]
    stored = sum(len(f.inbound) for f in files)
    spooled = sum(len(f.pending) for f in files)
    checks = [
        Check(
            "no lost wake",
            not lost,
            _sample(lost) if lost else f"{stored} stored CMBs, each woken or spooled ({spooled} spooled)",
        )
    ]

    doubled: list[str] = []
    for f in files:
        doubled += [
            f"{f.name} answered {t[:22]}… {len(ks)}×" for t, ks in f.own_parents.items() if len(ks) > 1
        ]
        by_key: dict[str, list[str]] = defaultdict(list)
        for wid, key in f.emissions.items():
            by_key[key].append(wid)
        doubled += [f"{f.name}: {k[:22]}… emitted by {len(w)} wakes" for k, w in by_key.items() if len(w) > 1]
        emitted = {
            wid for wid, row in tally.closed.items() if row.peer == f.name and row.outcome == "emitted"
        }
        doubled += [f"emitted with no ledger record: {wid}" for wid in emitted - set(f.emissions)]
    on_mesh: dict[tuple[str, tuple[str, ...]], set[str]] = defaultdict(set)
    for cmb in observed:
        if cmb.created_by != seeder:
            on_mesh[(cmb.created_by, tuple(cmb.parents))].add(cmb.key)
    doubled += [
        f"{a} sent {len(ks)} answers to {p[0][:22]}…" for (a, p), ks in on_mesh.items() if len(ks) > 1
    ]
    emissions = sum(len(f.emissions) for f in files)
    checks.append(
        Check(
            "no duplicate emission",
            not doubled,
            _sample(doubled) if doubled else f"{emissions} emissions, one CMB per wake, one wake per CMB",
        )
    )

    valid = {o.value for o in Outcome}
    odd = [
        f"closed as {row.outcome!r}: {wid}" for wid, row in tally.closed.items() if row.outcome not in valid
    ]
    odd += [f"still running: {wid}" for wid in sorted(tally.running)]
    counts = ", ".join(f"{k}={v}" for k, v in sorted(tally.by_outcome().items()))
    checks.append(
        Check(
            "every wake accounted for",
            not odd,
            _sample(odd) if odd else f"{len(tally.closed)} wakes: {counts or 'none'}",
        )
    )
    return checks
