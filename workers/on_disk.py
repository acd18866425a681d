"""What a peer leaves on disk, read without its process: `status`, `cost` and `trace` of a stopped peer.

A peer's state outlives it under ~/.xmesh/peers/<name>/: safety.db (wake budget, cost ledger, model
breakers), wakes.db (the spool of CMBs waiting for the next start), cmbs.db (its CMB store), peer.log,
and last-run.json: what its last run was (group, node id, model, budget), written at start and stamped
with `stopped_at` at a clean stop. Only files that exist are opened; nothing is created for a name
that never ran.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from xmesh_agent import paths
from xmesh_agent.clock import now_ms
from xmesh_agent.config import AgentConfig, BudgetConfig
from xmesh_agent.mmp.cmb import CAT7, NEUTRAL
from xmesh_agent.mmp.store import CMBStore
from xmesh_agent.safety import CircuitBreaker, CostLedger, WakeBudget
from xmesh_agent.wake.ledger import WakeLedger

TRACE_MAX_DEPTH = 20
TRACE_MAX_NODES = 500
STATE_FILES = ("last-run.json", "safety.db", "cmbs.db", "wakes.db")


class NoSuchPeer(LookupError):
    """No peer of this name ever ran on this machine (nothing under its peer directory)."""


def last_run_path(peer: str) -> Path:
    return paths.peer_dir(peer) / "last-run.json"


def record_start(config: AgentConfig, node_id: str, port: int, run_id: str, log: Path) -> None:
    """At start: what `status` of this peer shows once it has stopped."""
    data = {
        "peer": config.name,
        "group": config.group,
        "node_id": node_id,
        "port": port,
        "model": {"adapter": config.model.adapter, "name": config.model.model_name},
        "fallback": [m.label for m in config.model.chain()[1:]],
        "budget": config.budget.model_dump(),
        "run_id": run_id,
        "started_at": now_ms(),
        "stopped_at": None,
        "log": str(log),
    }
    last_run_path(config.name).write_text(json.dumps(data, indent=2))


def record_stop(peer: str) -> None:
    data = read_last_run(peer)
    if data:
        data["stopped_at"] = now_ms()
        with contextlib.suppress(OSError):
            last_run_path(peer).write_text(json.dumps(data, indent=2))


def read_last_run(peer: str) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(last_run_path(peer).read_text())
        if isinstance(data, dict):
            return data
    return {}


def has_run(peer: str) -> bool:
    home = paths.peer_dir(peer)
    return not paths.is_observer(peer) and any((home / name).exists() for name in STATE_FILES)


def local_peers() -> list[str]:
    """Every peer that ever ran under this xmesh home, running or not, by name."""
    root = paths.xmesh_home() / "peers"
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if d.is_dir() and has_run(d.name))


def _require(peer: str) -> Path:
    if not has_run(peer):
        raise NoSuchPeer(peer)
    return paths.peer_dir(peer)


def _budget(last: dict[str, Any]) -> BudgetConfig | None:
    with contextlib.suppress(Exception):
        return BudgetConfig(**last["budget"])
    return None


def cost(peer: str) -> dict[str, Any]:
    """The cost ledger as the peer's last run left it; "run" is that last run."""
    home, last = _require(peer), read_last_run(peer)
    budget = _budget(last)
    totals: dict[str, Any] = {}
    if (home / "safety.db").exists():
        with CostLedger(home / "safety.db", budget, run_id=last.get("run_id") or "") as ledger:
            totals = ledger.totals(now_ms()).model_dump()
    return {
        "peer": peer,
        "state": "stopped",
        **(totals or dict.fromkeys(("hour_usd", "day_usd", "run_usd", "lifetime_usd"), 0.0)),
        **({} if totals else dict.fromkeys(("calls", "unknown_calls", "run_calls", "run_unknown_calls"), 0)),
        "caps": {
            "hour_usd": budget.max_cost_usd_per_hour if budget else None,
            "day_usd": budget.max_cost_usd_per_day if budget else None,
            "run_usd": budget.max_cost_usd_per_run if budget else None,
        },
        "run_id": last.get("run_id"),
    }


def status(peer: str) -> dict[str, Any]:
    """The peer at a glance from its files: last run, wake budget windows, breakers, cost, spool."""
    home, last = _require(peer), read_last_run(peer)
    budget, now = _budget(last), now_ms()
    out: dict[str, Any] = {
        "peer": peer,
        "state": "stopped",
        "node_id": last.get("node_id") or _node_id(peer),
        "group": last.get("group"),
        "model": last.get("model"),
        "last_run": {
            "run_id": last.get("run_id"),
            "started_at": last.get("started_at"),
            "stopped_at": last.get("stopped_at"),
            "port": last.get("port"),
        },
        "budget": None,
        "breaker": None,
        "fallback": [],
        "cost": cost(peer),
        "wakes": None,
        "store": None,
        "log": last.get("log") or str(home / "peer.log"),
    }
    if (home / "safety.db").exists():
        with WakeBudget(home / "safety.db", budget) as wb:
            out["budget"] = {
                "counts": wb.counts(now).model_dump(),
                "limits": wb.limits.model_dump() if budget else None,
            }
        with CircuitBreaker(home / "safety.db") as breaker:
            out["breaker"] = breaker.snapshot(now).model_dump()
        for label in last.get("fallback") or []:
            with CircuitBreaker(home / "safety.db", f"model:{label}") as breaker:
                out["fallback"].append({"model": label, "breaker": breaker.snapshot(now).model_dump()})
    if (home / "wakes.db").exists():
        ledger = WakeLedger(home / "wakes.db")
        try:
            counts = ledger.counts()
        finally:
            ledger.close()
        out["wakes"] = {
            "spooled": counts["pending"],
            "woken": counts["woken"],
            "emitted": counts["emissions"],
        }
    if (home / "cmbs.db").exists():
        store = CMBStore(home / "cmbs.db")
        try:
            out["store"] = {"cmbs": store.count()}
        finally:
            store.close()
    return out


def _node_id(peer: str) -> str | None:
    from xmesh_agent.identity import load_identity

    with contextlib.suppress(Exception):
        identity = load_identity(peer)
        return identity.node_id if identity else None
    return None


def trace(peer: str, key: Any) -> dict[str, Any]:
    """A CMB's lineage from the stopped peer's store."""
    home = _require(peer)
    if not (home / "cmbs.db").exists():
        raise LookupError(f"{peer} has no CMB store yet")
    store = CMBStore(home / "cmbs.db")
    try:
        return lineage(store, key, peer)
    finally:
        store.close()


def read(cmd: str, peer: str, **args: Any) -> dict[str, Any]:
    """The stopped peer's answer to a read command of the control socket (status, cost, trace)."""
    if cmd == "trace":
        return trace(peer, args.get("key"))
    return {"status": status, "cost": cost}[cmd](peer)


def carrying_text(cmb: Any) -> str:
    """The text that says what a CMB is about: focus, else the first CAT7 field that carries one,
    named (`commitment: I will review the limiter`) when it is not focus."""
    for name in CAT7:
        text = cmb.text(name)
        if text and text.strip().casefold() != NEUTRAL:
            return text if name == "focus" else f"{name}: {text}"
    return ""


def lineage(store: CMBStore, key: Any, peer: str) -> dict[str, Any]:
    """Lineage of a CMB: breadth-first through parents, depth <= 20; unknown parents shown as missing."""
    if not isinstance(key, str) or not key or len(key) > 200:
        raise LookupError("trace needs a CMB key")
    if store.get(key) is None:
        raise LookupError(f"unknown CMB key {key!r}: not in {peer}'s store")
    nodes: dict[str, dict[str, Any]] = {}
    frontier, depth = [key], 0
    while frontier and depth <= TRACE_MAX_DEPTH and len(nodes) < TRACE_MAX_NODES:
        following: list[str] = []
        for k in frontier:
            if k in nodes:
                continue
            cmb = store.get(k)
            if cmb is None:
                nodes[k] = {"key": k, "depth": depth, "missing": True, "parents": []}
                continue
            nodes[k] = {
                "key": k,
                "depth": depth,
                "missing": False,
                "created_by": cmb.created_by,
                "created_at": cmb.created_at,
                "summary": carrying_text(cmb)[:120],
                "parents": list(cmb.parents),
            }
            following.extend(p for p in cmb.parents if p not in nodes)
        frontier, depth = following, depth + 1
    return {
        "root": key,
        "max_depth": TRACE_MAX_DEPTH,
        "truncated": bool(frontier),
        "nodes": list(nodes.values()),
    }
