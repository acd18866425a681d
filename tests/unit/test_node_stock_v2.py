"""A stock node with the v2.0 emitter on, replayed from the captures through a live MeshNode.

Our node plays alice (her nodeId and her captured X25519 key, a fresh Ed25519 key), the raw socket
plays bob with his captured handshake and his captured ciphertext records. The node must open and
verify them, learn that this peer emits v2.0, and from then on answer it with v2.0 records.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.mmp_data import mmp_path
from tests.stock_peer import stock_handshake
from tests.unit.node_testkit import RawPeer, make_node, note
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.dialects.stock import encode_stock_cmb
from xmesh_agent.mmp.dialects.stock_keys import verify_stock_record
from xmesh_agent.mmp.dialects.v2 import V2_SUITE, sign_as_v2, verify_v2_record
from xmesh_agent.mmp.e2e import X25519KeyPair, aes_gcm_available, decrypt_record, encrypt_record

CAPTURES = mmp_path("captures")
TCP = json.loads((CAPTURES / "stock-node-0.12.x-v2-tcp.json").read_text())
KEYS = json.loads((CAPTURES / "stock-node-0.12.x-v2-e2e-keys.json").read_text())
OLD = json.loads((CAPTURES / "stock-node-0.12.1-tcp.json").read_text())

pytestmark = pytest.mark.skipif(not aes_gcm_available(), reason="AES-256-GCM unavailable on this CPU")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XMESH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XMESH_SYM_LOOPBACK_DIR", str(tmp_path / "loopback"))


def _direction(frames_of: list, name: str) -> list[dict[str, Any]]:
    return next(frames for _ports, frames in frames_of if frames and frames[0].get("name") == name)


def _e2e(name: str) -> X25519KeyPair:
    return X25519KeyPair.from_pkcs8_der(base64.b64decode(KEYS[name]))


async def _as_alice(tmp_path: Path, peer_frames: list[dict[str, Any]], peer: str = "bob"):
    alice_hs = _direction(TCP, "alice")[0]
    fresh = NodeIdentity.generate("alice")
    me = NodeIdentity("alice", alice_hs["nodeId"], fresh.signing_key, fresh.created_at)
    node, inbox = make_node(
        tmp_path, "alice", group="room1", identity=me, discovery=[], e2e_keypair=_e2e("alice")
    )
    await node.start()
    raw = await RawPeer(NodeIdentity.generate(peer), group="room1").connect(node.port)
    await raw.send(peer_frames[0])
    assert (await raw.recv())["type"] == "handshake"
    assert await node.wait_for_peers(1, 2.0)
    return node, inbox, raw


async def _next_cmb(raw: RawPeer) -> dict[str, Any]:
    while (frame := await raw.recv(2.0)) is not None and frame["type"] != "cmb":
        pass
    assert frame is not None, "no cmb frame arrived"
    return frame


async def test_captured_v2_records_are_opened_verified_and_the_answer_is_v2(tmp_path: Path) -> None:
    bob = _direction(TCP, "bob")
    node, inbox, raw = await _as_alice(tmp_path, bob)
    try:
        cmbs = [f for f in bob if f["type"] == "cmb"]
        assert len(cmbs) == 2 and all(f["cmb"]["metadata"]["signatureSuite"] == V2_SUITE for f in cmbs)
        for frame in cmbs:
            await raw.send(frame)
        assert await inbox.wait(lambda: len(inbox.cmbs) == 2)
        assert inbox.rejects() == []
        assert {c.text("focus") for c, _ in inbox.cmbs} == {"review of the login rate limit"}
        assert [d["dialect"] for d in inbox.named("peer-dialect")] == [V2_SUITE]
        assert node.verifier.has_signed("bob")

        ours = note(node.identity, "room1", "thresholds confirmed: 5/min per account", to="bob")
        assert await node.publish(ours) == 1
        frame = await _next_cmb(raw)
        assert frame["directed"] is True and frame["to"] == bob[0]["nodeId"]
        secret = _e2e("bob").shared_secret(_direction(TCP, "alice")[0]["e2ePublicKey"])
        record = decrypt_record(frame["cmb"], secret)
        meta = record["metadata"]
        assert meta["signatureSuite"] == V2_SUITE and meta["createdByNodeId"] == node.identity.node_id
        assert record["categories"]["focus"]["text"] == "thresholds confirmed: 5/min per account"
        assert verify_v2_record(record, node.identity.public_key, node_id=node.identity.node_id)
    finally:
        await raw.close()
        await node.stop()


async def test_tampered_or_misattributed_v2_records_are_refused(tmp_path: Path) -> None:
    bob = _direction(TCP, "bob")
    node, inbox, raw = await _as_alice(tmp_path, bob)
    try:
        root = next(f for f in bob if f["type"] == "cmb")
        relabelled = copy.deepcopy(root)
        relabelled["cmb"]["metadata"]["createdByNodeId"] = "01a20000-0000-7000-8000-000000000000"
        unknown = copy.deepcopy(root)
        unknown["cmb"]["metadata"]["signatureSuite"] = "mmp-sig-v9"
        stale_id = copy.deepcopy(root)
        stale_id["cmb"]["metadata"]["assertionId"] = "asrt-" + "0" * 64
        for frame in (relabelled, unknown, stale_id):
            await raw.send(frame)
        await raw.send({"type": "ping"})
        assert await inbox.wait(lambda: len(inbox.rejects()) == 3)
        assert inbox.rejects() == ["bad-signature"] * 3
        assert inbox.cmbs == [] and inbox.named("peer-dialect") == []
    finally:
        await raw.close()
        await node.stop()


async def test_a_validly_signed_record_naming_another_node_is_refused(tmp_path: Path) -> None:
    """The signature is genuine, but the signed author nodeId is not the key holder's."""
    node, inbox = make_node(tmp_path, "xm", group="room1", discovery=[], e2e_keypair=X25519KeyPair.generate())
    await node.start()
    mallory = NodeIdentity.generate("mallory")
    mallory_e2e = X25519KeyPair.generate()
    raw = await RawPeer(mallory, group="room1").connect(node.port)
    try:
        await raw.send(stock_handshake(mallory, "room1", mallory_e2e))
        theirs = await raw.recv()
        assert theirs is not None and await node.wait_for_peers(1, 2.0)
        secret = mallory_e2e.shared_secret(theirs["e2ePublicKey"])
        posing = NodeIdentity("mallory", "01a20000-0000-7000-8000-0000000000aa", mallory.signing_key, "")
        forged = encode_stock_cmb(note(mallory, "room1", "wire the funds"), posing, "room1", sign=sign_as_v2)
        honest = encode_stock_cmb(note(mallory, "room1", "hello in v2"), mallory, "room1", sign=sign_as_v2)
        for frame in (forged, honest):
            frame["cmb"] = encrypt_record(frame["cmb"], secret)
            await raw.send(frame)
        assert await inbox.wait(lambda: len(inbox.cmbs) == 1 and len(inbox.rejects()) == 1)
        assert inbox.rejects() == ["bad-signature"] and inbox.cmbs[0][0].text("focus") == "hello in v2"
    finally:
        await raw.close()
        await node.stop()


async def test_a_0_12_1_peer_keeps_getting_0_12_1_records(tmp_path: Path) -> None:
    bob = _direction(OLD, "bob")
    node, inbox = make_node(tmp_path, "alice", group="room1", discovery=[])
    await node.start()
    raw = await RawPeer(NodeIdentity.generate("bob"), group="room1").connect(node.port)
    try:
        await raw.send(bob[0])
        assert (await raw.recv())["type"] == "handshake" and await node.wait_for_peers(1, 2.0)
        await raw.send(next(f for f in bob if f["type"] == "cmb"))
        assert await inbox.wait(lambda: len(inbox.cmbs) == 1)
        assert await node.publish(note(node.identity, "room1", "still the 0.12.1 dialect", to="bob")) == 1
        record = (await _next_cmb(raw))["cmb"]
        assert "signatureSuite" not in record["metadata"] and "createdByNodeId" not in record["metadata"]
        assert verify_stock_record(record, node.identity.public_key)
        assert inbox.named("peer-dialect") == []
    finally:
        await raw.close()
        await node.stop()


async def test_a_new_session_relearns_v2_from_a_replayed_record_it_already_holds(tmp_path: Path) -> None:
    """A stock node replays its stored blocks on every connect; a block we already hold still
    tells the new session which suite this peer signs under."""
    bob = _direction(TCP, "bob")
    root = next(f for f in bob if f["type"] == "cmb")
    node, inbox, raw = await _as_alice(tmp_path, bob)
    try:
        await raw.send(root)
        assert await inbox.wait(lambda: len(inbox.cmbs) == 1)
        await raw.close()
        assert await inbox.wait(lambda: len(inbox.named("peer-disconnected")) == 1)
        raw = await RawPeer(NodeIdentity.generate("bob"), group="room1").connect(node.port)
        await raw.send(bob[0])
        assert (await raw.recv())["type"] == "handshake" and await node.wait_for_peers(1, 2.0)
        await raw.send(dict(root, _anchor=True))  # the replay: a duplicate, not surfaced again
        assert await inbox.wait(lambda: len(inbox.named("peer-dialect")) == 2)
        assert len(inbox.cmbs) == 1 and inbox.rejects() == []
        assert await node.publish(note(node.identity, "room1", "after the reconnect", to="bob")) == 1
        assert (await _next_cmb(raw))["cmb"]["metadata"]["signatureSuite"] == V2_SUITE
    finally:
        await raw.close()
        await node.stop()
