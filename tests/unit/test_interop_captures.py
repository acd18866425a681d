"""The stock dialect codec against frames recorded from two unmodified stock 0.12.1 nodes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.mmp_data import mmp_path
from tests.stock_peer import relay_reader, stock_handshake
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import CAT7, content_key
from xmesh_agent.mmp.connection import RelayLink
from xmesh_agent.mmp.dialects.stock import (
    StockEncryptedError,
    build_stock_categories,
    build_stock_record,
    category_key,
    check_stock_audience,
    decode_stock_cmb,
    recompute_stock_key,
    verify_stock_record,
)
from xmesh_agent.mmp.dialects.stock_frames import (
    attestation_payload,
    build_attestation,
    next_prev,
    verify_attestation,
)
from xmesh_agent.mmp.e2e import E2EError, X25519KeyPair, decrypt_record, js_json, spki_decode
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
