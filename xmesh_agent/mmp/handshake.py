"""The §5.2 handshake frame: what we announce and how we read a peer's announcement."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from xmesh_agent.identity import NodeIdentity, b64url_decode
from xmesh_agent.mmp.keyproof import KEY_PROOF_EXTENSION

MMP_VERSION = "1.1.0"
DEFAULT_GROUP = "default"
GROUP_RE = re.compile(r"^[a-z0-9\-_.]{1,64}$")
_MAX_NAME = 256
_MAX_NODE_ID = 128


class HandshakeError(ValueError):
    """The first frame is not an acceptable handshake: the connection closes."""


@dataclass(frozen=True)
class Handshake:
    node_id: str
    name: str
    public_key: bytes
    group: str
    version: str
    lifecycle_role: str


def valid_group(group: str) -> bool:
    return bool(GROUP_RE.fullmatch(group))


def build_handshake(
    identity: NodeIdentity, group: str, e2e_public_key: str | None = None, *, nonce: str | None = None
) -> dict[str, Any]:
    """Our announcement. `room` repeats the group because stock nodes read that name; `e2ePublicKey`
    (X25519 SPKI, base64) makes stock nodes encrypt what they send us (docs/interop.md). With a
    `nonce` we offer to prove our key and ask the peer to prove its own (keyproof.py)."""
    frame: dict[str, Any] = {
        "type": "handshake",
        "nodeId": identity.node_id,
        "name": identity.name,
        "publicKey": identity.public_key_b64url,
        "version": MMP_VERSION,
        "extensions": [KEY_PROOF_EXTENSION] if nonce else [],
        "lifecycleRole": "participant",
        "group": group,
        "room": group,
    }
    if e2e_public_key:
        frame["e2ePublicKey"] = e2e_public_key
    if nonce:
        frame["nonce"] = nonce
    return frame


def parse_handshake(frame: dict[str, Any]) -> Handshake:
    """Validate a peer's handshake. Absent group (and absent `room`) means "default"."""
    if frame.get("type") != "handshake":
        raise HandshakeError(f"expected handshake, got {str(frame.get('type'))[:40]!r}")
    node_id = frame.get("nodeId")
    name = frame.get("name")
    if not isinstance(node_id, str) or not 0 < len(node_id) <= _MAX_NODE_ID:
        raise HandshakeError("handshake without a usable nodeId")
    if not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME:
        raise HandshakeError("handshake without a usable name")
    key_text = frame.get("publicKey")
    if not isinstance(key_text, str) or len(key_text) > 64:
        raise HandshakeError("handshake without a publicKey")
    try:
        public_key = b64url_decode(key_text)
    except (ValueError, UnicodeEncodeError) as exc:
        raise HandshakeError("publicKey is not base64url") from exc
    if len(public_key) != 32:
        raise HandshakeError("publicKey is not a 32-byte ed25519 key")
    group = frame.get("group")
    if group is None:
        group = frame.get("room")
    if group is None:
        group = DEFAULT_GROUP
    if not isinstance(group, str) or not valid_group(group):
        raise HandshakeError("handshake with an invalid group")
    version = frame.get("version")
    role = frame.get("lifecycleRole")
    return Handshake(
        node_id=node_id,
        name=name,
        public_key=public_key,
        group=group,
        version=version if isinstance(version, str) else "",
        lifecycle_role=role if isinstance(role, str) else "participant",
    )
