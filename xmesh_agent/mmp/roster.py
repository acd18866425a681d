"""The node's live sessions, at most one per peer and transport (§4.6, §5.2), and what they owe each
other: the duplicate guard, connect/disconnect events, §5.6 gossip of newcomers and the §5.4 heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from xmesh_agent.mmp.connection import PeerInfo
from xmesh_agent.mmp.peering import Peering
from xmesh_agent.mmp.session import Session
from xmesh_agent.mmp.verify import Verifier

log = logging.getLogger(__name__)

_TRANSPORT_RANK = {"tcp": 0, "relay": 1}


def best(by_kind: dict[str, Session]) -> Session | None:
    """The handshaken session of one peer to send over: TCP before the relay."""
    live = [s for s in by_kind.values() if s.info is not None]
    return min(live, key=lambda s: _TRANSPORT_RANK[s.link.kind]) if live else None


class Roster:
    """Sessions by peer nodeId, then by transport. Waiters on `changed` hear every join and leave."""

    def __init__(self, verifier: Verifier, emit: Callable[[str, dict], None], changed: asyncio.Condition):
        self.sessions: dict[str, dict[str, Session]] = {}
        self._verifier = verifier
        self._emit = emit
        self._changed = changed

    def best_of(self, node_id: str) -> Session | None:
        return best(self.sessions.get(node_id, {}))

    def peers(self) -> list[PeerInfo]:
        """Connected, handshaken peers, one entry each, showing their best transport."""
        out = []
        for by_kind in self.sessions.values():
            chosen = best(by_kind)
            if chosen is not None and chosen.info is not None:
                out.append(chosen.info)
        return out

    def connected(self, node_id: str, kind: str | None = None) -> bool:
        by_kind = self.sessions.get(node_id, {})
        return bool(by_kind) if kind is None else kind in by_kind

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def register(self, session: Session) -> bool:
        info = session.info
        assert info is not None
        by_kind = self.sessions.setdefault(info.node_id, {})
        existing = by_kind.get(info.transport)
        if existing is not None:
            # §5.2 duplicate guard. When both sides dialed at once, keep the connection the smaller
            # nodeId dialed, so both ends keep the same one instead of each closing the other's.
            if not session.canonical or existing.canonical:
                return False
            by_kind[info.transport] = session
            await existing.link.close()
            return True
        first = not by_kind
        by_kind[info.transport] = session
        self._verifier.learn(info.node_id, info.name, info.public_key)
        if first:
            self._emit(
                "peer-connected",
                {
                    "nodeId": info.node_id,
                    "name": info.name,
                    "transport": info.transport,
                    "address": info.address,
                },
            )
        await self._notify()
        return True

    async def unregister(self, session: Session) -> None:
        info = session.info
        if info is None:
            return
        by_kind = self.sessions.get(info.node_id)
        if by_kind is None or by_kind.get(info.transport) is not session:
            return
        del by_kind[info.transport]
        if not by_kind:
            del self.sessions[info.node_id]
            self._emit("peer-disconnected", {"nodeId": info.node_id, "name": info.name})
        await self._notify()

    async def introduce(self, session: Session) -> None:
        """§5.6 gossip: tell the newcomer about the others, and the others about the newcomer."""
        assert session.info is not None
        new = session.info
        known = [s.info for s in (best(b) for b in self.sessions.values()) if s and s.info]
        others = [p for p in known if p.node_id != new.node_id]
        if others:
            await session.link.send(Peering.peer_info_frame(others))
        for peer in others:
            chosen = self.best_of(peer.node_id)
            if chosen is not None:
                await chosen.link.send(Peering.peer_info_frame([new]))


async def heartbeat(session: Session, ping_interval: float, heartbeat_timeout: float) -> None:
    """§5.4: ping after `ping_interval` of silence; close after `heartbeat_timeout`."""
    tick = max(0.01, min(ping_interval, heartbeat_timeout) / 4)
    while True:
        await asyncio.sleep(tick)
        now = time.monotonic()
        idle = now - session.last_rx
        if idle >= heartbeat_timeout:
            log.info("closing silent peer %s", session.info.name if session.info else "?")
            await session.link.close()
            return
        if idle >= ping_interval and now - session.last_ping >= ping_interval:
            session.last_ping = now
            await session.link.send({"type": "ping"})
