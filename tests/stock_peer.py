"""Test helpers for the stock dialect: a handshake as a stock 0.12.1 node writes one (for tests that
play a stock peer on a raw socket), and our relay client reading a stock relay's messages."""

from __future__ import annotations

from typing import Any

from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.e2e import X25519KeyPair, spki_decode, spki_encode
from xmesh_agent.mmp.relay.client import RelayClient

STOCK_VERSION = "0.2.3"


def stock_handshake(
    identity: NodeIdentity,
    group: str,
    e2e_public_key: bytes | str | X25519KeyPair,
    lifecycle_role: str = "participant",
) -> dict[str, Any]:
    """Field order included: `room` for the group, and an X25519 `e2ePublicKey` (SPKI, base64)."""
    if isinstance(e2e_public_key, X25519KeyPair):
        announced = e2e_public_key.public_spki_b64
    elif isinstance(e2e_public_key, bytes):
        announced = spki_encode(e2e_public_key)
    else:
        spki_decode(e2e_public_key)
        announced = e2e_public_key
    return {
        "type": "handshake",
        "nodeId": identity.node_id,
        "name": identity.name,
        "version": STOCK_VERSION,
        "extensions": [],
        "room": group,
        "publicKey": identity.public_key_b64url,
        "e2ePublicKey": announced,
        "lifecycleRole": lifecycle_role,
    }


class _RelaySeen:
    def __init__(self) -> None:
        self.peers: list[tuple[str, str]] = []
        self.deliveries: list[tuple[str, str, dict[str, Any]]] = []
        self.sent: list[dict[str, Any]] = []

    async def record_send(self, envelope: dict[str, Any]) -> bool:
        self.sent.append(envelope)
        return True


def relay_reader() -> tuple[RelayClient, _RelaySeen]:
    """Our relay client, never connected, with its callbacks recording what it made of each message."""
    seen = _RelaySeen()
    client = RelayClient(
        "ws://127.0.0.1:9",
        "xm-node",
        "xm",
        on_peer=lambda node_id, name: seen.peers.append((node_id, name)),
        on_peer_left=lambda _node_id: None,
        on_payload=lambda node_id, name, payload: seen.deliveries.append((node_id, name, payload)),
        on_disconnect=lambda: None,
        on_event=lambda _name, _data: None,
    )
    return client, seen
