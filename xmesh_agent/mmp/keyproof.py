"""Proof of key possession at handshake (§3.1.3, §18.3: "challenge the node to sign a nonce").

Negotiated, so peers that cannot prove keep working under tofu: a node that can prove lists
`KEY_PROOF_EXTENSION` in its handshake's `extensions` and carries a fresh `nonce`. When both
handshakes list it, each side sends one `handshake-proof` frame before anything else:
`{type: "handshake-proof", proof: base64url ed25519 signature}`.

The signed bytes follow the shape of the MMP v2.0 handshake transcript (the stock node's
`handshake-v2.js`, not yet live there): a transcript binding the version, group, both nonces (the
dialer's first), both parties' nodeId, identity key, e2e key, name, implementation and offered
extensions, and the selected extensions; the proof signs domain + role + hex(SHA-256(transcript)).
The dialer is the "client". A proof therefore answers the other side's fresh nonce, for this pair
of handshakes and this role only: it cannot be replayed on another connection.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from xmesh_agent.identity import NodeIdentity, b64url_encode, b64url_field, verify_signature
from xmesh_agent.identity import length_prefixed as _lp

KEY_PROOF_EXTENSION = "mmp-handshake-proof-v2"
PROOF_FRAME = "handshake-proof"
TRANSCRIPT_DOMAIN = b"mmp-handshake-transcript-v2\n"
PROOF_DOMAIN = b"mmp-handshake-proof-v2\n"
_MAX_NONCE = 128
_MAX_EXTENSIONS = 32


def _bytewise(items: Sequence[str]) -> list[str]:
    return sorted((str(i) for i in items), key=lambda s: s.encode("utf-8"))


def new_nonce() -> str:
    return b64url_encode(secrets.token_bytes(32))


def extensions_of(handshake: Mapping[str, Any]) -> list[str]:
    offered = handshake.get("extensions")
    if not isinstance(offered, list):
        return []
    return [e for e in offered[:_MAX_EXTENSIONS] if isinstance(e, str) and len(e) <= 128]


def offers_proof(handshake: Mapping[str, Any]) -> bool:
    """The peer advertises the extension and carries a usable nonce."""
    nonce = handshake.get("nonce")
    return (
        KEY_PROOF_EXTENSION in extensions_of(handshake)
        and isinstance(nonce, str)
        and 16 <= len(nonce) <= _MAX_NONCE
    )


def _party(handshake: Mapping[str, Any]) -> bytes:
    impl = handshake.get("implementation")
    impl = impl if isinstance(impl, Mapping) else {}
    exts = _bytewise(extensions_of(handshake))
    parts = [
        str(handshake.get("nodeId", "")),
        str(handshake.get("publicKey", "")),
        str(handshake.get("e2ePublicKey") or ""),
        str(handshake.get("name", "")),
        str(impl.get("name") or ""),
        str(impl.get("version") or ""),
        str(len(exts)),
        *exts,
    ]
    return b"".join(_lp(p) for p in parts)


def transcript(client: Mapping[str, Any], server: Mapping[str, Any], group: str) -> bytes:
    """The canonical bytes both sides hash: `client` is the dialer's handshake, `server` the other."""
    selected = [KEY_PROOF_EXTENSION]
    return b"".join(
        [
            TRANSCRIPT_DOMAIN,
            _lp(str(client.get("version", ""))),
            _lp(group),
            _lp(str(client.get("nonce", ""))),
            _lp(str(server.get("nonce", ""))),
            _party(client),
            _party(server),
            _lp(str(len(selected))),
            *(_lp(e) for e in selected),
        ]
    )


def proof_payload(role: str, transcript_bytes: bytes) -> bytes:
    return PROOF_DOMAIN + _lp(role) + _lp(hashlib.sha256(transcript_bytes).hexdigest())


def _roles(
    ours: Mapping[str, Any], theirs: Mapping[str, Any], *, we_dialed: bool
) -> tuple[Mapping[str, Any], Mapping[str, Any], str, str]:
    """(client handshake, server handshake, our role, their role)."""
    if we_dialed:
        return ours, theirs, "client", "server"
    return theirs, ours, "server", "client"


def prove(
    identity: NodeIdentity, ours: Mapping[str, Any], theirs: Mapping[str, Any], group: str, *, we_dialed: bool
) -> dict[str, Any]:
    client, server, role, _ = _roles(ours, theirs, we_dialed=we_dialed)
    signature = identity.sign(proof_payload(role, transcript(client, server, group)))
    return {"type": PROOF_FRAME, "proof": b64url_encode(signature)}


def check_proof(
    frame: Mapping[str, Any] | None,
    ours: Mapping[str, Any],
    theirs: Mapping[str, Any],
    public_key: bytes,
    group: str,
    *,
    we_dialed: bool,
) -> bool:
    """The peer's `handshake-proof` verifies with the key its handshake announced."""
    if not isinstance(frame, Mapping) or frame.get("type") != PROOF_FRAME:
        return False
    signature = b64url_field(frame.get("proof"), 128)
    if signature is None:
        return False
    client, server, _, role = _roles(ours, theirs, we_dialed=we_dialed)
    return verify_signature(public_key, proof_payload(role, transcript(client, server, group)), signature)
