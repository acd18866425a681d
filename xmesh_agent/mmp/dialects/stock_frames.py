"""Stock reference node `attestation` frames: the signed verdicts a stock node gossips about the
CMBs it gated (docs/interop.md). Our node reads them in captures and vectors; it does not gate
by them. Handshakes are read by handshake.py and classified by session.dialect_of; relay
messages are read by relay/client.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from xmesh_agent.identity import NodeIdentity, b64url_decode, b64url_encode, verify_signature
from xmesh_agent.mmp.cmb import CAT7, SIG_ALG

ATTESTATION_GENESIS = "genesis"
VERDICTS = ("admit", "guard", "redundant", "reject", "silent")


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
