"""MeshNode: one MMP node — TCP listener, sessions with handshake and heartbeat. It owns a
`CmbIntake` (cmb frames in and out, per dialect) and a `Peering` (discovery, dialing, relay,
gossip), handing each what it uses, and a `Roster` of live sessions (roster.py). Sessions are transport-blind (see connection.py). A peer may hold one TCP and one relay session at
once (§4.6); sends go over the best healthy one, and the peer leaves only when both are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.catchup import CatchUp
from xmesh_agent.mmp.cmb import CMB
from xmesh_agent.mmp.connection import Link, PeerInfo, TcpLink
from xmesh_agent.mmp.dialects.aliases import AliasMap
from xmesh_agent.mmp.e2e import X25519KeyPair, aes_gcm_available
from xmesh_agent.mmp.gatekeeper import PendingQuota, greet, source_of
from xmesh_agent.mmp.handshake import valid_group
from xmesh_agent.mmp.intake import CmbIntake
from xmesh_agent.mmp.peering import Peering
from xmesh_agent.mmp.roster import Roster
from xmesh_agent.mmp.roster import best as roster_best
from xmesh_agent.mmp.roster import heartbeat as heartbeat_of
from xmesh_agent.mmp.session import Session
from xmesh_agent.mmp.store import CMBStore
from xmesh_agent.mmp.verify import Verifier, verify_db_path

__all__ = ["MeshNode", "PeerInfo"]

log = logging.getLogger(__name__)

OnCmb = Callable[[CMB, PeerInfo], Awaitable[None]]
OnEvent = Callable[[str, dict], None]


class MeshNode:
    """A node of one mesh group. See the module docstring; the public API is start/stop/peers/publish."""

    def __init__(
        self,
        identity: NodeIdentity,
        group: str,
        store: CMBStore,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        static_peers: list[str] | None = None,
        discovery: list[str] | None = None,
        relay_url: str | None = None,
        relay_token: str | None = None,
        admission: str = "tofu",
        on_cmb: OnCmb | None = None,
        on_event: OnEvent | None = None,
        handshake_timeout: float = 10.0,
        ping_interval: float = 5.0,
        heartbeat_timeout: float = 15.0,
        registry_interval: float = 5.0,
        registry_stale_after: float = 15.0,
        reconnect_min: float = 0.5,
        reconnect_max: float = 8.0,  # a peer back from a cut is redialed within ~12 s
        connect_timeout: float = 10.0,
        mdns_interfaces: list[str] | None = None,
        max_pending_handshakes: int = 256,
        max_pending_per_source: int = 8,
        e2e_keypair: X25519KeyPair | None = None,
    ):
        if not valid_group(group):
            raise ValueError(f"invalid mesh group {group!r}: [a-z0-9-_.]{{1,64}}")
        self.identity = identity
        self.group = group
        self.store = store
        self.host = host
        self._requested_port = port
        self.port = 0
        self.admission = admission
        self.on_cmb = on_cmb
        self.on_event = on_event
        self.on_frame: Callable[[str, str, int], None] | None = None
        """Told (direction "in"/"out", frame type, count) per frame served or CMB sent: the peer's metrics."""
        self.handshake_timeout = handshake_timeout
        self.ping_interval = ping_interval
        self.heartbeat_timeout = heartbeat_timeout
        if e2e_keypair is not None and not aes_gcm_available():
            log.warning("AES-256-GCM unavailable here: not announcing an e2e key, stock peers send plaintext")
            e2e_keypair = None
        self.e2e_keypair = e2e_keypair
        self.verifier = Verifier(
            group, identity.node_id, identity.name, verify_db_path(store.path), admission=admission
        )
        self._deliveries: asyncio.Queue[tuple[CMB, PeerInfo]] = asyncio.Queue(maxsize=1000)
        self._delivery_task: asyncio.Task | None = None
        self._quota = PendingQuota(max_pending_handshakes, max_pending_per_source)
        self._tasks: set[asyncio.Task] = set()
        self._changed = asyncio.Condition()
        self._server: asyncio.base_events.Server | None = None
        self._running = False
        self._roster = Roster(self.verifier, self._emit, self._changed)
        self._sessions = self._roster.sessions
        self._intake = CmbIntake(
            identity, group, store, self.verifier, AliasMap(), emit=self._emit, deliver=self._deliver_new
        )
        self._catchup = CatchUp(
            identity, group, store, self.verifier, frame_for=self._intake.frame_for, emit=self._emit,
            deliver=self._deliver,
        )  # fmt: skip
        self._peering = Peering(
            identity,
            group,
            run_session=self.run_session,
            spawn=self._spawn,
            emit=self._emit,
            connected=self.connected,
            changed=self._changed,
            host=host,
            static_peers=list(static_peers or []),
            discovery=list(["registry"] if discovery is None else discovery),
            relay_url=relay_url,
            relay_token=relay_token,
            registry_interval=registry_interval,
            registry_stale_after=registry_stale_after,
            reconnect_min=reconnect_min,
            reconnect_max=reconnect_max,
            connect_timeout=connect_timeout,
            heartbeat_timeout=heartbeat_timeout,
            mdns_interfaces=mdns_interfaces,
        )

    @property
    def static_peers(self) -> list[str]:
        return self._peering.static_peers

    @static_peers.setter
    def static_peers(self, specs: list[str]) -> None:
        self._peering.static_peers = list(specs)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._running = True
        self._delivery_task = self._spawn(self._deliver_loop(), "deliver")
        self._server = await asyncio.start_server(self._on_inbound, self.host, self._requested_port)
        self.port = self._server.sockets[0].getsockname()[1]
        await self._peering.start(self.port)

    async def stop(self) -> None:
        self._running = False
        await self._peering.stop()
        if self._server is not None:
            self._server.close()
        for by_kind in list(self._sessions.values()):
            for session in list(by_kind.values()):
                await session.link.close()
        self._peering.drop_relay_links()
        # Blocks already stored must still surface: give the handler a moment to drain.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._deliveries.join(), 5.0)
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        self.verifier.close()

    def _spawn(self, coro: Awaitable[Any], name: str = "") -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        if name:
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _deliver(self, cmb: CMB, info: PeerInfo) -> None:
        # Surfaced by one worker, in arrival order, so a slow handler never stalls the session's
        # reads (and with them its heartbeat).
        if self.on_cmb is not None:
            await self._deliveries.put((cmb, info))

    async def _deliver_new(self, cmb: CMB, info: PeerInfo) -> None:
        """A CMB that came in a `cmb` frame: surfaced, and its parents we lack asked for (§7)."""
        await self._deliver(cmb, info)
        if cmb.parents:
            await self._catchup.fetch_missing_parents(cmb, self._roster.best_of(info.node_id))

    async def _deliver_loop(self) -> None:
        while True:
            cmb, info = await self._deliveries.get()
            try:
                if self.on_cmb is not None:
                    await self.on_cmb(cmb, info)
            except Exception:
                log.exception("on_cmb handler failed for %s", cmb.key)
            finally:
                self._deliveries.task_done()

    def _emit(self, name: str, data: dict) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(name, data)
        except Exception:  # an audit sink must never take the node down
            log.exception("on_event handler failed for %s", name)

    # -- the public API -------------------------------------------------------------------------

    def peers(self) -> list[PeerInfo]:
        """Connected, handshaken peers, one entry each, showing their best transport."""
        return self._roster.peers()

    def connected(self, node_id: str, kind: str | None = None) -> bool:
        return self._roster.connected(node_id, kind)

    async def publish(self, cmb: CMB) -> int:
        """Store `cmb` as our own and send it to every peer (or only to `cmb.to`). Returns the count."""
        self.store.put(cmb, source="own")
        sent = 0
        for by_kind in list(self._sessions.values()):
            best = roster_best(by_kind)
            if best is None or best.info is None:
                continue
            if cmb.to and cmb.to not in (best.info.node_id, best.info.name):
                continue
            frame = self._intake.frame_for(cmb, best)
            if frame is not None and await best.link.send(frame):
                sent += 1
        if self.on_frame is not None:
            self.on_frame("out", "cmb", sent)
        return sent

    async def wait_for_peers(self, n: int, timeout: float) -> bool:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: len(self.peers()) >= n), timeout)
                return True
            except TimeoutError:
                return len(self.peers()) >= n

    # -- sessions -------------------------------------------------------------------------------

    async def _on_inbound(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        ticket = self._quota.acquire(source_of(writer.get_extra_info("peername")))
        if not self._running or ticket is None:
            writer.close()  # stopping, or a flood of connections that never handshake
            return
        try:
            await self.run_session(TcpLink(reader, writer, outbound=False), on_handshaken=ticket.release)
        finally:
            ticket.release()

    async def run_session(
        self, link: Link, on_handshaken: Callable[[], None] | None = None
    ) -> PeerInfo | None:
        """Handshake, then serve frames until the link dies. Returns the peer if the handshake held."""
        session = Session(link, self.identity.node_id)
        registered = False
        heartbeat: asyncio.Task | None = None
        try:
            try:
                hs = await asyncio.wait_for(
                    greet(
                        session,
                        self.identity,
                        self.group,
                        self.verifier,
                        e2e_keypair=self.e2e_keypair,
                        emit=self._emit,
                    ),
                    self.handshake_timeout,
                )
            except TimeoutError:
                await link.send({"type": "error", "code": 1004, "message": "handshake timeout"})
                return None
            finally:
                if on_handshaken is not None:
                    on_handshaken()
            if hs is None:
                return None
            if not await self._roster.register(session):
                await link.send({"type": "error", "code": 1005, "message": "nodeId already connected"})
                session.info = None
                return None
            registered = True
            await self._roster.introduce(session)
            await self._catchup.replay(session)  # what it missed since we last heard from it
            heartbeat = self._spawn(
                heartbeat_of(session, self.ping_interval, self.heartbeat_timeout), f"heartbeat-{hs.name}"
            )
            while True:
                frame = await link.recv()
                if frame is None:
                    break
                session.last_rx = time.monotonic()
                if self.on_frame is not None:
                    self.on_frame("in", frame.get("type"), 1)
                try:
                    await self._dispatch(session, frame)
                except Exception:
                    log.exception("dropping a %s frame from %s", frame.get("type"), hs.name)
            return session.info
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            await link.close()
            if registered:
                self._catchup.session_ended(session)
                await self._roster.unregister(session)

    # -- inbound frames -------------------------------------------------------------------------

    async def _dispatch(self, session: Session, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "ping":
            await session.link.send({"type": "pong"})
        elif kind == "cmb":
            await self._intake.receive(session, frame)
        elif kind == "peer-info":
            self._peering.on_peer_info(frame)
        elif kind in ("cmb-fetch", "cmb-fetch-result"):
            await self._catchup.on_frame(session, frame)
        # pong, handshake repeats, error (informational, §7.2) and unknown types: nothing to do.
