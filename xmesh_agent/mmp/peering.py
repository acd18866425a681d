"""How a MeshNode finds peers: static addresses, the same-host registry, mDNS and the relay.

A mixin over MeshNode so that node.py keeps to sessions; it uses the node's `_spawn`, `run_session`,
`_emit`, `_changed` and `connected`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from xmesh_agent.identity import b64url_decode, b64url_encode
from xmesh_agent.mmp.connection import PeerInfo, RelayLink, TcpLink
from xmesh_agent.mmp.discovery.registry import LoopbackRegistry

if TYPE_CHECKING:
    from xmesh_agent.mmp.node import MeshNode

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


class PeeringMixin:
    def _add_static_peer(self: MeshNode, spec: str) -> None:
        try:
            host, port = parse_address(spec)
        except ValueError as exc:
            log.warning("ignoring static peer: %s", exc)
            return
        key = f"static:{host}:{port}"
        if key not in self._targets:
            self._ensure_target(key, DialTarget(host, port, "static"))

    def _ensure_target(self: MeshNode, key: str, target: DialTarget) -> DialTarget:
        current = self._targets.get(key)
        if current is not None and current.task is not None and not current.task.done():
            current.removed = False
            current.host, current.port = target.host, target.port
            return current
        self._targets[key] = target
        target.task = self._spawn(self._dial_loop(target), f"dial-{key}")
        return target

    def _discovered(self: MeshNode, source: str, node_id: str, name: str, host: str, port: int) -> None:
        """A peer of our group is reachable at host:port. §5.1: only the smaller nodeId dials."""
        if node_id == self.identity.node_id or not self.identity.node_id < node_id:
            return
        self._ensure_target(f"peer:{node_id}", DialTarget(host, port, source, node_id, name))

    async def _start_discovery(self: MeshNode) -> None:
        if "registry" in self.discovery:
            self._registry = LoopbackRegistry(
                self.identity.node_id, self.identity.name, self.group, stale_after=self.registry_stale_after
            )
            self._registry.write(self.port)
            self._spawn(self._registry_loop(), "registry")
        if "mdns" in self.discovery:
            from xmesh_agent.mmp.discovery.mdns import MdnsDiscovery

            self._mdns = MdnsDiscovery(
                self.identity,
                self.group,
                self.port,
                self._discovered,
                host=self.host,
                interfaces=self.mdns_interfaces,
                on_event=self._emit,
            )
            await self._mdns.start()
        if self.relay_url:
            from xmesh_agent.mmp.relay.client import RelayClient

            self._relay = RelayClient(
                self.relay_url,
                self.identity.node_id,
                self.identity.name,
                token=self.relay_token,
                on_peer=self._relay_peer,
                on_peer_left=self._relay_peer_left,
                on_payload=self._relay_payload,
                on_disconnect=self._relay_down,
                on_event=self._emit,
                reconnect_min=self.reconnect_min,
                reconnect_max=self.reconnect_max,
            )
            self._relay.start()

    async def _stop_discovery(self: MeshNode) -> None:
        if self._registry is not None:
            self._registry.remove()
        if self._mdns is not None:
            with contextlib.suppress(Exception):
                await self._mdns.stop()
        if self._relay is not None:
            await self._relay.stop()
        for target in self._targets.values():
            target.removed = True

    async def _registry_loop(self: MeshNode) -> None:
        """Rewrite our entry and rescan; quick early scans catch peers that start just after us."""
        registry = self._registry
        assert registry is not None
        early = [t for t in (0.3, 1.2, 3.0) if t < self.registry_interval]
        elapsed = 0.0
        while self._running:
            entries = registry.scan()
            for entry in entries:
                self._discovered("registry", entry.node_id, entry.name, "127.0.0.1", entry.port)
            live = {e.node_id for e in entries}
            for target in self._targets.values():
                if target.source == "registry" and target.node_id not in live:
                    target.removed = True  # gone from the registry: stop redialing it
            pending = [t for t in early if t > elapsed]
            wait = pending[0] - elapsed if pending else self.registry_interval
            await asyncio.sleep(wait)
            elapsed += wait
            registry.write(self.port)

    # -- relay glue -----------------------------------------------------------------------------

    def _relay_peer(self: MeshNode, node_id: str, name: str) -> None:
        """A peer is on the relay channel: the smaller nodeId opens the session through it (§5.1)."""
        if node_id == self.identity.node_id or node_id in self._relay_links:
            return
        if self.identity.node_id < node_id:
            self._open_relay_link(node_id, name, outbound=True)

    def _open_relay_link(self: MeshNode, node_id: str, name: str, *, outbound: bool) -> RelayLink:
        assert self._relay is not None
        link = RelayLink(node_id, self._relay.send, outbound=outbound, address=f"relay:{name}")
        self._relay_links[node_id] = link
        self._spawn(self._relay_session(node_id, link), f"relay-{name}")
        return link

    async def _relay_session(self: MeshNode, node_id: str, link: RelayLink) -> None:
        try:
            info = await self.run_session(link)
        finally:
            if self._relay_links.get(node_id) is link:
                del self._relay_links[node_id]
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
        relay = self._relay
        if (
            self._running
            and relay is not None
            and node_id in relay.peers
            and node_id not in self._relay_links
        ):
            self._relay_peer(node_id, relay.peers[node_id])

    def _relay_peer_left(self: MeshNode, node_id: str) -> None:
        link = self._relay_links.pop(node_id, None)
        if link is not None:
            link.feed(None)

    async def _relay_payload(self: MeshNode, from_id: str, from_name: str, payload: dict[str, Any]) -> None:
        link = self._relay_links.get(from_id)
        if link is None:
            if payload.get("type") != "handshake" or from_id == self.identity.node_id:
                return
            link = self._open_relay_link(from_id, from_name, outbound=False)
        await link.deliver(payload)  # waits while that session is behind: backpressure, not loss

    def _relay_down(self: MeshNode) -> None:
        for link in list(self._relay_links.values()):
            link.feed(None)
        self._relay_links.clear()

    # -- gossip (§5.6) -------------------------------------------------------------------------

    @staticmethod
    def _peer_info_frame(peers: list[PeerInfo]) -> dict[str, Any]:
        now = int(time.time() * 1000)
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

    def _on_peer_info(self: MeshNode, frame: dict[str, Any]) -> None:
        peers = frame.get("peers")
        if not isinstance(peers, list):
            return
        for entry in peers[:_MAX_GOSSIP]:
            if not isinstance(entry, dict):
                continue
            node_id, name, key = entry.get("nodeId"), entry.get("name"), entry.get("publicKey")
            if not (isinstance(node_id, str) and isinstance(name, str) and isinstance(key, str)):
                continue
            if node_id == self.identity.node_id or len(key) > 64:
                continue
            try:
                raw = b64url_decode(key)
            except (ValueError, UnicodeEncodeError):
                continue
            self.verifier.learn(node_id, name, raw, source="gossip")

    # -- dialing --------------------------------------------------------------------------------

    async def _dial_loop(self: MeshNode, target: DialTarget) -> None:
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
