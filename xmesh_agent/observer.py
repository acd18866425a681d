"""A node of a group that is not a peer: `tail` and the MCP server join the mesh through one.

It has a persistent identity of its own under the xmesh home (`observer-<user>` for `tail`,
`mcp-<user>` for the MCP server, unless named), never wakes, and keeps what it hears in its own
store (`~/.xmesh/peers/<name>/cmbs.db`, beside the peers', so `recall` and `show` find it). It takes the group and the transports (registry, mDNS,
static peers, relay) from a peer's `agent.toml`, or the group alone with same-host discovery.
"""

from __future__ import annotations

import asyncio
import fcntl
import getpass
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from xmesh_agent import paths
from xmesh_agent.config import GROUP_PATTERN, NAME_PATTERN, MeshConfig
from xmesh_agent.identity import load_or_create_e2e_keypair, load_or_create_identity
from xmesh_agent.mmp.cmb import CMB
from xmesh_agent.mmp.node import MeshNode, PeerInfo
from xmesh_agent.mmp.store import CMBStore

OnHeard = Callable[[CMB, PeerInfo], Awaitable[None]]


class ObserverError(ValueError):
    """A name or group that cannot join: said in one line."""


def default_name(kind: str) -> str:
    """`<kind>-<user>`, the user's login reduced to the characters a node name may hold."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "user"
    user = re.sub(r"[^A-Za-z0-9_.-]", "-", user).strip("-.") or "user"
    return f"{kind}-{user}"[:64]


def observer_dir(name: str) -> Path:
    """Beside the peers' (`~/.xmesh/peers/<name>/`), so `recall`, `show` and `tail --peer` read it too."""
    return paths.peer_dir(name)


@dataclass
class Join:
    """Where and how to join: the group, its transports, and the name to join as."""

    group: str
    name: str
    mesh: MeshConfig = field(default_factory=MeshConfig)
    chosen: bool = True
    """The user gave the name (else it is the default, and a busy one gets a -2, -3, ... suffix)."""
    lock: int | None = None

    @classmethod
    def of(cls, group: str | None, mesh: MeshConfig | None, name: str, chosen: bool = True) -> Join:
        if mesh is None and group is None:
            raise ObserverError("give --group G or --config peer.toml (its [mesh] group and transports)")
        # --group alone: this machine's peers, as `publish --group` reaches them
        mesh = MeshConfig(host="127.0.0.1", discovery=["registry"]) if mesh is None else mesh.model_copy()
        group = group or mesh.group
        if not re.match(GROUP_PATTERN, group):
            raise ObserverError(f"invalid group {group!r}: 1-64 of a-z 0-9 _ . -")
        if not re.match(NAME_PATTERN, name):
            raise ObserverError(
                f"invalid node name {name!r}: a letter or digit, then up to 63 of A-Z a-z 0-9 _ . -"
            )
        if paths.ran_as_peer(name):
            raise ObserverError(f"{name} is a peer's name here: pick another with --name")
        mesh.group, mesh.port = group, 0  # never the peer's own port: that peer may be running
        return cls(group, name, mesh, chosen)

    def claim(self) -> Join:
        """Hold the name for this process (a lock file beside its store): two nodes under one
        identity would knock each other off the mesh. A default name in use gets a suffix."""
        for n in range(1, 2 if self.chosen else 10):
            name = self.name if n == 1 else f"{self.name}-{n}"[:64]
            if n > 1 and paths.ran_as_peer(name):
                continue
            fd = os.open(
                paths.ensure_dir(observer_dir(name)) / paths.OBSERVER_LOCK, os.O_CREAT | os.O_RDWR, 0o600
            )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return Join(self.group, name, self.mesh, self.chosen, fd)
        raise ObserverError(
            f"{self.name} is in use by another tail or mcp on this machine: give another --name"
        )

    def release(self) -> None:
        if self.lock is not None:
            os.close(self.lock)
            self.lock = None


class ObserverNode:
    """A MeshNode joined under an observer identity; `heard` gets every CMB it stores from others."""

    def __init__(self, join: Join, heard: OnHeard | None = None, **node_options: float):
        self.join = join
        self.identity = load_or_create_identity(join.name)
        home = paths.ensure_dir(observer_dir(join.name))
        self.store = CMBStore(home / "cmbs.db", retention_days=join.mesh.retention_days or None)
        m = join.mesh
        self.node = MeshNode(
            self.identity,
            join.group,
            self.store,
            host=m.host,
            port=0,
            static_peers=m.peers,
            discovery=m.discovery,
            relay_url=m.relay,
            relay_token=m.relay_token,
            admission=m.admission,
            on_cmb=heard,
            e2e_keypair=load_or_create_e2e_keypair(join.name),
            **node_options,
        )

    async def __aenter__(self) -> ObserverNode:
        await self.node.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.node.stop()
        self.store.close()
        self.join.release()

    async def wait_for_peers(self, n: int = 1, timeout: float = 5.0) -> bool:
        return await self.node.wait_for_peers(n, timeout)

    def peers(self) -> list[PeerInfo]:
        return self.node.peers()


async def run_until(stop: asyncio.Event, *tasks: Awaitable[None]) -> None:
    """Run `tasks` until `stop` is set (or one of them ends)."""
    running = [asyncio.ensure_future(t) for t in tasks]
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([*running, waiter], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in [*running, waiter]:
            t.cancel()
        await asyncio.gather(*running, waiter, return_exceptions=True)
        for t in running:
            if t.done() and not t.cancelled() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
