"""One authenticated connection on the relay, with its bounded outbox and the backpressure around it.

Routed frames wait for room (`push`) while the receiver makes progress; control and presence
messages never wait (`enqueue`). A receiver with no progress for the stall timeout, or one that
lets control messages pile up far past the bound, is handed to `on_stalled` (the server drops it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

# Control and presence messages never wait for room; this many beyond the bound is a dead reader.
CONTROL_SLACK = 256


@dataclass(eq=False)
class RelayMember:
    """A node on a relay channel: `outbox` is written to its socket, in order, by `write_loop`."""

    ws: ServerConnection
    node_id: str
    name: str
    channel: str
    connected_at: float
    limit: int = 1024
    byte_limit: int = 16 * 1024 * 1024
    outbox: asyncio.Queue[str] = field(default_factory=asyncio.Queue)  # bounded by push/enqueue
    queued_chars: int = 0
    sent: int = 0  # messages written so far: the progress a held-back sender watches
    held: int = 0  # > 0 while this client's reading waits for room in a recipient's outbox
    missed_pings: int = 0
    pinged_at: float = 0.0  # when the last unanswered ping went out
    public_key: bytes | None = None  # the key it proved at auth, if it offered one
    replaced: bool = False
    closing: bool = False
    room: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    writer: asyncio.Task[None] | None = field(default=None, repr=False)
    on_stalled: Callable[[RelayMember, str], None] | None = field(default=None, repr=False)

    def full(self) -> bool:
        """At the bound: `limit` messages, or about `byte_limit` bytes queued."""
        return self.outbox.qsize() >= self.limit or (self.queued_chars >= self.byte_limit > 0)

    def put_now(self, text: str) -> None:
        """Queue without waiting (callers checked `full`, or it is a control message)."""
        self.queued_chars += len(text)
        self.outbox.put_nowait(text)

    def enqueue(self, text: str) -> None:
        """A control or presence message: never waits; a reader that lets them pile up is dead."""
        if self.closing:
            return
        if self.outbox.qsize() >= self.limit + CONTROL_SLACK:
            self.give_up("outbound queue full")
            return
        self.put_now(text)

    async def push(self, text: str, stall_timeout: float) -> bool:
        """A routed frame: wait for room while the receiver makes progress. False if it is gone."""
        while self.full() and self.outbox.qsize() > 0:
            if self.closing:
                return False
            progress = self.sent
            self.room.clear()
            try:
                await asyncio.wait_for(self.room.wait(), stall_timeout)
            except TimeoutError:
                if self.sent == progress and self.full():
                    self.give_up("receiver stalled")
                    return False
        if self.closing:
            return False
        self.put_now(text)
        return True

    def give_up(self, reason: str) -> None:
        if not self.closing and self.on_stalled is not None:
            self.on_stalled(self, reason)

    def release(self) -> None:
        self.closing = True
        self.room.set()

    async def write_loop(self) -> None:
        """One writer per client keeps its frames in order and a slow reader from stalling others."""
        with contextlib.suppress(ConnectionClosed):
            while True:
                text = await self.outbox.get()
                self.queued_chars -= len(text)
                await self.ws.send(text)
                self.sent += 1
                if not self.full():
                    self.room.set()
