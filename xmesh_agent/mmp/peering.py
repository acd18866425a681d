"""How a node finds peers: static addresses, the same-host registry, mDNS and the relay; and the
§5.6 gossip that tells peers about each other.

The node builds one `Peering` and gives it what it uses: identity, group, and callables to run a
session on a link, spawn a task, emit an audit event and ask whether a peer is connected; plus the
condition the node notifies when sessions come and go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from xmesh_agent.clock import now_ms
from xmesh_agent.identity import NodeIdentity, b64url_encode
from xmesh_agent.mmp.connection import Link, PeerInfo, RelayLink, TcpLink
from xmesh_agent.mmp.discovery.registry import LoopbackRegistry

log = logging.getLogger(__name__)
_MAX_GOSSIP = 256


@dataclass
class DialTarget:
    host: str
    port: int
    source: str  # "static" | "registry" | "mdns"
    node_id: str | None = None
    name: str | None = None
    removed: bool = False
    task: asyncio.Task | None = None


def parse_address(spec: str) -> tuple[str, int]:
    """ "host:port" (or "[v6]:port", or a tcp:// URL) -> (host, port); ValueError when unusable."""
    text = spec.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.rstrip("/")
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"static peer {spec!r} is not host:port")
    host = host.strip("[]")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"static peer {spec!r} has a bad port")
    return host, port


class Peering:
    def __init__(
        self,
        identity: NodeIdentity,
        group: str,
        *,
        run_session: Callable[[Link], Awaitable[PeerInfo | None]],
        spawn: Callable[[Awaitable[Any], str], asyncio.Task],
        emit: Callable[[str, dict], None],
        connected: Callable[[str, str], bool],
        changed: asyncio.Condition,
        host: str,
        static_peers: list[str],
        discovery: list[str],
        relay_url: str | None,
        relay_token: str | None,
        registry_interval: float,
        registry_stale_after: float,
        reconnect_min: float,
        reconnect_max: float,
        connect_timeout: float,
        heartbeat_timeout: float,
        mdns_interfaces: list[str] | None,
    ):
        self.identity = identity
        self.group = group
        self.run_session = run_session
        self._spawn = spawn
        self._emit = emit
        self.connected = connected
        self._changed = changed
        self.host = host
        self.static_peers = static_peers
        self.discovery = discovery
        self.relay_url = relay_url
        self.relay_token = relay_token
        self.registry_interval = registry_interval
        self.registry_stale_after = registry_stale_after
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.connect_timeout = connect_timeout
        self.heartbeat_timeout = heartbeat_timeout
        self.mdns_interfaces = mdns_interfaces
        self.port = 0
        self.targets: dict[str, DialTarget] = {}
        self.relay_links: dict[str, RelayLink] = {}
        self._relay_backoff: dict[str, float] = {}
        self.registry: LoopbackRegistry | None = None
        self.mdns: Any = None
        self.relay: Any = None
        self._running = False

    async def start(self, port: int) -> None:
        """Dial the static peers and start discovery for a node listening on `port`."""
        self._running = True
        self.port = port
        for spec in self.static_peers:
            self.add_static_peer(spec)
        await self._start_discovery()

    async def stop(self) -> None:
        self._running = False
        await self._stop_discovery()

    def drop_relay_links(self) -> None:
        for link in list(self.relay_links.values()):
            link.feed(None)

    def add_static_peer(self, spec: str) -> None:
        try:
            host, port = parse_address(spec)
        except ValueError as exc:
            log.warning("ignoring static peer: %s", exc)
            return
        key = f"static:{host}:{port}"
        if key not in self.targets:
            self._ensure_target(key, DialTarget(host, port, "static"))

    def _ensure_target(self, key: str, target: DialTarget) -> DialTarget:
        current = self.targets.get(key)
        if current is not None and current.task is not None and not current.task.done():
            current.removed = False
            current.host, current.port = target.host, target.port
            return current
        self.targets[key] = target
        target.task = self._spawn(self._dial_loop(target), f"dial-{key}")
        return target

    def _discovered(self, source: str, node_id: str, name: str, host: str, port: int) -> None:
        """A peer of our group is reachable at host:port. §5.1: only the smaller nodeId dials."""
        if node_id == self.identity.node_id or not self.identity.node_id < node_id:
            return
        self._ensure_target(f"peer:{node_id}", DialTarget(host, port, source, node_id, name))

    async def _start_discovery(self) -> None:
        if "registry" in self.discovery:
            self.registry = LoopbackRegistry(
                self.identity.node_id, self.identity.name, self.group, stale_after=self.registry_stale_after
            )
            self.registry.write(self.port)
            self._spawn(self._registry_loop(), "registry")
        if "mdns" in self.discovery:
            from xmesh_agent.mmp.discovery.mdns import MdnsDiscovery

            self.mdns = MdnsDiscovery(
                self.identity,
                self.group,
                self.port,
                self._discovered,
                host=self.host,
                interfaces=self.mdns_interfaces,
                on_event=self._emit,
            )
            await self.mdns.start()
        if self.relay_url:
            from xmesh_agent.mmp.relay.client import RelayClient

            self.relay = RelayClient(
                self.relay_url,
                self.identity.node_id,
                self.identity.name,
                token=self.relay_token,
                identity=self.identity,
                on_peer=self._relay_peer,
                on_peer_left=self._relay_peer_left,
                on_payload=self._relay_payload,
                on_disconnect=self._relay_down,
                on_event=self._emit,
                reconnect_min=self.reconnect_min,
                reconnect_max=self.reconnect_max,
            )
            self.relay.start()

    async def _stop_discovery(self) -> None:
        if self.registry is not None:
            self.registry.remove()
        if self.mdns is not None:
            with contextlib.suppress(Exception):
                await self.mdns.stop()
        if self.relay is not None:
            await self.relay.stop()
        for target in self.targets.values():
            target.removed = True

    async def _registry_loop(self) -> None:
        """Rewrite our entry and rescan; quick early scans catch peers that start just after us."""
        registry = self.registry
        assert registry is not None
        early = [t for t in (0.3, 1.2, 3.0) if t < self.registry_interval]
        elapsed = 0.0
        while self._running:
            entries = registry.scan()
            for entry in entries:
                self._discovered("registry", entry.node_id, entry.name, "127.0.0.1", entry.port)
            live = {e.node_id for e in entries}
            for target in self.targets.values():
                if target.source == "registry" and target.node_id not in live:
                    target.removed = True  # gone from the registry: stop redialing it
            pending = [t for t in early if t > elapsed]
            wait = pending[0] - elapsed if pending else self.registry_interval
            await asyncio.sleep(wait)
            elapsed += wait
            registry.write(self.port)

    # -- relay glue -----------------------------------------------------------------------------

    def _relay_peer(self, node_id: str, name: str) -> None:
        """A peer is on the relay channel: the smaller nodeId opens the session through it (§5.1)."""
        if node_id == self.identity.node_id or node_id in self.relay_links:
            return
        if self.identity.node_id < node_id:
            self._open_relay_link(node_id, name, outbound=True)

    def _open_relay_link(self, node_id: str, name: str, *, outbound: bool) -> RelayLink:
        assert self.relay is not None
        link = RelayLink(node_id, self.relay.send, outbound=outbound, address=f"relay:{name}")
        self.relay_links[node_id] = link
        self._spawn(self._relay_session(node_id, link), f"relay-{name}")
        return link

    async def _relay_session(self, node_id: str, link: RelayLink) -> None:
        try:
            info = await self.run_session(link)
        finally:
            if self.relay_links.get(node_id) is link:
                del self.relay_links[node_id]
        # A session lost while the peer is still on the relay (heartbeat, refused handshake): the
        # opening side tries again, backing off per peer so a refusing peer is not hammered.
        delay = (
            self.reconnect_min
            if info
            else min(self._relay_backoff.get(node_id, 0) * 2 or self.reconnect_min, self.reconnect_max)
        )
        self._relay_backoff[node_id] = delay
        if not link.outbound:
            return
        await asyncio.sleep(delay * (0.5 + random.random()))
        relay = self.relay
        if self._running and relay is not None and node_id in relay.peers and node_id not in self.relay_links:
            self._relay_peer(node_id, relay.peers[node_id])

    def _relay_peer_left(self, node_id: str) -> None:
        link = self.relay_links.pop(node_id, None)
        if link is not None:
            link.feed(None)

    async def _relay_payload(self, from_id: str, from_name: str, payload: dict[str, Any]) -> None:
        link = self.relay_links.get(from_id)
        if link is None:
            if payload.get("type") != "handshake" or from_id == self.identity.node_id:
                return
            link = self._open_relay_link(from_id, from_name, outbound=False)
        await link.deliver(payload)  # waits while that session is behind: backpressure, not loss

    def _relay_down(self) -> None:
        for link in list(self.relay_links.values()):
            link.feed(None)
        self.relay_links.clear()

    # -- gossip (§5.6) -------------------------------------------------------------------------

    @staticmethod
    def peer_info_frame(peers: list[PeerInfo]) -> dict[str, Any]:
        now = now_ms()
        return {
            "type": "peer-info",
            "peers": [
                {
                    "nodeId": p.node_id,
                    "name": p.name,
                    "publicKey": b64url_encode(p.public_key),
                    "lastSeen": now,
                }
                for p in peers[:_MAX_GOSSIP]
            ],
        }

    def on_peer_info(self, frame: dict[str, Any]) -> list[tuple[str, str]]:
        """The (nodeId, name) pairs a `peer-info` frame names. Gossip may tell who is around; it
        never vouches for a key, so the keys it carries are not read (verify.py)."""
        peers = frame.get("peers")
        if not isinstance(peers, list):
            return []
        named = []
        for entry in peers[:_MAX_GOSSIP]:
            if not isinstance(entry, dict):
                continue
            node_id, name = entry.get("nodeId"), entry.get("name")
            if isinstance(node_id, str) and isinstance(name, str) and node_id != self.identity.node_id:
                named.append((node_id, name))
        return named

    # -- dialing --------------------------------------------------------------------------------

    async def _dial_loop(self, target: DialTarget) -> None:
        """Keep one TCP session to `target` alive, redialing with exponential backoff (+ jitter)."""
        backoff = self.reconnect_min
        while self._running and not target.removed:
            if target.node_id and self.connected(target.node_id, "tcp"):
                async with self._changed:
                    await self._changed.wait_for(
                        lambda: (
                            not self._running
                            or target.removed
                            or not self.connected(target.node_id or "", "tcp")
                        )
                    )
                continue
            info, link, started = None, None, time.monotonic()
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(target.host, target.port), self.connect_timeout
                )
            except (OSError, TimeoutError):
                pass
            else:
                link = TcpLink(reader, writer, outbound=True)
                info = await self.run_session(link)
            if link is not None and link.remote_node_id and target.node_id is None:
                # Even a refused duplicate tells us who listens there, so we can wait instead.
                target.node_id = link.remote_node_id
            if info is not None:
                target.name = info.name
            if not self._running or target.removed:
                return
            # A session that held for a while earns a quick redial; one dropped at once backs off.
            if info is not None and time.monotonic() - started > max(2.0, self.heartbeat_timeout):
                backoff = self.reconnect_min
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, self.reconnect_max)
