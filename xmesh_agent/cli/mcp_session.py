"""What an MCP client does on the mesh, without the MCP SDK: publish, receive, recall, peers, wakes.

`MeshSession` is one node of a group (an observer identity, `mcp-<user>` unless named) that keeps
what arrives in an inbox until the client asks for it. `mcp_server.py` beside it exposes it as MCP tools.
Every method returns plain JSON-able data or raises `BridgeError` with a one-line reason.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

from xmesh_agent.clock import now_ms
from xmesh_agent.conversation import Said, spoken
from xmesh_agent.mmp.cmb import CAT7, CMB, mint
from xmesh_agent.mmp.node import PeerInfo
from xmesh_agent.observer import Join, ObserverNode

INBOX_LIMIT = 1000
MAX_WAIT = 60.0
MAX_TEXT = 4000
"""A field longer than this is refused: a CMB is a projection of state, not a document."""


class BridgeError(Exception):
    """A request the mesh cannot serve; the message says why in the user's terms."""


def hit(cmb: CMB, **extra: Any) -> dict[str, Any]:
    """A CMB as the tools return it: the recall hit shape, fields with text only."""
    out = {
        "key": cmb.key,
        "author": cmb.created_by,
        "created_at": cmb.created_at,
        "to": cmb.to,
        "parents": cmb.parents,
        "fields": spoken(cmb),
    }
    out.update(extra)
    return out


class MeshSession:
    def __init__(self, join: Join, **node_options: float):
        self.join = join
        self.inbox: deque[Said] = deque(maxlen=INBOX_LIMIT)
        self.dropped = 0
        self.observer = ObserverNode(join, self._arrived, **node_options)
        self._temporal: Any = None
        self._arrival = asyncio.Event()

    @property
    def name(self) -> str:
        return self.observer.identity.name

    async def start(self) -> None:
        await self.observer.node.start()

    async def stop(self) -> None:
        await self.observer.close()

    async def _arrived(self, cmb: CMB, sender: PeerInfo) -> None:
        if len(self.inbox) == self.inbox.maxlen:
            self.dropped += 1
        self.inbox.append(Said(cmb, now_ms(), sender.name))
        self._arrival.set()

    # -- the mesh -------------------------------------------------------------------------------

    def peers(self) -> list[dict[str, Any]]:
        return [
            {"name": p.name, "nodeId": p.node_id, "transport": p.transport, "address": p.address}
            for p in self.observer.peers()
        ]

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "nodeId": self.observer.identity.node_id,
            "group": self.join.group,
            "peers": len(self.observer.peers()),
            "stored": self.observer.store.count(),
            "waiting": len(self.inbox),
        }

    async def receive(self, limit: int = 50, peek: bool = False, wait: float = 0.0) -> dict[str, Any]:
        """What arrived since the last call, oldest first; `peek` leaves it for the next call. With
        nothing there, `wait` seconds for the first arrival."""
        if not self.inbox and wait > 0:
            self._arrival.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrival.wait(), min(wait, MAX_WAIT))
        limit = max(1, min(limit, INBOX_LIMIT))
        items = list(self.inbox)[:limit]
        if not peek:
            for _ in items:
                self.inbox.popleft()
        me = self.observer.identity.node_id
        out = [hit(s.cmb, received_at=s.received_at, directed=s.cmb.to == me) for s in items]
        result: dict[str, Any] = {"cmbs": out, "more": len(self.inbox) - (len(items) if peek else 0)}
        if self.dropped:
            result["dropped"] = self.dropped
            if not peek:
                self.dropped = 0
        return result

    async def publish(
        self,
        fields: dict[str, str],
        *,
        to: str | None = None,
        parents: list[str] | None = None,
        mood: tuple[float, float] | None = None,
        wait: float = 5.0,
    ) -> dict[str, Any]:
        texts = {f: (fields.get(f) or "").strip() for f in CAT7}
        unknown = sorted(set(fields) - set(CAT7))
        if unknown:
            raise BridgeError(f"unknown field(s) {', '.join(unknown)}: the CAT7 fields are {', '.join(CAT7)}")
        if not texts["focus"]:
            raise BridgeError("focus is required: say what the CMB is about")
        long = [f for f, t in texts.items() if len(t) > MAX_TEXT]
        if long:
            raise BridgeError(f"{', '.join(long)} longer than {MAX_TEXT} characters")
        parent_cmbs = self._parents(parents or [])
        target = await self._target(to, wait) if to else None
        if target is None and not await self.observer.wait_for_peers(1, wait):
            raise BridgeError(
                f"no peer of group {self.join.group} reached within {wait:g}s: nothing published"
            )
        cmb = mint(
            texts,
            identity=self.observer.identity,
            group=self.join.group,
            created_at=now_ms(),
            parents=parent_cmbs,
            to=target.node_id if target else None,
            mood=mood,
        )
        reached = [p.name for p in self.observer.peers() if target is None or p.node_id == target.node_id]
        sent = await self.observer.node.publish(cmb)
        if not sent:
            raise BridgeError(f"stored {cmb.key} but no peer took it (they left meanwhile)")
        return {"key": cmb.key, "delivered_to": reached[:sent] if sent < len(reached) else reached, "to": to}

    async def _target(self, to: str, wait: float) -> PeerInfo:
        def find() -> PeerInfo | None:
            for p in self.observer.peers():
                if to in (p.node_id, p.name):
                    return p
            return None

        deadline = asyncio.get_running_loop().time() + wait
        while (found := find()) is None:
            if asyncio.get_running_loop().time() >= deadline:
                names = ", ".join(p.name for p in self.observer.peers()) or "none"
                raise BridgeError(f"peer {to!r} is not connected (connected: {names}); see peers")
            await asyncio.sleep(0.05)
        return found

    def _parents(self, keys: list[str]) -> list[CMB]:
        """Keys as typed (unique prefixes, stock `cmb-` keys) -> the CMBs local stores hold; a full key
        none holds stands for itself in the lineage."""
        from xmesh_agent.operator import DirectiveError, resolve_parents

        self.observer.store.flush()
        try:
            found = resolve_parents(keys)
        except DirectiveError as exc:
            raise BridgeError(f"parents: {exc}") from None
        out = []
        for parent in found:
            if isinstance(parent, str):
                out.append(CMB(key=parent, created_by="", created_at=0, fields={}))
            else:
                self.observer.store.put(parent, source="recall")  # a stock peer's frame carries it
                out.append(parent)
        return out

    def recall(
        self, query: str = "", *, author: str | None = None, since_ms: int | None = None, limit: int = 10
    ) -> list[dict[str, Any]]:
        """What this node and the local peers of its group hold, ranked as `xmesh-agent recall` ranks."""
        from xmesh_agent.lookup import close_all, open_readers
        from xmesh_agent.recall import Query, recall

        self.observer.store.flush()
        readers = open_readers()
        try:
            q = Query(text=query, group=self.join.group, author=author, since_ms=since_ms, limit=limit)
            return [h.to_json() for h in recall(readers, q)]
        finally:
            close_all(readers)

    # -- operators: wakes through Temporal ------------------------------------------------------

    async def _client(self, temporal_address: str | None) -> Any:
        if self._temporal is None:
            from xmesh_agent.workers.client import TemporalTarget, connect, external_target
            from xmesh_agent.workers.devserver import running_server

            target = external_target(temporal_address)
            if target is None:
                info = running_server()
                if info is None:
                    raise BridgeError(
                        "the embedded Temporal server is not running: no peer runs on this machine"
                    )
                target = TemporalTarget(address=info.address)
            try:
                self._temporal = await connect(target)
            except RuntimeError as exc:
                raise BridgeError(f"cannot reach Temporal at {target.address}") from exc
        return self._temporal

    async def wakes(
        self,
        *,
        peer: str | None = None,
        stage: str | None = None,
        outcome: str | None = None,
        since: str | None = None,
        limit: int = 20,
        temporal_address: str | None = None,
    ) -> list[dict[str, Any]]:
        from xmesh_agent.workers.inspect import InspectError, list_wakes, parse_since, wake_query

        try:
            query = wake_query(
                peer, outcome, parse_since(since) if since else None, group=self.join.group, stage=stage
            )
            rows = await list_wakes(await self._client(temporal_address), query, max(1, min(limit, 200)))
        except InspectError as exc:
            raise BridgeError(str(exc)) from None
        return [r.as_json() for r in rows]

    async def decide(
        self, workflow_id: str, approved: bool, by: str, reason: str = "", temporal_address: str | None = None
    ) -> str:
        """Sign the decision with the held wake's peer key (readable only by its operator) and send it."""
        from xmesh_agent.workers import approvals
        from xmesh_agent.workers.inspect import InspectError

        try:
            client = await self._client(temporal_address)
            [wake] = await approvals.resolve(client, workflow_id, None, False)
            return await approvals.decide(client, wake, approved=approved, by=by, reason=reason)
        except InspectError as exc:
            raise BridgeError(str(exc)) from None
