"""Taking over a peer's name or nodeId on the relay (issue 22), with a real relay server, our nodes
and hand-driven websocket clients on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.unit.node_testkit import make_node, note, ordered_identities, poll
from xmesh_agent.identity import NodeIdentity, b64url_encode, uuid7
from xmesh_agent.mmp.handshake import build_handshake
from xmesh_agent.mmp.relay import proof
from xmesh_agent.mmp.relay.server import AUTH_INVALID, DUPLICATE_REJECTED, REPLACED, RelayServer


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XMESH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XMESH_SYM_LOOPBACK_DIR", str(tmp_path / "loopback"))


async def claim(
    relay: RelayServer,
    node_id: str,
    name: str,
    *,
    key: NodeIdentity | None = None,
    announce: bytes | None = None,
    token: str | None = None,
    sign_token: str | None = None,
) -> tuple[ClientConnection, list[dict[str, Any]], int | None]:
    """Authenticate by hand, proving `key` when given (announcing `announce`, or key's own public key;
    signing for `sign_token`, or the token presented).
    Returns the socket, what the relay sent, and its close code (None while it keeps us)."""
    ws = await connect(relay.url)
    auth: dict[str, Any] = {"type": "relay-auth", "nodeId": node_id, "name": name}
    if token is not None:
        auth["token"] = token
    if key is not None:
        auth["publicKey"] = b64url_encode(announce or key.public_key)
    await ws.send(json.dumps(auth))
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + 3.0
    try:
        while time.monotonic() < deadline:
            msg = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
            got.append(msg)
            if msg.get("type") == proof.CHALLENGE and key is not None:
                signature = key.sign(
                    proof.proof_payload(
                        msg["nonce"], node_id, name, sign_token if sign_token is not None else token or ""
                    )
                )
                await ws.send(json.dumps({"type": proof.PROOF, "signature": b64url_encode(signature)}))
            if msg.get("type") == "relay-peers":
                return ws, got, None
    except ConnectionClosed:
        return ws, got, ws.close_code
    except TimeoutError:
        pass
    return ws, got, None


async def test_a_client_claiming_a_connected_peers_nodeId_or_name_does_not_take_its_place(
    tmp_path: Path,
) -> None:
    alice_id, bob_id = ordered_identities("alice", "bob")
    # duplicate_window 0: on the old relay any holder was "stale" and replaced at once.
    async with RelayServer(duplicate_window=0.0, ping_interval=0.3) as relay:
        alice, _ = make_node(tmp_path, "alice", identity=alice_id, discovery=[], relay_url=relay.url)
        bob, inbox_bob = make_node(tmp_path, "bob", identity=bob_id, discovery=[], relay_url=relay.url)
        await alice.start()
        await bob.start()
        try:
            assert await alice.wait_for_peers(1, 5.0) and await bob.wait_for_peers(1, 5.0)
            mallory = NodeIdentity.generate("mallory")
            attempts = [
                await claim(relay, bob_id.node_id, "bob"),  # bob's nodeId and name, no key
                await claim(relay, bob_id.node_id.upper(), "bob"),  # the same nodeId, other case
                await claim(relay, uuid7(), "bob"),  # bob's name
                await claim(relay, bob_id.node_id, "bob", key=mallory),  # with a key of its own
            ]
            assert [code for _, _, code in attempts] == [DUPLICATE_REJECTED] * 4
            # bob's public key is no use without bob's private key.
            _, _, code = await claim(relay, bob_id.node_id, "bob", key=mallory, announce=bob_id.public_key)
            assert code == AUTH_INVALID
            # bob kept his place: frames for him still reach him, and he did not stop.
            assert sorted(relay.peers()) == sorted([(alice_id.node_id, "alice"), (bob_id.node_id, "bob")])
            assert await alice.publish(note(alice_id, "team", "for bob")) == 1
            assert await inbox_bob.wait(lambda: len(inbox_bob.cmbs) == 1)
            assert inbox_bob.named("identity-collision") == [] and inbox_bob.named("relay-collision") == []
            assert bob._peering.relay is not None and not bob._peering.relay._task.done()
            # Once bob has left, his nodeId stays his: no claim without his key.
            await bob.stop()
            assert await poll(lambda: len(relay.peers()) == 1)
            _, _, code = await claim(relay, bob_id.node_id, "bob")
            assert code == DUPLICATE_REJECTED
            _, _, code = await claim(relay, bob_id.node_id, "bob", key=mallory)
            assert code == DUPLICATE_REJECTED
            for ws, _, _ in attempts:
                await ws.close()
        finally:
            await alice.stop()
            await bob.stop()


async def test_the_owner_replaces_its_own_silent_connection_and_that_one_is_told_it_was_proven() -> None:
    owner = NodeIdentity.generate("owner")
    async with RelayServer(duplicate_window=0.0, ping_interval=0.2) as relay:
        old, got, code = await claim(relay, owner.node_id, "owner", key=owner)
        assert code is None and [m["type"] for m in got] == [proof.CHALLENGE, "relay-peers"]
        holder = relay._channels[""][owner.node_id]
        assert await poll(
            lambda: holder.missed_pings >= 1 and asyncio.get_running_loop().time() - holder.pinged_at >= 0.1
        )
        intruder = NodeIdentity.generate("intruder")
        _, _, code = await claim(relay, owner.node_id, "owner", key=intruder)
        assert code == DUPLICATE_REJECTED
        # An answer the owner gave another relay (for the token it presented there) is no use here.
        _, _, code = await claim(relay, owner.node_id, "owner", key=owner, token="ours", sign_token="theirs")
        assert code == AUTH_INVALID
        new, _, code = await claim(relay, owner.node_id, "owner", key=owner)
        assert code is None
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(old.recv(), 3.0)
        assert old.close_code == REPLACED and old.close_reason == proof.PROVEN_REPLACED
        assert relay.peers() == [(owner.node_id, "owner")]
        await new.close()


async def test_a_handshake_through_the_relay_must_name_the_nodeId_its_sender_holds_there(
    tmp_path: Path,
) -> None:
    async with RelayServer(ping_interval=0.3) as relay:
        alice, inbox = make_node(tmp_path, "alice", discovery=[], relay_url=relay.url)
        await alice.start()
        try:
            assert await poll(lambda: len(relay.peers()) == 1)
            mallory, bob = NodeIdentity.generate("mallory"), NodeIdentity.generate("bob")
            ws, _, code = await claim(relay, mallory.node_id, "mallory", key=mallory)
            assert code is None
            handshake = build_handshake(bob, "team")  # bob's nodeId and key, from mallory's seat
            await ws.send(json.dumps({"to": alice.identity.node_id, "payload": handshake}))
            assert await inbox.wait(lambda: bool(inbox.named("peer-refused")))
            assert inbox.named("peer-refused")[0]["reason"] == "nodeId is not the one it holds on the relay"
            assert alice.peers() == [] and alice.verifier.binding(bob.node_id) is None
            await ws.close()
        finally:
            await alice.stop()
