"""A peer on the embedded Temporal follows it: when the server goes away the peer says so (peer.json,
its log, `doctor`), and when it is started again, possibly on another port, the peer reconnects to
wherever the server's state file says it now is. A server back at the same address needs nothing:
the SDK's connection finds it by itself.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from temporalio.client import Client

from xmesh_agent.clock import now_ms
from xmesh_agent.workers import devserver
from xmesh_agent.workers.client import TemporalTarget, connect

if TYPE_CHECKING:
    from xmesh_agent.workers.telemetry import Telemetry


class Follower(Protocol):
    """What following needs of a peer (workers/peer.py's Peer)."""

    client: Client
    events: Any
    starter: Any

    def write_status(self, temporal_lost_since: int | None = None) -> None: ...

    def rebind(self, client: Client) -> None: ...


log = logging.getLogger("xmesh.peer")

FOLLOW_SECONDS = 1.0
HEALTH_TIMEOUT = timedelta(seconds=2)


async def _healthy(peer: Follower) -> bool:
    """The peer's Temporal answers a health check (an open port alone could be anything)."""
    try:
        return bool(await peer.client.service_client.check_health(timeout=HEALTH_TIMEOUT))
    except Exception:  # noqa: BLE001 - unreachable, refused, timed out: all mean lost
        return False


async def follow_server(peer: Follower, telemetry: Telemetry, interval: float = FOLLOW_SECONDS) -> None:
    lost_since: int | None = None
    while True:
        await asyncio.sleep(interval)
        address = peer.client.service_client.config.target_host
        info = await asyncio.to_thread(devserver.running_server)
        moved = info is not None and info.address != address
        if not moved and await _healthy(peer):
            if lost_since is not None:
                lost_since = None
                await asyncio.to_thread(devserver.take_lease)
                peer.events.event("temporal-back", {"address": address})
                peer.write_status()
                peer.starter.kick()
            continue
        if lost_since is None:
            lost_since = now_ms()
            log.warning(
                "the embedded Temporal at %s is gone; waiting for it (`xmesh-agent server` starts it)",
                address,
            )
            peer.events.event("temporal-lost", {"address": address}, level="warn")
            peer.write_status(lost_since)
        if not moved or info is None:
            continue
        try:
            client = await connect(
                TemporalTarget(address=info.address), telemetry.runtime, telemetry.interceptors
            )
        except RuntimeError as exc:
            log.info("the embedded Temporal at %s does not answer yet: %s", info.address, exc)
            continue
        await asyncio.to_thread(devserver.take_lease)
        peer.rebind(client)
        lost_since = None
        log.warning("the embedded Temporal moved from %s to %s; reconnected", address, info.address)
        peer.events.event("temporal-moved", {"from": address, "to": info.address})
        peer.write_status()
