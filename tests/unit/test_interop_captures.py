"""The stock dialect codec against frames recorded from two unmodified stock 0.12.1 nodes."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from typing import Any

import pytest

from tests.mmp_data import mmp_path
from tests.stock_peer import relay_reader, stock_handshake
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import CAT7, content_key, mint
from xmesh_agent.mmp.connection import RelayLink
from xmesh_agent.mmp.dialects.stock import (
    StockDialectError,
    StockEncryptedError,
    block_key,
    build_stock_categories,
    build_stock_record,
    category_key,
    check_stock_audience,
    decode_stock_cmb,
    encode_stock_cmb,
    recompute_stock_key,
    stock_key_for,
    verify_stock_record,
)
from xmesh_agent.mmp.dialects.stock_frames import (
    attestation_payload,
    build_attestation,
    next_prev,
    verify_attestation,
)
from xmesh_agent.mmp.e2e import (
    E2EError,
    X25519KeyPair,
    decrypt_record,
    encrypt_record,
    js_json,
    spki_decode,
)
from xmesh_agent.mmp.handshake import HandshakeError, build_handshake, parse_handshake
from xmesh_agent.mmp.session import Dialect, dialect_of

CAPTURES = mmp_path("captures")
TCP = json.loads((CAPTURES / "stock-node-0.12.1-tcp.json").read_text())
RELAY_LINES = [
    json.loads(line) for line in (CAPTURES / "stock-node-0.12.1-relay.jsonl").read_text().splitlines()
]
TCP_FRAMES: list[dict[str, Any]] = [f for _ports, frames in TCP for f in frames]


def _relay_payloads() -> list[dict[str, Any]]:
    out = []
    for line in RELAY_LINES:
        msg = json.loads(line["msg"])
        if "payload" in msg:
            out.append(msg["payload"])
    return out


def _handshakes() -> dict[str, dict[str, Any]]:
    frames = TCP_FRAMES + _relay_payloads()
    return {f["name"]: f for f in frames if f.get("type") == "handshake"}


HANDSHAKES = _handshakes()


def _cmb_frames() -> list[dict[str, Any]]:
    return [f for f in TCP_FRAMES + _relay_payloads() if f.get("type") == "cmb"]


def test_captures_hold_what_we_expect() -> None:
    assert set(HANDSHAKES) == {"alice", "bob", "carol", "dave"}
    assert len(_cmb_frames()) == 3
    assert any(p.get("type") == "attestation" for p in _relay_payloads())


# ── handshakes ────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("name", sorted(HANDSHAKES))
def test_every_stock_handshake_is_recognised_and_parsed(name: str) -> None:
    frame = HANDSHAKES[name]
    assert dialect_of(frame) is Dialect.STOCK
    hs = parse_handshake(frame)
    assert hs.name == name and hs.version == "0.2.3" and hs.lifecycle_role == "participant"
    assert hs.group == frame["room"]
    assert len(hs.public_key) == 32
    assert len(spki_decode(frame["e2ePublicKey"])) == 32


def test_our_handshake_is_not_stock_but_carries_what_stock_reads() -> None:
    me = NodeIdentity.generate("xm")
    kp = X25519KeyPair.generate()
    ours = build_handshake(me, "room1", kp.public_spki_b64)
    assert dialect_of(ours) is Dialect.SPEC
    assert ours["room"] == ours["group"] == "room1"
    assert spki_decode(ours["e2ePublicKey"]) == kp.public_key


def test_stock_shaped_handshake_reencodes_like_captured_one() -> None:
    me = NodeIdentity.generate("bob")
    kp = X25519KeyPair.generate()
    built = stock_handshake(me, "room1", kp)
    assert list(built) == list(HANDSHAKES["bob"])
    assert dialect_of(built) is Dialect.STOCK


def test_bad_handshake_keys_raise_clear_errors() -> None:
    bad = dict(HANDSHAKES["bob"], e2ePublicKey="not base64!")
    with pytest.raises(E2EError, match="e2ePublicKey"):
        X25519KeyPair.generate().shared_secret(bad["e2ePublicKey"])
    with pytest.raises(HandshakeError, match="publicKey"):
        parse_handshake(dict(HANDSHAKES["bob"], publicKey="AAAA"))


# ── records: keys and signatures ──────────────────────────────────────────────────────────


def test_decode_every_cmb_frame() -> None:
    plain = [f for f in _cmb_frames() if isinstance(f["cmb"]["categories"], dict)]
    encrypted = [f for f in _cmb_frames() if isinstance(f["cmb"]["categories"], str)]
    assert len(plain) == 1 and len(encrypted) == 2
    decoded = decode_stock_cmb(plain[0])
    assert decoded.key_matches and decoded.anchor and decoded.timestamp == plain[0]["timestamp"]
    assert decoded.cmb.created_by == "bob" and decoded.cmb.group == "room1" and decoded.cmb.to is None
    assert decoded.cmb.fields["mood"].valence == 0.2 and decoded.cmb.fields["mood"].arousal == 0.3
    texts = {f: plain[0]["cmb"]["categories"][f]["text"] for f in CAT7}
    assert decoded.cmb.key == content_key(texts) == decoded.aliases[decoded.key]
    for frame in encrypted:
        with pytest.raises(StockEncryptedError):
            decode_stock_cmb(frame)


def test_every_plaintext_key_recomputes() -> None:
    for frame in _cmb_frames():
        record = frame["cmb"]
        if isinstance(record["categories"], str):
            continue
        assert recompute_stock_key(record) == record["metadata"]["key"]
        for name, value in record["categories"].items():
            assert category_key(name, value["text"]) == value["meta"]["key"]


def test_every_cmb_signature_verifies_against_the_author_handshake_key() -> None:
    checked = 0
    for frame in _cmb_frames():
        record = frame["cmb"]
        author_key = HANDSHAKES[record["metadata"]["createdBy"]]["publicKey"]
        content = isinstance(record["categories"], dict)
        assert verify_stock_record(record, author_key, check_content=content)
        other = HANDSHAKES["alice"]["publicKey"]
        assert not verify_stock_record(record, other, check_content=content)
        checked += 1
    assert checked == 3


def test_tampering_breaks_verification() -> None:
    record = json.loads(json.dumps(TCP_FRAMES[1]["cmb"]))
    key = HANDSHAKES["bob"]["publicKey"]
    assert verify_stock_record(record, key)
    for mutate in (
        lambda r: r["categories"]["focus"].update(text="no rate limit"),
        lambda r: r["metadata"].update(room="room2"),
        lambda r: r["metadata"].update(createdTimestamp=r["metadata"]["createdTimestamp"] + 1),
        lambda r: r["metadata"].update(sigAlg="none"),
        lambda r: r["categories"]["issue"]["meta"].update(parents=["cmb-" + "0" * 64]),
        lambda r: r["metadata"].update(key="cmb1-" + "0" * 64),
        lambda r: r.update(categories="garbage"),
        lambda r: r.pop("metadata"),
    ):
        bad = json.loads(json.dumps(record))
        mutate(bad)
        assert not verify_stock_record(bad, key)


def test_audience_check_matches_stock_rules() -> None:
    record = TCP_FRAMES[1]["cmb"]
    alice = HANDSHAKES["alice"]["nodeId"]
    assert check_stock_audience(record, "room1", alice) is None
    assert check_stock_audience(record, "room2", alice) == "wrong-audience"
    directed = dict(record, metadata=dict(record["metadata"], to="someone-else"))
    assert check_stock_audience(directed, "room1", alice) == "wrong-recipient"


def test_plaintext_record_reencodes_byte_identically() -> None:
    frame = TCP_FRAMES[1]
    d = decode_stock_cmb(frame)
    rebuilt = build_stock_record(d.cmb, d.cmb.created_by, d.cmb.group, d.cmb.to)
    rebuilt["metadata"]["sig"] = d.sig
    rebuilt["metadata"]["sigAlg"] = d.sig_alg
    rebuilt = {
        "categories": rebuilt["categories"],
        "metadata": rebuilt["metadata"],
        "lineage": rebuilt["lineage"],
    }
    assert js_json(rebuilt) == js_json(frame["cmb"])
    assert json.dumps(frame["cmb"]["categories"]) == json.dumps(build_stock_categories(d.cmb))


def test_every_relay_message_reserialises_byte_identically() -> None:
    for line in RELAY_LINES:
        assert js_json(json.loads(line["msg"])) == line["msg"]


def test_ciphertext_records_need_the_private_key_we_do_not_have() -> None:
    # The captures carry public keys only, so we can prove the shape but not the plaintext.
    stranger = X25519KeyPair.generate()
    for frame in _cmb_frames():
        record = frame["cmb"]
        if not isinstance(record["categories"], str):
            continue
        secret = stranger.shared_secret(HANDSHAKES["dave"]["e2ePublicKey"])
        with pytest.raises(E2EError, match="authentication"):
            decrypt_record(record, secret)


# ── relay frames and attestations ─────────────────────────────────────────────────────────


async def test_our_relay_client_reads_every_relay_message() -> None:
    client, seen = relay_reader()
    kinds = []
    for line in RELAY_LINES:
        msg = json.loads(line["msg"])
        if line["dir"] == "c2r":
            if "payload" in msg:
                assert set(msg) == {"to", "payload"}
                link = RelayLink(msg["to"], seen.record_send, outbound=True)
                assert await link.send(msg["payload"]) and seen.sent[-1] == msg
            continue
        kinds.append(msg.get("type") or "deliver")
        await client._handle(line["msg"])
    assert seen.peers, "relay-peers / relay-peer-joined reached on_peer"
    assert seen.deliveries and len(seen.deliveries) == kinds.count("deliver")
    for from_id, from_name, payload in seen.deliveries:
        assert from_id == payload.get("nodeId", from_id)
        assert from_name in {"carol", "dave"}
        if payload["type"] == "cmb":
            assert payload["cmb"]["metadata"]["createdBy"] == from_name
    assert {"relay-peers", "relay-peer-joined", "relay-ping", "deliver"} <= set(kinds)
    before = len(seen.deliveries)
    await client._handle(json.dumps({"payload": {"type": "ping"}}))  # no sender: dropped
    await client._handle(json.dumps(["not", "a", "dict"]))
    assert len(seen.deliveries) == before


def test_every_attestation_signature_verifies() -> None:
    atts = [p["attestation"] for p in _relay_payloads() if p.get("type") == "attestation"]
    assert len(atts) == 2
    by_id = {h["nodeId"]: h for h in HANDSHAKES.values()}
    for att in atts:
        attester = by_id[att["by"]]
        assert verify_attestation(att, attester["publicKey"])
        assert not verify_attestation(dict(att, verdict="rejected"), attester["publicKey"])
        assert att["of"] == _cmb_frames()[1]["cmb"]["metadata"]["key"]


def test_our_attestation_verifies_and_chains() -> None:
    me = NodeIdentity.generate("xm")
    att = build_attestation(
        me, of="cmb-" + "a" * 64, roster="room2", verdict="aligned", categories={}, at=1, seq=1
    )
    assert verify_attestation(att, me.public_key)
    assert attestation_payload(att).startswith(b"cmb-" + b"a" * 64 + b"|" + me.node_id.encode())
    nxt = build_attestation(
        me, of="cmb-" + "b" * 64, roster="room2", verdict="guarded", categories={}, at=2, seq=2,
        prev=next_prev(att["sig"]),
    )  # fmt: skip
    assert len(nxt["prev"]) == 64 and verify_attestation(nxt, me.public_key)


# ── our CMB <-> stock record ──────────────────────────────────────────────────────────────


def _our_cmb(identity: NodeIdentity, mood: tuple[float, float] | None = (0.5, -0.25)):
    texts = {"focus": "rotate the relay token", "issue": "token leaked in logs", "mood": "wary"}
    return mint(texts, identity=identity, group="room1", created_at=1795551286999, mood=mood)


def test_round_trip_our_cmb_through_the_stock_record() -> None:
    me = NodeIdentity.generate("xm")
    cmb = _our_cmb(me)
    frame = encode_stock_cmb(cmb, me, "room1")
    record = frame["cmb"]
    assert frame["type"] == "cmb" and frame["timestamp"] == cmb.created_at and "to" not in frame
    assert record["metadata"]["key"] == stock_key_for(cmb) == recompute_stock_key(record)
    assert record["metadata"]["createdBy"] == "xm" and record["metadata"]["room"] == "room1"
    assert list(record) == ["categories", "metadata", "lineage"]
    assert list(record["metadata"]) == list(TCP_FRAMES[1]["cmb"]["metadata"])
    assert list(record["categories"]["mood"]) == ["text", "valence", "arousal", "meta"]
    assert verify_stock_record(record, me.public_key)
    back = decode_stock_cmb(json.loads(json.dumps(frame)))
    assert back.cmb.key == cmb.key and back.cmb.texts() == cmb.texts()
    assert back.cmb.created_by == cmb.created_by and back.cmb.created_at == cmb.created_at
    assert back.cmb.fields["mood"].valence == 0.5 and back.cmb.fields["mood"].arousal == -0.25
    assert back.cmb.group == "room1" and back.cmb.sig is None and back.sig == record["metadata"]["sig"]


def test_directed_remix_round_trip() -> None:
    me = NodeIdentity.generate("xm")
    parent = _our_cmb(me, mood=None)
    child = mint(
        {"focus": "token rotated", "commitment": "done"},
        identity=me,
        group="room1",
        created_at=1795551287000,
        parents=[parent],
    )
    peer = "01a20f32-4395-779b-a2a9-a955485c5ca1"
    stock_parent = stock_key_for(parent)
    frame = encode_stock_cmb(child, me, "room1", to=peer, parents=[stock_parent])
    assert frame["to"] == peer and frame["directed"] is True
    record = frame["cmb"]
    assert record["metadata"]["lineage"] == {"parents": [stock_parent], "method": "SVAF-v2"}
    assert record["metadata"]["key"] == block_key(record["categories"])  # content-only, parents aside
    assert verify_stock_record(record, me.public_key)
    assert check_stock_audience(record, "room1", peer) is None
    assert "valence" not in record["categories"]["mood"]
    with pytest.raises(StockDialectError, match="author_node_id"):
        decode_stock_cmb(frame)
    back = decode_stock_cmb(frame, author_node_id=me.node_id, aliases={stock_parent: parent.key})
    assert back.cmb.key == child.key and back.cmb.parents == [parent.key]
    assert back.directed_to == peer and back.parents == [stock_parent]


def test_malformed_frames_raise_stock_errors_never_crash() -> None:
    for bad in (
        {},
        {"type": "cmb"},
        {"type": "cmb", "cmb": {"metadata": {"key": "cmb-x"}, "categories": {}}},
        {"type": "cmb", "cmb": {"fields": {}, "metadata": {"key": "cmb-" + "0" * 64}}},
        {"type": "cmb", "cmb": {"categories": {}, "metadata": {"key": "cmb-" + "0" * 64, "createdBy": 3}}},
        {"type": "cmb", "cmb": {"categories": [], "metadata": []}},
    ):
        with pytest.raises(StockDialectError):
            decode_stock_cmb(bad)
        assert not verify_stock_record(bad.get("cmb", {}), NodeIdentity.generate("z").public_key)


# ── end-to-end encryption ─────────────────────────────────────────────────────────────────


def test_e2e_round_trip_between_two_keypairs() -> None:
    me, peer = X25519KeyPair.generate(), X25519KeyPair.generate()
    ident = NodeIdentity.generate("xm")
    record = encode_stock_cmb(_our_cmb(ident), ident, "room1")["cmb"]
    sealed = encrypt_record(record, me.shared_secret(peer.public_spki_b64))
    assert isinstance(sealed["categories"], str) and list(sealed) == [
        "categories",
        "metadata",
        "lineage",
        "_e2e",
    ]
    assert len(base64.b64decode(sealed["_e2e"]["nonce"])) == 12
    assert verify_stock_record(sealed, ident.public_key, check_content=False)
    opened = decrypt_record(sealed, peer.shared_secret(me.public_key))
    assert opened == record and verify_stock_record(opened, ident.public_key)
    forged = dict(sealed, categories=base64.b64encode(b"x" * 40).decode())
    with pytest.raises(E2EError):
        decrypt_record(forged, peer.shared_secret(me.public_key))


def test_e2e_keys_load_from_stock_pkcs8_and_reject_low_order_points() -> None:
    kp = X25519KeyPair.generate()
    assert X25519KeyPair.from_pkcs8_der(kp.pkcs8_der()) == kp
    with pytest.raises(E2EError):
        kp.shared_secret(bytes(32))
    with pytest.raises(E2EError):
        X25519KeyPair.from_pkcs8_der(b"\x30" * 48)


_NODE_E2E = r"""
const crypto = require('crypto');
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const der = (b64, type) => ({ key: Buffer.from(b64, 'base64'), format: 'der', type });
const priv = crypto.createPrivateKey(der(input.priv, 'pkcs8'));
const pub = crypto.createPublicKey(priv).export({ type: 'spki', format: 'der' }).toString('base64');
const peer = crypto.createPublicKey(der(input.peer, 'spki'));
const secret = crypto.diffieHellman({ privateKey: priv, publicKey: peer });
const ct = Buffer.from(input.ciphertext, 'base64');
const d = crypto.createDecipheriv('aes-256-gcm', secret, Buffer.from(input.nonce, 'base64'));
d.setAuthTag(ct.subarray(ct.length - 16));
const plain = Buffer.concat([d.update(ct.subarray(0, ct.length - 16)), d.final()]);
const theirs = JSON.parse(plain.toString('utf8'));
theirs.focus.text = 'seen by node';
const nonce = crypto.randomBytes(12);
const c = crypto.createCipheriv('aes-256-gcm', secret, nonce);
const body = Buffer.concat([c.update(JSON.stringify(theirs), 'utf8'), c.final(), c.getAuthTag()]);
const out = { pub, ciphertext: body.toString('base64'), nonce: nonce.toString('base64') };
process.stdout.write(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js not installed")
def test_e2e_interoperates_with_node_crypto() -> None:
    """Node's own X25519 + AES-256-GCM (the calls stock nodes make) opens ours; we open theirs."""
    ours, theirs = X25519KeyPair.generate(), X25519KeyPair.generate()
    ident = NodeIdentity.generate("xm")
    record = encode_stock_cmb(_our_cmb(ident), ident, "room1")["cmb"]
    sealed = encrypt_record(record, ours.shared_secret(theirs.public_spki_b64))
    payload = {
        "priv": base64.b64encode(theirs.pkcs8_der()).decode(),
        "peer": ours.public_spki_b64,
        "ciphertext": sealed["categories"],
        "nonce": sealed["_e2e"]["nonce"],
    }
    run = subprocess.run(
        ["node", "-e", _NODE_E2E], input=json.dumps(payload), capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 0, run.stderr
    reply = json.loads(run.stdout)
    assert reply["pub"] == theirs.public_spki_b64  # our SPKI encoding is byte-identical to Node's
    opened = decrypt_record(
        dict(record, categories=reply["ciphertext"], _e2e={"nonce": reply["nonce"]}),
        ours.shared_secret(theirs.public_key),
    )
    expected = json.loads(json.dumps(record["categories"]))
    expected["focus"]["text"] = "seen by node"
    assert opened["categories"] == expected
