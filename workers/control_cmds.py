"""What a running peer answers on its control socket: status, cost, trace, peers, stop.

One fixed dict maps command names to handlers; the peer hands it to its `ControlServer`, which looks
names up nowhere else.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from xmesh_agent.clock import now_ms
from xmesh_agent.wake.payloads import Outcome
from xmesh_agent.workers.control import ControlServer, Handler, peer_query
from xmesh_agent.workers.on_disk import lineage


def _peers(server: ControlServer) -> list[dict[str, str]]:
    return [
        {"name": p.name, "nodeId": p.node_id, "transport": p.transport, "address": p.address}
        for p in server.peer.node.peers()
    ]


def _cost(server: ControlServer) -> dict[str, Any]:
    env = server.peer.safety
    budget = env.cost.config
    return {
        **env.cost.totals(now_ms()).model_dump(),
        "caps": {
            "hour_usd": budget.max_cost_usd_per_hour,
            "day_usd": budget.max_cost_usd_per_day,
            "run_usd": budget.max_cost_usd_per_run,
        },
        "runId": env.run_id,
    }


async def _visibility_outcomes(server: ControlServer) -> dict[str, int] | None:
    """Lifetime wakes by outcome from Temporal visibility; None when Temporal does not answer quickly."""
    base = peer_query(server.peer)
    client = server.peer.client

    async def count(outcome: Outcome) -> tuple[str, int]:
        result = await client.count_workflows(f"{base} AND XmOutcome = '{outcome.value}'")
        return outcome.value, result.count

    try:
        pairs = await asyncio.wait_for(asyncio.gather(*(count(o) for o in Outcome)), 3.0)
    except Exception:
        return None
    return {k: v for k, v in pairs if v}


async def _awaiting_approval(server: ControlServer) -> list[dict[str, Any]] | None:
    """The peer's wakes held at an approval gate now, with what they hold; None when Temporal is slow."""
    from xmesh_agent.workers.approvals import waiting

    try:
        held = await asyncio.wait_for(waiting(server.peer.client, server.peer.config.name), 3.0)
    except Exception:
        return None
    return [w.as_json() for w in held]


async def cmd_status(server: ControlServer, req: dict[str, Any]) -> dict[str, Any]:
    """The peer at a glance; `brief` skips the Temporal visibility counts (for `watch`, every 2 s)."""
    peer, now = server.peer, now_ms()
    cfg = peer.config
    return {
        "peer": cfg.name,
        "state": server.state,
        "pid": os.getpid(),
        "uptimeSeconds": round(time.monotonic() - server.started_monotonic, 1),
        "nodeId": peer.identity.node_id,
        "port": peer.node.port,
        "group": cfg.group,
        "model": {"adapter": cfg.model.adapter, "name": cfg.model.model_name},
        "peers": _peers(server),
        "budget": {
            "counts": peer.safety.budget.counts(now).model_dump(),
            "limits": peer.safety.budget.limits.model_dump(),
        },
        "breaker": peer.safety.breaker.snapshot(now).model_dump(),
        "fallback": [
            {"model": m.label, "breaker": b.snapshot(now).model_dump()}
            for m, b in zip(cfg.model.chain()[1:], peer.safety.fallback_breakers, strict=False)
        ],
        "cost": _cost(server),
        "wakes": {
            "seenThisRun": dict(server.seen),
            "inFlight": len(server.in_flight()),
            "visibility": None if req.get("brief") else await _visibility_outcomes(server),
        },
        "awaiting_approval": await _awaiting_approval(server),
        "log": str(peer.events.path),
    }


async def cmd_cost(server: ControlServer, _req: dict[str, Any]) -> dict[str, Any]:
    return {"peer": server.peer.config.name, **_cost(server)}


async def cmd_peers(server: ControlServer, _req: dict[str, Any]) -> dict[str, Any]:
    p = server.peer
    return {
        "peer": p.config.name,
        "group": p.config.group,
        "nodeId": p.identity.node_id,
        "peers": _peers(server),
    }


async def cmd_trace(server: ControlServer, req: dict[str, Any]) -> dict[str, Any]:
    return lineage(server.peer.store, req.get("key"), server.peer.config.name)


async def cmd_stop(server: ControlServer, _req: dict[str, Any]) -> dict[str, Any]:
    """Accept at once; drain and stop in the background (the reply must not wait for the drain)."""
    server.begin_stop("stop command")
    return {"accepted": True, "peer": server.peer.config.name, "inFlight": len(server.in_flight())}


HANDLERS: dict[str, Handler] = {
    "status": cmd_status,
    "cost": cmd_cost,
    "trace": cmd_trace,
    "peers": cmd_peers,
    "stop": cmd_stop,
}
