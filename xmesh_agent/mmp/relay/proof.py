"""Proof of key possession on the relay, so a name or nodeId cannot be taken over by claiming it.

A client that puts its identity key (`publicKey`, base64url) in `relay-auth` is challenged by our
relay with `{type: "relay-challenge", nonce}` and answers `{type: "relay-proof", signature}`: an
ed25519 signature over `proof_payload`. Relays that do not challenge (the stock relay) ignore the
extra field, and clients that send no key (stock clients) are never challenged.

What a proven key buys on our relay (server.py): the nodeId stays bound to that key on the channel
for the relay's lifetime, and a connection holding it is replaced only by one that proves the same
key after the holder stopped answering. The replaced one is told so with `PROVEN_REPLACED`, the one
close reason on which our client stops for good (client.py).
"""

from __future__ import annotations

import secrets
from typing import Any

from xmesh_agent.identity import NodeIdentity, b64url_encode, b64url_field, verify_signature
from xmesh_agent.identity import length_prefixed as _lp

CHALLENGE = "relay-challenge"
PROOF = "relay-proof"
DOMAIN = b"mmp-relay-auth-proof-v1\n"
PROVEN_REPLACED = "replaced: a connection that proved this identity's key took its place"


def new_challenge() -> dict[str, str]:
    return {"type": CHALLENGE, "nonce": b64url_encode(secrets.token_bytes(32))}


def proof_payload(nonce: str, node_id: str, name: str, token: str) -> bytes:
    """What the client signs. The token it authenticated with is bound too, so a relay we talk to
    cannot pass our answer on to another relay whose channel token it does not already hold."""
    return DOMAIN + _lp(nonce) + _lp(node_id) + _lp(name) + _lp(token)


def answer(identity: NodeIdentity, challenge: dict[str, Any], token: str) -> dict[str, str] | None:
    """Our `relay-proof` for a challenge, or None when the challenge is unusable."""
    nonce = challenge.get("nonce")
    if not isinstance(nonce, str) or not 16 <= len(nonce) <= 128:
        return None
    signature = identity.sign(proof_payload(nonce, identity.node_id, identity.name, token))
    return {"type": PROOF, "signature": b64url_encode(signature)}


def parse_key(value: Any) -> bytes | None:
    return b64url_field(value, 64, size=32)


def verify(reply: Any, public_key: bytes, nonce: str, node_id: str, name: str, token: str) -> bool:
    if not isinstance(reply, dict) or reply.get("type") != PROOF:
        return False
    signature = b64url_field(reply.get("signature"), 128)
    return signature is not None and verify_signature(
        public_key, proof_payload(nonce, node_id, name, token), signature
    )
