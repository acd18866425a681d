"""Shared helpers for the mesh node tests: fast timings, an inbox, and a raw-socket fake peer."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xmesh_agent.clock import now_ms
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp import framing, keyproof
from xmesh_agent.mmp.cmb import CMB, mint
from xmesh_agent.mmp.connection import PeerInfo
from xmesh_agent.mmp.handshake import build_handshake
from xmesh_agent.mmp.node import MeshNode
from xmesh_agent.mmp.store import CMBStore

FAST: dict[str, Any] = dict(
    handshake_timeout=2.0,
    ping_interval=0.5,
    heartbeat_timeout=1.5,
    registry_interval=0.2,
    reconnect_min=0.05,
    reconnect_max=0.3,
    connect_timeout=2.0,
)


class Inbox:
    """Collects on_cmb / on_event calls and lets a test wait for a condition without sleeping."""

    def __init__(self) -> None:
        self.cmbs: list[tuple[CMB, PeerInfo]] = []
        self.events: list[tuple[str, dict]] = []
        self._changed = asyncio.Event()

    async def on_cmb(self, cmb: CMB, peer: PeerInfo) -> None:
        self.cmbs.append((cmb, peer))
        self._changed.set()

    def on_event(self, name: str, data: dict) -> None:
        self.events.append((name, data))
        self._changed.set()

    def rejects(self) -> list[str]:
        return [d["reason"] for n, d in self.events if n == "cmb-rejected"]

    def named(self, name: str) -> list[dict]:
        return [d for n, d in self.events if n == name]

    async def wait(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return predicate()
        return True


async def poll(predicate: Callable[[], bool], timeout: float = 5.0, step: float = 0.02) -> bool:
    """Poll with a deadline, for state that offers no event to wait on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()


def make_node(
    tmp_path: Path,
    name: str,
    group: str = "team",
    identity: NodeIdentity | None = None,
    store_name: str | None = None,
    **kw: Any,
) -> tuple[MeshNode, Inbox]:
    identity = identity or NodeIdentity.generate(name)
    inbox = Inbox()
    store = CMBStore(tmp_path / (store_name or name) / "store.sqlite")
    opts = {**FAST, **kw}
    node = MeshNode(identity, group, store, on_cmb=inbox.on_cmb, on_event=inbox.on_event, **opts)
    return node, inbox


def note(identity: NodeIdentity, group: str, text: str, to: str | None = None) -> CMB:
    return mint(
        {"focus": text, "intent": "share"},
        identity=identity,
        group=group,
        created_at=now_ms(),
        to=to,
    )


def ordered_identities(*names: str) -> list[NodeIdentity]:
    """Identities whose nodeIds sort in the order of `names` (the first one dials the others)."""
    ids = sorted((NodeIdentity.generate("x") for _ in names), key=lambda i: i.node_id)
    return [NodeIdentity(n, i.node_id, i.signing_key, i.created_at) for n, i in zip(names, ids, strict=True)]


class RawPeer:
    """A hand-driven MMP peer on a raw TCP socket: sends exactly the bytes a test asks for."""

    def __init__(self, identity: NodeIdentity, group: str = "team"):
        self.identity = identity
        self.group = group
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self, port: int, source: str | None = None) -> RawPeer:
        """Connect to 127.0.0.1:port, from the loopback address `source` if given (127.0.0.2, ...)."""
        local = (source, 0) if source else None
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port, local_addr=local)
        return self

    async def send(self, frame: dict[str, Any]) -> None:
        await self.send_raw(framing.encode_frame(frame))

    async def send_raw(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)
        await self.writer.drain()

    async def send_body(self, body: bytes) -> None:
        await self.send_raw(struct.pack(">I", len(body)) + body)

    async def handshake(self, group: str | None = None, *, prove: bool = False) -> dict[str, Any]:
        """Send our handshake and read theirs. With `prove`, offer the key proof as a dialer and,
        when the node offers it too, send ours (the node's own proof is left unread)."""
        group = group or self.group
        frame = build_handshake(self.identity, group, nonce=keyproof.new_nonce() if prove else None)
        await self.send(frame)
        theirs = await self.recv(2.0)
        assert theirs is not None and theirs["type"] == "handshake", theirs
        if prove and keyproof.offers_proof(theirs):
            await self.send(keyproof.prove(self.identity, frame, theirs, group, we_dialed=True))
        return theirs

    async def recv(self, timeout: float = 2.0) -> dict[str, Any] | None:
        """The next frame, or None at EOF / timeout."""
        assert self.reader is not None
        try:
            return await asyncio.wait_for(framing.read_frame(self.reader), timeout)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, framing.FrameTooLarge):
            return None

    async def frames_until_closed(self, timeout: float) -> tuple[list[dict[str, Any]], bool]:
        """Read until the node closes on us (True) or the timeout passes (False)."""
        assert self.reader is not None
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return got, False
            try:
                got.append(await asyncio.wait_for(framing.read_frame(self.reader), remaining))
            except TimeoutError:
                return got, False
            except (asyncio.IncompleteReadError, ConnectionError):
                return got, True

    async def send_cmb(self, cmb: CMB | dict[str, Any]) -> None:
        body = cmb.to_wire() if isinstance(cmb, CMB) else cmb
        await self.send({"type": "cmb", "timestamp": now_ms(), "cmb": body})

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()
