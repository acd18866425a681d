"""WebSocket relay client (§4.4): authenticate, learn the channel's peers, route frames in envelopes.

The relay is a dumb pipe: it sees `{to, payload}` envelopes and delivers `{from, fromName, payload}`.
Presence frames (`relay-peers`, `relay-peer-joined`, `relay-peer-left`) serve as discovery. With an
identity, `relay-auth` carries our key and we answer our relay's challenge (proof.py).

A close with 4004 (replaced) or 4006 (duplicate rejected) says someone else holds our name or nodeId.
Only a replacement the relay says was proven with our key (`PROVEN_REPLACED`: another process runs
this identity) is an identity collision that stops us; anything else may be anyone's claim, so we
report a `relay-collision`, back off and try again (§4.4.7 asks 4006 not to reconnect; we do, slowly).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.framing import MAX_FRAME_BYTES
from xmesh_agent.mmp.relay import proof

log = logging.getLogger(__name__)

NO_RECONNECT_CODES = {4004: "replaced", 4006: "duplicate-rejected"}
# Envelope overhead on top of a maximal frame: to/from/fromName and the JSON around them.
_MAX_MESSAGE = MAX_FRAME_BYTES + 4096


class RelayClient:
    def __init__(
        self,
        url: str,
        node_id: str,
        name: str,
        *,
        token: str | None = None,
        identity: NodeIdentity | None = None,
        on_peer: Callable[[str, str], None],
        on_peer_left: Callable[[str], None],
        on_payload: Callable[[str, str, dict[str, Any]], Awaitable[None] | None],
        on_disconnect: Callable[[], None],
        on_event: Callable[[str, dict], None],
        reconnect_min: float = 0.5,
        reconnect_max: float = 30.0,
        open_timeout: float = 10.0,
    ):
        self.url = url
        self.node_id = node_id
        self.name = name
        self.token = token
        self.identity = identity
        self._on_peer = on_peer
        self._on_peer_left = on_peer_left
        self._on_payload = on_payload
        self._on_disconnect = on_disconnect
        self._on_event = on_event
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.open_timeout = open_timeout
        self._ws: Any = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self.authenticated = asyncio.Event()
        self.collision: str | None = None
        self.peers: dict[str, str] = {}
        self._background: set[asyncio.Task] = set()

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        self._stopping = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def send(self, envelope: dict[str, Any]) -> bool:
        ws = self._ws
        if ws is None:
            return False
        try:
            text = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError):
            return False
        if len(text.encode("utf-8")) > _MAX_MESSAGE:
            log.warning("not relaying an oversize frame")
            return False
        try:
            await ws.send(text)
            return True
        except (ConnectionClosed, OSError, RuntimeError):
            return False

    def _auth_frame(self) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "relay-auth", "nodeId": self.node_id, "name": self.name}
        if self.token:
            frame["token"] = self.token
        if self.identity is not None:
            frame["publicKey"] = self.identity.public_key_b64url
        return frame

    async def _run(self) -> None:
        backoff = self.reconnect_min
        while not self._stopping:
            code: int | None = None
            reason = ""
            try:
                # No permessage-deflate: on small CMB frames it cost ~10 % of the relay path's CPU
                # (compress and decompress on both hops) for little saved bandwidth.
                async with websockets.connect(
                    self.url,
                    open_timeout=self.open_timeout,
                    max_size=_MAX_MESSAGE,
                    close_timeout=2,
                    compression=None,
                ) as ws:
                    self._ws = ws
                    await ws.send(json.dumps(self._auth_frame()))
                    try:
                        async for message in ws:
                            if await self._handle(message):
                                backoff = self.reconnect_min
                    except ConnectionClosed:
                        pass
                    code, reason = ws.close_code, ws.close_reason or ""
            except ConnectionClosed as exc:
                code, reason = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, "")
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                log.info("relay %s unreachable: %s", self.url, exc)
            finally:
                self._ws = None
                self.authenticated.clear()
                self.peers.clear()
                self._on_disconnect()
            if self._stopping:
                return
            if code in NO_RECONNECT_CODES:
                event = {
                    "name": self.name,
                    "nodeId": self.node_id,
                    "code": code,
                    "reason": NO_RECONNECT_CODES[code],
                    "detail": reason[:120],
                }
                if code == 4004 and reason == proof.PROVEN_REPLACED:
                    self.collision = NO_RECONNECT_CODES[code]
                    self._on_event("identity-collision", event)
                    return
                log.warning(
                    "relay %s: %s/%s is held by another connection (%s %s); retrying",
                    self.url,
                    self.name,
                    self.node_id,
                    code,
                    reason[:120],
                )
                self._on_event("relay-collision", event)
                backoff = max(backoff, self.reconnect_max / 4)
            if code is not None and code != 1000:
                log.info("relay closed the connection with code %s", code)
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, self.reconnect_max)

    async def _handle(self, message: str | bytes) -> bool:
        """Handle one relay message; True when it proves we are authenticated (resets backoff).

        An awaitable from `on_payload` is awaited before the next message is read: that is how a
        receiver that is behind holds the relay back instead of dropping frames.
        """
        try:
            frame = json.loads(message)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return False
        if not isinstance(frame, dict):
            return False
        kind = frame.get("type")
        if kind == "relay-ping":
            self._later(self.send({"type": "relay-pong"}))
        elif kind == proof.CHALLENGE and self.identity is not None:
            reply = proof.answer(self.identity, frame, self.token or "")
            if reply is not None:
                self._later(self.send(reply))
        elif kind == "relay-reauth":
            self._later(self.send(self._auth_frame()))
        elif kind == "relay-peers":
            self.authenticated.set()
            peers = frame.get("peers")
            for entry in peers if isinstance(peers, list) else []:
                if isinstance(entry, dict) and not entry.get("offline"):
                    self._peer_seen(entry.get("nodeId"), entry.get("name"))
            return True
        elif kind == "relay-peer-joined":
            self._peer_seen(frame.get("nodeId"), frame.get("name"))
        elif kind == "relay-peer-left":
            node_id = frame.get("nodeId")
            if isinstance(node_id, str):
                self.peers.pop(node_id, None)
                self._on_peer_left(node_id)
        elif kind is None and isinstance(frame.get("payload"), dict):
            payload, sender = frame["payload"], frame.get("from")
            name = frame.get("fromName")
            if isinstance(sender, str) and sender and isinstance(payload.get("type"), str):
                pending = self._on_payload(sender, name if isinstance(name, str) else "", payload)
                if pending is not None:
                    await pending
        return False

    def _later(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _peer_seen(self, node_id: Any, name: Any) -> None:
        if not isinstance(node_id, str) or not node_id or node_id == self.node_id:
            return
        name = name if isinstance(name, str) else ""
        self.peers[node_id] = name
        self._on_peer(node_id, name)
