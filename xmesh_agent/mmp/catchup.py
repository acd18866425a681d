"""Catching up after a cut: what a peer missed while the link was down reaches it when it comes back.

- **Replay on reconnect.** When a session with a peer we have talked to before is handshaken again,
  we resend our own CMBs created since we last heard from it (less a margin for frames in flight
  when the link died), oldest first, each frame marked `_anchor: true` as the stock node marks the
  recent blocks it replays to a peer. The receiver stores what it lacks, and wakes on it once; what
  it holds already is a duplicate and dropped. A peer never seen before gets no replay: joining a
  mesh does not wake a peer on its history.
- **cmb-fetch (§7).** A spec peer whose CMB names a parent we do not hold is asked for it
  (`cmb-fetch {reqId, key}`); a `cmb-fetch-result` is accepted only for a key we asked, with the
  content address recomputed and the signature checked like any inbound CMB. We answer fetches
  from our store. Other dialects neither ask nor are asked (their records are not spec CMBs).

The node owns one `CatchUp` and calls it at handshake, session end, delivery and for the two frames.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from xmesh_agent.clock import now_ms
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import CMB
from xmesh_agent.mmp.connection import PeerInfo
from xmesh_agent.mmp.session import Dialect, Session
from xmesh_agent.mmp.store import CMBStore
from xmesh_agent.mmp.verify import KnownKey, Verifier

log = logging.getLogger(__name__)

MAX_REPLAY = 256
"""At most this many of our CMBs are replayed to one peer on one reconnect (the newest ones)."""
REPLAY_MARGIN_MS = 10_000
"""Frames we sent shortly before the peer fell silent may have died with the link: resend those too."""
MAX_PENDING_FETCHES = 64
MAX_PENDING_PER_PEER = 8
FETCH_EXPIRY_SECONDS = 30.0
"""An unanswered fetch is forgotten after this long (a peer that never answers cannot use up the slots)."""

FrameFor = Callable[[CMB, Session], dict[str, Any] | None]
Emit = Callable[[str, dict], None]
Deliver = Callable[[CMB, PeerInfo], Awaitable[None]]


class CatchUp:
    def __init__(
        self,
        identity: NodeIdentity,
        group: str,
        store: CMBStore,
        verifier: Verifier,
        *,
        frame_for: FrameFor,
        emit: Emit,
        deliver: Deliver,
    ):
        self.identity = identity
        self.group = group
        self.store = store
        self.verifier = verifier
        self._frame_for = frame_for
        self._emit = emit
        self._deliver = deliver
        self._last_heard: dict[str, int] = {}  # nodeId -> wall-clock ms we last heard from it
        self._fetches: dict[str, tuple[str, str, float]] = {}  # reqId -> (key, nodeId asked, when)

    # -- replay ----------------------------------------------------------------------------------

    def session_ended(self, session: Session) -> None:
        """Remember when we last heard from this peer: the next session replays from there."""
        if session.info is None:
            return
        silent_ms = int((time.monotonic() - session.last_rx) * 1000)
        heard = now_ms() - silent_ms
        node_id = session.info.node_id
        self._last_heard[node_id] = max(heard, self._last_heard.get(node_id, 0))

    async def replay(self, session: Session) -> int:
        """Resend to a returning peer our CMBs it may have missed; returns how many went."""
        info = session.info
        if info is None or info.node_id not in self._last_heard:
            return 0
        since = self._last_heard[info.node_id] - REPLAY_MARGIN_MS
        own = [
            c for c in self.store.recent_by_author(self.identity.name, MAX_REPLAY) if c.created_at >= since
        ]
        sent = 0
        for cmb in reversed(own):  # oldest first: parents before their replies
            if cmb.group not in (None, self.group):
                continue
            frame = self._frame_for(cmb, session)
            if frame is None:
                continue
            frame["_anchor"] = True
            if not await session.link.send(frame):
                break
            sent += 1
        if sent:
            self._emit(
                "cmb-replayed", {"to": info.name, "nodeId": info.node_id, "count": sent, "since": since}
            )
        return sent

    # -- cmb-fetch (§7) --------------------------------------------------------------------------

    async def fetch_missing_parents(self, cmb: CMB, session: Session | None) -> None:
        """Ask the peer that delivered `cmb` for each of its parents we do not hold."""
        if session is None or session.info is None or session.dialect is not Dialect.SPEC:
            return
        node_id, now = session.info.node_id, time.monotonic()
        for req, (_, _, asked_at) in list(self._fetches.items()):
            if now - asked_at > FETCH_EXPIRY_SECONDS:
                del self._fetches[req]
        for key in cmb.parents:
            if self.store.has(key) or any(k == key for k, _, _ in self._fetches.values()):
                continue
            mine = sum(1 for _, n, _ in self._fetches.values() if n == node_id)
            if len(self._fetches) >= MAX_PENDING_FETCHES or mine >= MAX_PENDING_PER_PEER:
                return
            req_id = uuid.uuid4().hex
            self._fetches[req_id] = (key, node_id, now)
            frame = {
                "type": "cmb-fetch",
                "reqId": req_id,
                "key": key,
                "from": self.identity.node_id,
                "timestamp": now_ms(),
            }
            if not await session.link.send(frame):
                self._fetches.pop(req_id, None)

    async def on_frame(self, session: Session, frame: dict[str, Any]) -> None:
        if session.info is None or session.dialect is not Dialect.SPEC:
            return
        if frame["type"] == "cmb-fetch":
            await self._answer(session, frame)
        elif frame["type"] == "cmb-fetch-result":
            await self._take(session, frame)

    async def _answer(self, session: Session, frame: dict[str, Any]) -> None:
        req_id, key = frame.get("reqId"), frame.get("key")
        if not isinstance(req_id, str) or not isinstance(key, str) or len(req_id) > 128 or len(key) > 200:
            return
        cmb = self.store.get(key)
        # Only what the asker could have received from this group in the first place.
        if cmb is not None and (cmb.group != self.group or (cmb.to and cmb.to not in self._names(session))):
            cmb = None
        await session.link.send(
            {
                "type": "cmb-fetch-result",
                "reqId": req_id,
                "key": key,
                "found": cmb is not None,
                "cmb": cmb.to_wire() if cmb is not None else None,
                "timestamp": now_ms(),
            }
        )

    @staticmethod
    def _names(session: Session) -> tuple[str, str]:
        assert session.info is not None
        return (session.info.node_id, session.info.name)

    async def _take(self, session: Session, frame: dict[str, Any]) -> None:
        info = session.info
        assert info is not None
        pending = self._fetches.get(str(frame.get("reqId")))
        if pending is None or pending[1] != info.node_id:
            return  # never asked, or asked of another peer
        del self._fetches[str(frame.get("reqId"))]
        asked, body = pending[0], frame.get("cmb")
        if frame.get("found") is not True or not isinstance(body, dict):
            return
        audit = {"from": info.name, "fromNodeId": info.node_id, "fetched": True}
        try:
            cmb = CMB.from_wire(body)
        except (ValidationError, ValueError, TypeError):
            self._emit("cmb-rejected", {**audit, "reason": "malformed", "key": asked[:80]})
            return
        if cmb.key != asked:
            self._emit("cmb-rejected", {**audit, "reason": "not-asked", "key": cmb.key[:80]})
            return
        if self.store.has(cmb.key) or cmb.created_by in (self.identity.name, self.identity.node_id):
            return
        sender = KnownKey(info.node_id, info.name, info.public_key, "handshake")
        reason = self.verifier.check(cmb, sender)
        if reason is not None:
            self._emit("cmb-rejected", {**audit, "reason": reason, "key": cmb.key[:80]})
            return
        if self.store.put(cmb, source=info.name):
            self._emit("cmb-fetched", {"from": info.name, "key": cmb.key})
            await self._deliver(cmb, info)
