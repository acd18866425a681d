"""The WebSocket relay server (spec §4.4): per-token channels, presence, routing envelopes, keepalive.

Pure routing: payloads are forwarded verbatim and never inspected. One JSON text message per frame.
- Clients authenticate with `relay-auth` {nodeId, name, token} within `auth_timeout` (4001 if not);
  a malformed auth closes with 4002, a token the relay does not hold with 4003.
- Each token is its own channel; with no tokens configured the relay is open (one default channel,
  any token accepted). Nothing (frames, peer lists, presence) crosses channels.
- On auth the client gets `relay-peers` (the others on its channel) and the others `relay-peer-joined`;
  a disconnect announces `relay-peer-left`.
- `{to, payload}` goes to that node only, `{payload}` to every other node on the channel; the relay
  delivers `{from, fromName, payload}` (plus `to` on a targeted frame, so receivers can tell directed
  from broadcast, §9.2.2).
- Keepalive: `relay-ping` every `ping_interval`; two unanswered pings close with 4005 (any message
  from the client counts as an answer, and a client whose frames are held back is not counted).
- Backpressure: each client has a bounded outbox (`outbox_limit` messages, `outbox_bytes`). A routed
  frame for a full outbox makes the relay stop reading the sender until there is room, so a burst
  slows the publisher down instead of being dropped. A receiver that makes no progress at all for
  `stall_timeout` is taken for dead and closed with 1013; a slow but live one is never closed for it.
- Duplicate identity (§4.4.7), applied to a clashing nodeId or name on the channel: the holder is
  the legitimate one and the newcomer is closed with 4006, unless the holder is older than
  `duplicate_window`, stopped answering pings, and either proved no key or the newcomer proves the
  same key (proof.py): then the holder is closed with 4004. A client that proves a key binds its
  nodeId to it on the channel for the relay's lifetime. A replaced connection with the same nodeId is
  not announced as left; one with another nodeId (a name clash) is, or peers would keep a ghost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from xmesh_agent.mmp.framing import MAX_FRAME_BYTES
from xmesh_agent.mmp.relay import proof
from xmesh_agent.mmp.relay.member import RelayMember

log = logging.getLogger(__name__)

AUTH_TIMEOUT = 4001
AUTH_INVALID = 4002
INVALID_TOKEN = 4003
REPLACED = 4004
HEARTBEAT_TIMEOUT = 4005
DUPLICATE_REJECTED = 4006
TRY_AGAIN_LATER = 1013  # the client stopped reading: its outbox stayed full without progress

OPEN_CHANNEL = ""
MAX_ID_LENGTH = 256
MISSED_PINGS_LIMIT = 2
MAX_BOUND_PER_CHANNEL = 65536
# A relay message is an envelope ({to|from, fromName, payload}) around one frame of up to 1 MiB, so
# it must be allowed slightly more than the frame itself or a max-size frame could never be relayed.
RELAY_HEADROOM = 64 * 1024
MAX_MESSAGE_BYTES = MAX_FRAME_BYTES + RELAY_HEADROOM


def _dumps(frame: Any) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def _parse(raw: str | bytes) -> dict[str, Any] | None:
    """A JSON object, or None for anything else (dropped silently)."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        value = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nesting too deep
        return None
    return value if isinstance(value, dict) else None


def _ident(value: Any) -> str | None:
    if isinstance(value, str) and value.strip() and len(value) <= MAX_ID_LENGTH:
        return value
    return None


class RelayServer:
    """An MMP relay on `host:port` (port 0 picks a free one; read `.port` after `start`)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: Iterable[str] | None = None,
        *,
        auth_timeout: float = 10.0,
        ping_interval: float = 10.0,
        duplicate_window: float = 5.0,
        max_frame_bytes: int = MAX_MESSAGE_BYTES,
        outbox_limit: int = 1024,
        outbox_bytes: int = 16 * 1024 * 1024,
        stall_timeout: float = 30.0,
    ):
        self.host = host
        self._requested_port = port
        self.tokens: frozenset[str] = frozenset(tokens or ())
        self.auth_timeout = auth_timeout
        self.ping_interval = ping_interval
        self.duplicate_window = duplicate_window
        self.max_frame_bytes = max_frame_bytes
        self.outbox_limit = outbox_limit
        self.outbox_bytes = outbox_bytes
        self.stall_timeout = stall_timeout
        self._channels: dict[str, dict[str, RelayMember]] = {}
        self._bound: dict[str, dict[str, bytes]] = {}  # channel -> nodeId (lower case) -> proven key
        self._server: Server | None = None
        self._keepalive: asyncio.Task[None] | None = None

    @property
    def open_mode(self) -> bool:
        return not self.tokens

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("relay server not started")
        return self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def peers(self, channel: str | None = None) -> list[tuple[str, str]]:
        """(nodeId, name) of the nodes connected on a channel (the token; "" in open mode)."""
        key = OPEN_CHANNEL if self.open_mode else (channel or "")
        return [(c.node_id, c.name) for c in self._channels.get(key, {}).values()]

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await serve(
            self._handle,
            self.host,
            self._requested_port,
            ping_interval=None,  # liveness is the relay-ping/relay-pong exchange
            max_size=self.max_frame_bytes,
        )
        self._keepalive = asyncio.get_running_loop().create_task(self._keepalive_loop())
        log.info("relay listening on %s (%s)", self.url, "open" if self.open_mode else "token channels")

    async def stop(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
            self._keepalive = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._channels.clear()

    async def __aenter__(self) -> RelayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- connection lifecycle ----------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        client = await self._authenticate(ws)
        if client is None:
            return
        try:
            async for raw in ws:
                client.missed_pings = 0  # any message shows the client is alive
                await self._on_frame(client, raw)
        except ConnectionClosed:
            pass
        finally:
            self._unregister(client)

    async def _refuse(self, ws: ServerConnection, code: int, reason: str) -> None:
        if code in (INVALID_TOKEN, DUPLICATE_REJECTED):
            with contextlib.suppress(ConnectionClosed):
                await ws.send(_dumps({"type": "relay-error", "message": reason}))
        await ws.close(code, reason)

    async def _read_auth(self, ws: ServerConnection) -> dict[str, Any] | None:
        """The first JSON object within the auth deadline (non-JSON chatter is skipped)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.auth_timeout
        while True:
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                raw = await asyncio.wait_for(ws.recv(), remaining)
            except TimeoutError:
                await ws.close(AUTH_TIMEOUT, "auth timeout")
                return None
            except ConnectionClosed:
                return None
            msg = _parse(raw)
            if msg is not None:
                return msg

    async def _authenticate(self, ws: ServerConnection) -> RelayMember | None:
        msg = await self._read_auth(ws)
        if msg is None:
            return None
        node_id, name = _ident(msg.get("nodeId")), _ident(msg.get("name"))
        if msg.get("type") != "relay-auth" or node_id is None or name is None:
            await self._refuse(ws, AUTH_INVALID, "relay-auth with nodeId and name required")
            return None
        token = msg.get("token")
        if not self.open_mode and (not isinstance(token, str) or token not in self.tokens):
            await self._refuse(ws, INVALID_TOKEN, "invalid token")
            return None
        channel = OPEN_CHANNEL if self.open_mode else token
        key = proof.parse_key(msg.get("publicKey"))
        if "publicKey" in msg and key is None:
            await self._refuse(ws, AUTH_INVALID, "publicKey is not a 32-byte ed25519 key")
            return None
        presented = token if isinstance(token, str) else ""
        if key is not None and not await self._challenge(ws, key, node_id, name, presented):
            return None
        bound = self._bound.setdefault(channel, {})
        if bound.get(node_id.lower(), key) != key:
            log.warning("relay: %s/%s refused: the nodeId proved another key here", name, node_id)
            await self._refuse(ws, DUPLICATE_REJECTED, "duplicate identity: nodeId bound to another key")
            return None
        members = self._channels.setdefault(channel, {})
        loop = asyncio.get_running_loop()
        now = loop.time()
        # No await between this check and registration: two racing claims cannot both win.
        clashes = [c for c in members.values() if c.node_id == node_id or c.name == name]
        if not all(self._may_replace(c, key, now) for c in clashes):
            log.warning(
                "relay: duplicate identity %s/%s rejected (the holder keeps its place)", name, node_id
            )
            await self._refuse(ws, DUPLICATE_REJECTED, "duplicate identity: the existing connection holds it")
            return None
        for old in clashes:
            old.replaced = True
            del members[old.node_id]
            why = proof.PROVEN_REPLACED if key is not None else "replaced: the holder stopped answering"
            loop.create_task(old.ws.close(REPLACED, why))
            if old.node_id != node_id:
                self._announce(channel, {"type": "relay-peer-left", "nodeId": old.node_id, "name": old.name})
            log.info("relay: %s/%s replaced a stale connection", name, node_id)
        if key is not None and len(bound) < MAX_BOUND_PER_CHANNEL:
            bound[node_id.lower()] = key
        client = RelayMember(ws, node_id, name, channel, now, self.outbox_limit, self.outbox_bytes)
        client.public_key = key
        client.writer = loop.create_task(client.write_loop())
        client.on_stalled = self._drop_stalled
        peers = [{"nodeId": c.node_id, "name": c.name} for c in members.values()]
        members[node_id] = client
        client.enqueue(_dumps({"type": "relay-peers", "peers": peers}))
        self._announce(channel, {"type": "relay-peer-joined", "nodeId": node_id, "name": name}, skip=client)
        log.info("relay: %s (%s) joined channel #%d", name, node_id, len(members))
        return client

    async def _challenge(self, ws: ServerConnection, key: bytes, node_id: str, name: str, token: str) -> bool:
        """The client signs a fresh nonce with the key it announced (proof.py); 4002 if it does not."""
        challenge = proof.new_challenge()
        try:
            await ws.send(_dumps(challenge))
            reply = _parse(await asyncio.wait_for(ws.recv(), self.auth_timeout))
        except (TimeoutError, ConnectionClosed):
            reply = None
        if proof.verify(reply, key, challenge["nonce"], node_id, name, token):
            return True
        log.warning("relay: %s/%s failed to prove its key", name, node_id)
        with contextlib.suppress(ConnectionClosed):
            await ws.close(AUTH_INVALID, "key proof failed")
        return False

    def _may_replace(self, holder: RelayMember, key: bytes | None, now: float) -> bool:
        """A holder gives way only when stale and silent, and only to its own key if it proved one."""
        answered_lately = holder.missed_pings < 1 or now - holder.pinged_at < min(2.0, self.ping_interval / 2)
        if now - holder.connected_at < self.duplicate_window or answered_lately:
            return False
        return holder.public_key is None or holder.public_key == key

    def _unregister(self, client: RelayMember) -> None:
        client.release()
        if client.writer is not None:
            client.writer.cancel()
        members = self._channels.get(client.channel, {})
        if client.replaced or members.get(client.node_id) is not client:
            return
        del members[client.node_id]
        if not members:
            self._channels.pop(client.channel, None)
        self._announce(
            client.channel, {"type": "relay-peer-left", "nodeId": client.node_id, "name": client.name}
        )
        log.info("relay: %s (%s) left", client.name, client.node_id)

    def _drop_stalled(self, client: RelayMember, reason: str) -> None:
        """A receiver that stopped reading leaves at once; whoever waits for its room moves on."""
        log.warning("relay: %s %s; closing", client.name, reason)
        self._unregister(client)
        client.replaced = True  # already announced as left
        asyncio.get_running_loop().create_task(self._close(client.ws, TRY_AGAIN_LATER, reason))

    @staticmethod
    async def _close(ws: ServerConnection, code: int, reason: str) -> None:
        """Close, but do not wait on a close handshake that a reader with full buffers never answers."""
        try:
            await asyncio.wait_for(ws.close(code, reason), 2.0)
        except (TimeoutError, ConnectionClosed):
            ws.transport.abort()

    # --- frames ------------------------------------------------------------------------------------

    def _announce(self, channel: str, frame: dict[str, Any], skip: RelayMember | None = None) -> None:
        text = _dumps(frame)
        for member in list(self._channels.get(channel, {}).values()):
            if member is not skip:
                member.enqueue(text)

    async def _on_frame(self, client: RelayMember, raw: str | bytes) -> None:
        msg = _parse(raw)
        if msg is None:
            return
        kind = msg.get("type")
        if kind == "relay-pong":
            client.missed_pings = 0
            return
        if kind == "relay-ping":
            client.enqueue(_dumps({"type": "relay-pong"}))
            return
        if kind == "relay-auth" or "payload" not in msg:
            return  # already authenticated / not a routing envelope
        members = self._channels.get(client.channel, {})
        envelope: dict[str, Any] = {"from": client.node_id, "fromName": client.name}
        target = msg.get("to")
        if target is None:
            envelope["payload"] = msg["payload"]
            await self._route(client, [m for m in members.values() if m is not client], _dumps(envelope))
            return
        recipient = members.get(target) if isinstance(target, str) else None
        if recipient is not None and recipient is not client:
            envelope["to"] = target
            envelope["payload"] = msg["payload"]
            await self._route(client, [recipient], _dumps(envelope))

    async def _route(self, sender: RelayMember, recipients: list[RelayMember], text: str) -> None:
        """Queue for each recipient, waiting for room; meanwhile the sender's messages stay unread."""
        for recipient in recipients:
            if recipient.closing:
                continue
            if not recipient.full():
                recipient.put_now(text)
                continue
            sender.held += 1
            try:
                await recipient.push(text, self.stall_timeout)
            finally:
                sender.held -= 1

    async def _keepalive_loop(self) -> None:
        ping = _dumps({"type": "relay-ping"})
        while True:
            await asyncio.sleep(self.ping_interval)
            for members in list(self._channels.values()):
                for client in list(members.values()):
                    if client.held:
                        client.enqueue(ping)  # unread because we hold it back, not because it is gone
                        continue
                    if client.missed_pings >= MISSED_PINGS_LIMIT:
                        log.info("relay: %s missed %d pings; closing", client.name, client.missed_pings)
                        self._unregister(client)
                        client.replaced = True  # already announced as left
                        asyncio.get_running_loop().create_task(
                            client.ws.close(HEARTBEAT_TIMEOUT, "heartbeat timeout")
                        )
                        continue
                    client.missed_pings += 1
                    client.pinged_at = asyncio.get_running_loop().time()
                    client.enqueue(ping)


async def serve_forever(
    host: str = "127.0.0.1", port: int = 8787, tokens: Iterable[str] | None = None
) -> None:
    """Run a relay until cancelled (the `xmesh-agent relay` command)."""
    server = RelayServer(host, port, tokens)
    await server.start()
    try:
        await asyncio.Future()
    finally:
        await server.stop()
