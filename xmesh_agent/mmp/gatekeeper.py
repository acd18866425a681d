"""The door of a node: who may wait at it, and what a peer must show to come in.

- `PendingQuota`: inbound connections that have not handshaken yet, capped in total and per source
  (an IPv4 address, or an IPv6 /64), so one host that opens connections and never speaks cannot
  keep everyone else out.
- `greet`: the §5.2 handshake exchange, the key proof when both sides offer it (keyproof.py), and the
  claim of the peer's nodeId against the key it is bound to (verify.py).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Any

from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.connection import Link, PeerInfo, RelayLink
from xmesh_agent.mmp.e2e import X25519KeyPair
from xmesh_agent.mmp.handshake import Handshake, HandshakeError, build_handshake, parse_handshake
from xmesh_agent.mmp.keyproof import check_proof, new_nonce, offers_proof, prove
from xmesh_agent.mmp.session import Session, dialect_of
from xmesh_agent.mmp.verify import Verifier

log = logging.getLogger(__name__)


def source_of(peername: Any) -> str:
    """Whom a pending handshake is counted against: the IPv4 address, or the IPv6 /64."""
    host = peername[0] if isinstance(peername, tuple) and peername else str(peername)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return str(host)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class Ticket:
    """One pending inbound handshake; `release` (idempotent) frees its place."""

    def __init__(self, quota: PendingQuota, source: str):
        self._quota = quota
        self._source: str | None = source

    def release(self) -> None:
        if self._source is not None:
            self._quota._release(self._source)
            self._source = None


class PendingQuota:
    def __init__(self, total: int, per_source: int):
        self.total = total
        self.per_source = per_source
        self.pending = 0
        self._by_source: dict[str, int] = {}

    def acquire(self, source: str) -> Ticket | None:
        """A place at the door, or None when the node or this source already has too many waiting."""
        if self.pending >= self.total or self._by_source.get(source, 0) >= self.per_source:
            return None
        self.pending += 1
        self._by_source[source] = self._by_source.get(source, 0) + 1
        return Ticket(self, source)

    def _release(self, source: str) -> None:
        self.pending -= 1
        left = self._by_source.get(source, 1) - 1
        if left > 0:
            self._by_source[source] = left
        else:
            self._by_source.pop(source, None)


async def greet(
    session: Session,
    identity: NodeIdentity,
    group: str,
    verifier: Verifier,
    *,
    e2e_keypair: X25519KeyPair | None,
    emit: Callable[[str, dict], None],
) -> Handshake | None:
    """Exchange handshakes (and key proofs, when both offer them), then claim the peer's nodeId.
    Fills `session.info` and returns the peer's handshake; None when the peer is refused."""
    link = session.link
    e2e_public = e2e_keypair.public_spki_b64 if e2e_keypair else None
    ours = build_handshake(identity, group, e2e_public, nonce=new_nonce())
    await link.send(ours)
    first = await link.recv()
    if first is None:
        return None
    try:
        hs = parse_handshake(first)
    except HandshakeError as exc:
        log.info("refusing %s: %s", link.address, exc)
        return None
    session.dialect = dialect_of(first)
    session.agree_e2e(e2e_keypair, first)
    if hs.node_id.lower() == identity.node_id.lower():
        return None
    if hs.group != group:
        log.info("refusing %s (%s): group %r is not ours", hs.name, link.address, hs.group)
        return None
    link.remote_node_id = hs.node_id
    if isinstance(link, RelayLink) and hs.node_id.lower() != link.peer_node_id.lower():
        return await _refuse(link, hs, "nodeId is not the one it holds on the relay", emit)
    proven = offers_proof(first)
    if proven:
        await link.send(prove(identity, ours, first, group, we_dialed=link.outbound))
        answer = await link.recv()
        if answer is None:
            return None
        if not check_proof(answer, ours, first, hs.public_key, group, we_dialed=link.outbound):
            return await _refuse(link, hs, "key proof failed", emit)
    refused = verifier.claim(hs.node_id, hs.name, hs.public_key, proven=proven)
    if refused:
        return await _refuse(link, hs, refused, emit)
    session.info = PeerInfo(hs.node_id, hs.name, hs.public_key, hs.group, hs.version, link.kind, link.address)
    return hs


async def _refuse(link: Link, hs: Handshake, reason: str, emit: Callable[[str, dict], None]) -> None:
    log.warning("refusing %s (%s, nodeId %s): %s", hs.name[:80], link.address, hs.node_id[:80], reason)
    emit(
        "peer-refused",
        {"nodeId": hs.node_id[:128], "name": hs.name[:128], "address": link.address, "reason": reason},
    )
    await link.send({"type": "error", "code": 1005, "message": reason})
    return None
