"""End-to-end encryption with a stock-dialect peer, through a live MeshNode on loopback TCP."""

from __future__ import annotations

import base64
import copy
import os
import stat
from pathlib import Path

import pytest

from tests.stock_peer import stock_handshake
from tests.unit.node_testkit import RawPeer, make_node
from xmesh_agent.clock import now_ms
from xmesh_agent.identity import NodeIdentity, e2e_key_path, load_or_create_e2e_keypair
from xmesh_agent.mmp.cmb import mint
from xmesh_agent.mmp.dialects.stock import encode_stock_cmb
from xmesh_agent.mmp.dialects.stock_keys import stock_key_for, verify_stock_record
from xmesh_agent.mmp.e2e import (
    E2EError,
    X25519KeyPair,
    _aes_gcm,
    aes_gcm_available,
    decrypt_categories,
    decrypt_record,
    encrypt_record,
    is_encrypted_record,
    spki_encode,
)
from xmesh_agent.mmp.node import MeshNode

ROOM = "room1"
needs_aes = pytest.mark.skipif(not aes_gcm_available(), reason="no AES-256-GCM on this CPU")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XMESH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XMESH_SYM_LOOPBACK_DIR", str(tmp_path / "loopback"))


async def _session(tmp_path: Path, *, node_e2e: bool = True):
    """A node with (or without) an e2e key and a hand-driven stock peer 'bob' that has one."""
    ours = X25519KeyPair.generate() if node_e2e else None
    node, inbox = make_node(tmp_path, "alice", group=ROOM, discovery=[], e2e_keypair=ours)
    await node.start()
    bob_id, bob_e2e = NodeIdentity.generate("bob"), X25519KeyPair.generate()
    raw = await RawPeer(bob_id, group=ROOM).connect(node.port)
    await raw.send(stock_handshake(bob_id, ROOM, bob_e2e))
    theirs = await raw.recv()
    assert theirs is not None and theirs["type"] == "handshake"
    assert await node.wait_for_peers(1, 2.0)
    return node, inbox, raw, bob_e2e, theirs


async def _next_cmb(raw: RawPeer) -> dict:
    while (frame := await raw.recv(2.0)) is not None and frame["type"] != "cmb":
        pass
    assert frame is not None, "no cmb frame arrived"
    return frame


async def _settle(raw: RawPeer) -> None:
    await raw.send({"type": "ping"})
    while (frame := await raw.recv(2.0)) is not None and frame["type"] != "pong":
        pass


@needs_aes
async def test_encrypted_both_ways_with_a_stock_peer(tmp_path: Path) -> None:
    node, inbox, raw, bob_e2e, theirs = await _session(tmp_path)
    try:
        assert theirs["e2ePublicKey"] == node.e2e_keypair.public_spki_b64
        secret = bob_e2e.shared_secret(theirs["e2ePublicKey"])
        bob_cmb = mint(
            {"focus": "rate limiter on /login", "issue": "logins spike"},
            identity=raw.identity,
            group=ROOM,
            created_at=now_ms(),
        )
        frame = encode_stock_cmb(bob_cmb, raw.identity, ROOM)
        frame["cmb"] = encrypt_record(frame["cmb"], secret)
        await raw.send(frame)
        assert await inbox.wait(lambda: len(inbox.cmbs) == 1)
        [(got, peer)] = inbox.cmbs
        assert peer.name == "bob" and got.text("focus") == "rate limiter on /login"
        assert inbox.rejects() == []

        # Our answer: encrypted to bob, signed by us, and sent as a root because its parent is bob's
        # own block (a stock node drops a block whose parents it holds as an echo).
        answer = mint(
            {"focus": "token bucket per key", "perspective": "reviewer"},
            identity=node.identity,
            group=ROOM,
            created_at=now_ms(),
            parents=[got],
        )
        assert await node.publish(answer) == 1
        sent = await _next_cmb(raw)
        assert is_encrypted_record(sent["cmb"])
        assert "token bucket" not in str(sent["cmb"]["categories"])
        record = decrypt_record(sent["cmb"], secret)
        assert record["categories"]["focus"]["text"] == "token bucket per key"
        assert record["metadata"]["lineage"] is None and record["metadata"]["createdBy"] == "alice"
        assert verify_stock_record(record, node.identity.public_key)
        assert node.store.get(answer.key).parents == [got.key]  # our store keeps the lineage
    finally:
        await raw.close()
        await node.stop()


@needs_aes
async def test_undecryptable_records_are_dropped(tmp_path: Path) -> None:
    node, inbox, raw, bob_e2e, theirs = await _session(tmp_path)
    try:
        secret = bob_e2e.shared_secret(theirs["e2ePublicKey"])
        cmb = mint({"focus": "sealed"}, identity=raw.identity, group=ROOM, created_at=now_ms())
        good = encode_stock_cmb(cmb, raw.identity, ROOM)
        good["cmb"] = encrypt_record(good["cmb"], secret)
        flipped = copy.deepcopy(good)
        text = flipped["cmb"]["categories"]
        flipped["cmb"]["categories"] = ("B" if text[0] != "B" else "C") + text[1:]
        wrong_key = encode_stock_cmb(cmb, raw.identity, ROOM)
        wrong_key["cmb"] = encrypt_record(wrong_key["cmb"], bytes(range(32)))
        no_nonce = copy.deepcopy(good)
        no_nonce["cmb"]["_e2e"] = {}
        for frame in (flipped, wrong_key, no_nonce):
            await raw.send(frame)
        await _settle(raw)
        assert inbox.rejects() == ["e2e-undecryptable"] * 3 and node.store.count() == 0
        await raw.send(good)  # the intact one still gets through afterwards
        assert await inbox.wait(lambda: len(inbox.cmbs) == 1)
    finally:
        await raw.close()
        await node.stop()


async def test_without_a_key_we_announce_none_and_send_plaintext(tmp_path: Path) -> None:
    node, inbox, raw, _, theirs = await _session(tmp_path, node_e2e=False)
    try:
        assert "e2ePublicKey" not in theirs
        ours = mint({"focus": "in the clear"}, identity=node.identity, group=ROOM, created_at=now_ms())
        assert await node.publish(ours) == 1
        sent = await _next_cmb(raw)
        assert sent["cmb"]["categories"]["focus"]["text"] == "in the clear"
        assert sent["cmb"]["metadata"]["key"] == stock_key_for(ours)
    finally:
        await raw.close()
        await node.stop()


async def test_a_bad_announced_key_means_plaintext_not_a_crash(tmp_path: Path) -> None:
    node, inbox = make_node(tmp_path, "alice", group=ROOM, discovery=[], e2e_keypair=X25519KeyPair.generate())
    await node.start()
    bob = NodeIdentity.generate("bob")
    raw = await RawPeer(bob, group=ROOM).connect(node.port)
    try:
        hs = stock_handshake(bob, ROOM, X25519KeyPair.generate())
        hs["e2ePublicKey"] = spki_encode(bytes(32))  # a low-order point: no usable secret
        await raw.send(hs)
        assert (await raw.recv())["type"] == "handshake"
        assert await node.wait_for_peers(1, 2.0)
        ours = mint({"focus": "still talking"}, identity=node.identity, group=ROOM, created_at=now_ms())
        assert await node.publish(ours) == 1
        assert (await _next_cmb(raw))["cmb"]["categories"]["focus"]["text"] == "still talking"
    finally:
        await raw.close()
        await node.stop()


def test_the_e2e_keypair_persists_private_and_stable() -> None:
    first = load_or_create_e2e_keypair("carol")
    assert stat.S_IMODE(e2e_key_path("carol").stat().st_mode) == 0o600
    assert load_or_create_e2e_keypair("carol") == first
    assert load_or_create_e2e_keypair("dave") != first
    e2e_key_path("carol").write_text("not a key\n")
    replaced = load_or_create_e2e_keypair("carol")
    assert replaced != first and load_or_create_e2e_keypair("carol") == replaced


def test_unavailable_aes_means_no_announcement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("xmesh_agent.mmp.node.aes_gcm_available", lambda: False)
    node, _ = make_node(tmp_path, "alice", group=ROOM, discovery=[], e2e_keypair=X25519KeyPair.generate())
    assert isinstance(node, MeshNode) and node.e2e_keypair is None
    node.verifier.close()


def test_deeply_nested_plaintext_is_an_e2e_error_not_a_recursion_error() -> None:
    # a peer holding the shared secret can seal anything; 100000 nested `[` once escaped as RecursionError
    secret, nonce = os.urandom(32), os.urandom(12)
    encrypt, _ = _aes_gcm()
    sealed = encrypt(("[" * 100_000).encode(), None, nonce, secret)
    with pytest.raises(E2EError):
        decrypt_categories(base64.b64encode(sealed).decode(), base64.b64encode(nonce).decode(), secret)
