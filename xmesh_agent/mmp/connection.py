"""Links: one framed, bidirectional path to one peer, over TCP (§4.1/§4.3) or through a relay (§4.4).

The node's session logic (handshake, heartbeat, dispatch) is transport-blind: it reads frames with
`recv()` and writes them with `send()`, whatever carries them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from xmesh_agent.mmp import framing

log = logging.getLogger(__name__)

TransportKind = Literal["tcp", "relay"]


@dataclass
class PeerInfo:
    """A connected, handshaken peer as the rest of the runtime sees it."""

    node_id: str
    name: str
    public_key: bytes
    group: str
    version: str
    transport: TransportKind
    address: str


class Link:
    """A framed path to one peer. `recv` returns None once the path is closed."""

    kind: TransportKind = "tcp"
    address: str = ""
    outbound: bool = False
    remote_node_id: str | None = None  # set once the peer's handshake has been read

    async def send(self, frame: dict[str, Any]) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    async def recv(self) -> dict[str, Any] | None:  # pragma: no cover - interface
        raise NotImplementedError

    async def close(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class TcpLink(Link):
    """Length-prefixed JSON over a TCP stream. Oversize or zero lengths close it (§4.1)."""

    kind: TransportKind = "tcp"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, outbound: bool):
        self.reader = reader
        self.writer = writer
        self.outbound = outbound
        peer = writer.get_extra_info("peername")
        self.address = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self._closed = False
        self._send_lock = asyncio.Lock()

    async def send(self, frame: dict[str, Any]) -> bool:
        if self._closed:
            return False
        try:
            data = framing.encode_frame(frame)
        except (framing.FrameTooLarge, TypeError, ValueError) as exc:
            log.warning("not sending frame %s: %s", frame.get("type"), exc)
            return False
        try:
            async with self._send_lock:
                self.writer.write(data)
                await self.writer.drain()
            return True
        except (ConnectionError, OSError, RuntimeError):
            await self.close()
            return False

    async def recv(self) -> dict[str, Any] | None:
        if self._closed:
            return None
        try:
            return await framing.read_frame(self.reader)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, framing.FrameTooLarge) as exc:
            if isinstance(exc, framing.FrameTooLarge):
                log.info("closing %s: %s", self.address, exc)
            await self.close()
            return None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)


class RelayLink(Link):
    """The path to one peer through the relay: frames go out in `{to, payload}` envelopes.

    Inbound frames wait in a bounded queue; `deliver` waits for room rather than dropping, which
    holds back the relay connection's reader and, through the relay, the sender (backpressure).
    """

    kind: TransportKind = "relay"

    def __init__(
        self,
        peer_node_id: str,
        sender: Callable[[dict[str, Any]], Awaitable[bool]],
        *,
        outbound: bool,
        address: str = "relay",
        queue_limit: int = 1024,
    ):
        self.peer_node_id = peer_node_id
        self._sender = sender
        self.outbound = outbound
        self.address = address
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=queue_limit)
        self._room = asyncio.Event()
        self._closed = False

    def feed(self, frame: dict[str, Any] | None) -> None:
        """Deliver an inbound frame without waiting (None = the path is gone). Drops when full."""
        if self._closed:
            return
        if frame is None:
            self._closed = True
            self._room.set()  # whoever waits in deliver() gives up
            # Make room for the end marker even when full: closing must never be lost.
            while self._queue.full():
                self._queue.get_nowait()
            self._queue.put_nowait(None)
            return
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(frame)

    async def deliver(self, frame: dict[str, Any]) -> bool:
        """Deliver an inbound frame, waiting while the session is behind. False once closed."""
        while not self._closed and self._queue.full():
            self._room.clear()
            await self._room.wait()
        if self._closed:
            return False
        self._queue.put_nowait(frame)
        return True

    async def send(self, frame: dict[str, Any]) -> bool:
        if self._closed:
            return False
        return await self._sender({"to": self.peer_node_id, "payload": frame})

    async def recv(self) -> dict[str, Any] | None:
        if self._closed and self._queue.empty():
            return None
        frame = await self._queue.get()
        self._room.set()
        return frame

    async def close(self) -> None:
        self.feed(None)
