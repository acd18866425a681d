"""Stock reference node frames other than `cmb`: handshake, relay envelopes, attestations.

Stock `sym` 0.12.x announces `version: "0.2.3"`, carries its group as `room` and adds an
X25519 `e2ePublicKey`. Over its relay it authenticates with `relay-auth`, receives envelopes
`{from, fromName, payload}`, answers `relay-ping` with `relay-pong`, and gossips signed
`attestation` frames about the CMBs it gated. See docs/interop.md.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from xmesh_agent.identity import NodeIdentity, b64url_decode, b64url_encode, verify_signature
from xmesh_agent.mmp.cmb import CAT7, SIG_ALG
from xmesh_agent.mmp.e2e import E2EError, X25519KeyPair, spki_decode, spki_encode

STOCK_VERSION = "0.2.3"
STOCK_VERSION_RE = re.compile(r"^0\.\d+\.\d+$")
ATTESTATION_GENESIS = "genesis"
VERDICTS = ("admit", "guard", "redundant", "reject", "silent")


# ── handshake ─────────────────────────────────────────────────────────────────────────────


def is_stock_handshake(frame: Mapping[str, Any]) -> bool:
    """A handshake from a stock node: a pre-1.0 version (0.2.x), or `room` without `group`."""
    if not isinstance(frame, Mapping) or frame.get("type") != "handshake":
        return False
    version = frame.get("version")
    if isinstance(version, str) and STOCK_VERSION_RE.match(version):
        return True
    return "group" not in frame and isinstance(frame.get("room"), str)


def handshake_group(frame: Mapping[str, Any]) -> str:
    """The peer's group whichever dialect it speaks (`group`, else stock `room`, else default)."""
    for name in ("group", "room"):
        value = frame.get(name)
        if isinstance(value, str) and value:
            return value
    return "default"


def stock_handshake_fields(
    identity: NodeIdentity, group: str, e2e_public_key: bytes | str | X25519KeyPair
) -> dict[str, Any]:
    """Fields to ADD to our spec handshake so a stock node can read it: `room` and `e2ePublicKey`.

    Our handshake then carries both `group` (spec) and `room` (stock) with the same value.
    `identity` is accepted for symmetry with the other builders; the stock node reads our
    `publicKey` (base64url ed25519) from the spec fields unchanged.
    """
    del identity
    if isinstance(e2e_public_key, X25519KeyPair):
        announced = e2e_public_key.public_spki_b64
    elif isinstance(e2e_public_key, bytes):
        announced = spki_encode(e2e_public_key)
    else:
        spki_decode(e2e_public_key)
        announced = e2e_public_key
    return {"room": group, "e2ePublicKey": announced}


def stock_handshake(
    identity: NodeIdentity,
    group: str,
    e2e_public_key: bytes | str | X25519KeyPair,
    lifecycle_role: str = "participant",
) -> dict[str, Any]:
    """A handshake exactly as a stock 0.12.1 node writes one (field order included)."""
    fields = stock_handshake_fields(identity, group, e2e_public_key)
    return {
        "type": "handshake",
        "nodeId": identity.node_id,
        "name": identity.name,
        "version": STOCK_VERSION,
        "extensions": [],
        "room": group,
        "publicKey": identity.public_key_b64url,
        "e2ePublicKey": fields["e2ePublicKey"],
        "lifecycleRole": lifecycle_role,
    }


@dataclass(frozen=True)
class StockHandshake:
    node_id: str
    name: str
    group: str
    version: str | None
    public_key: bytes | None
    e2e_public_key: bytes | None
    lifecycle_role: str


def parse_stock_handshake(frame: Mapping[str, Any]) -> StockHandshake:
    """Read a (stock or spec) handshake; raises ValueError naming the missing/bad field."""
    if not isinstance(frame, Mapping) or frame.get("type") != "handshake":
        raise ValueError("not a handshake frame")
    node_id, name = frame.get("nodeId"), frame.get("name")
    if not isinstance(node_id, str) or not node_id:
        raise ValueError("handshake without nodeId")
    public_key = None
    pk = frame.get("publicKey")
    if isinstance(pk, str):
        try:
            raw = b64url_decode(pk)
        except (ValueError, UnicodeEncodeError) as exc:
            raise ValueError("handshake publicKey is not base64url") from exc
        if len(raw) != 32:
            raise ValueError("handshake publicKey is not a 32-byte ed25519 key")
        public_key = raw
    e2e = None
    if frame.get("e2ePublicKey") is not None:
        try:
            e2e = spki_decode(frame["e2ePublicKey"])
        except E2EError as exc:
            raise ValueError(str(exc)) from exc
    version = frame.get("version")
    role = frame.get("lifecycleRole")
    return StockHandshake(
        node_id=node_id,
        name=name if isinstance(name, str) else "",
        group=handshake_group(frame),
        version=version if isinstance(version, str) else None,
        public_key=public_key,
        e2e_public_key=e2e,
        lifecycle_role=role if isinstance(role, str) else "participant",
    )


# ── relay ─────────────────────────────────────────────────────────────────────────────────


@dataclass
class RelayMessage:
    """One message from a relay: a control frame (`kind` = its type) or a delivery (`deliver`)."""

    kind: str
    payload: dict[str, Any] | None = None
    from_id: str | None = None
    from_name: str | None = None
    peers: list[dict[str, Any]] = field(default_factory=list)
    node_id: str | None = None
    name: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)


def decode_relay_message(msg: Mapping[str, Any]) -> RelayMessage | None:
    """Classify a relay->node message; None for anything unreadable (dropped silently)."""
    if not isinstance(msg, Mapping):
        return None
    raw = dict(msg)
    kind = msg.get("type")
    if kind is None and isinstance(msg.get("payload"), Mapping):
        sender = msg.get("from")
        if not isinstance(sender, str) or not sender:
            return None
        name = msg.get("fromName")
        return RelayMessage(
            kind="deliver",
            payload=dict(msg["payload"]),
            from_id=sender,
            from_name=name if isinstance(name, str) else None,
            raw=raw,
        )
    if not isinstance(kind, str):
        return None
    out = RelayMessage(kind=kind, raw=raw)
    if kind == "relay-peers":
        peers = msg.get("peers")
        out.peers = [dict(p) for p in peers if isinstance(p, Mapping)] if isinstance(peers, list) else []
    elif kind in ("relay-peer-joined", "relay-peer-left"):
        out.node_id = msg.get("nodeId") if isinstance(msg.get("nodeId"), str) else None
        out.name = msg.get("name") if isinstance(msg.get("name"), str) else None
    return out


def relay_auth(identity: NodeIdentity, token: str | None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "relay-auth", "nodeId": identity.node_id, "name": identity.name}
    if token:
        frame["token"] = token
    return frame


def relay_envelope(payload: Mapping[str, Any], to: str | None = None) -> dict[str, Any]:
    """Node->relay envelope; stock nodes always address one peer (`to` first, then `payload`)."""
    return {"to": to, "payload": dict(payload)} if to else {"payload": dict(payload)}


def relay_pong() -> dict[str, str]:
    return {"type": "relay-pong"}


# ── attestation ───────────────────────────────────────────────────────────────────────────


def attestation_payload(att: Mapping[str, Any]) -> bytes:
    """The bytes a stock attester signs: nine fields joined by `|` (categories in CAT7 order)."""

    def part(name: str) -> str:
        value = att.get(name)
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    cats = att.get("categories") if isinstance(att.get("categories"), Mapping) else {}
    canonical = ",".join(f"{f}:{cats.get(f) or ''}" for f in CAT7)
    parts = [part("of"), part("by"), part("at"), part("roster"), part("verdict"), canonical]
    parts += [part("role"), part("seq"), part("prev")]
    return "|".join(parts).encode("utf-8")


def verify_attestation(att: Mapping[str, Any], public_key: bytes | str) -> bool:
    """Verify an attestation against its attester's (`by`) ed25519 key; algorithm pinned."""
    if not isinstance(att, Mapping) or att.get("sigAlg") != SIG_ALG or not isinstance(att.get("sig"), str):
        return False
    try:
        key = public_key if isinstance(public_key, bytes) else b64url_decode(public_key)
        sig = b64url_decode(att["sig"])
    except (ValueError, UnicodeEncodeError):
        return False
    if len(key) != 32:
        return False
    return verify_signature(key, attestation_payload(att), sig)


def next_prev(sig: str) -> str:
    """The `prev` of an attester's next attestation: SHA-256 hex of this one's base64url sig text."""
    return hashlib.sha256(sig.encode("ascii")).hexdigest()


def build_attestation(
    identity: NodeIdentity,
    *,
    of: str,
    roster: str,
    verdict: str,
    categories: Mapping[str, str],
    at: int,
    seq: int,
    prev: str = ATTESTATION_GENESIS,
    method: str = "heuristic",
    role: str = "participant",
) -> dict[str, Any]:
    """A signed attestation in the stock field order; gossip it as {type: attestation, attestation}."""
    att: dict[str, Any] = {
        "of": of,
        "by": identity.node_id,
        "at": at,
        "roster": roster,
        "method": method,
        "verdict": verdict,
        "categories": {f: categories.get(f, "silent") for f in CAT7},
        "role": role,
        "seq": seq,
        "prev": prev,
    }
    att["sig"] = b64url_encode(identity.sign(attestation_payload(att)))
    att["sigAlg"] = SIG_ALG
    return att
