"""The v2.0 reader and emitter against frames recorded from stock nodes with the v2.0 emitter on.

The captures carry the four throwaway nodes' X25519 keys, so every record is opened and verified
in full: signature (mmp-sig-v2.0, by the stock node's own Ed25519 key), assertion id, author
nodeId and content address. A preimage that differed by one byte would fail every one of them.
"""

from __future__ import annotations

import copy
import hashlib
import json

import pytest

from tests.stock_peer import relay_reader
from tests.unit.v2_captures import (
    CMB_FRAMES,
    E2E,
    FRAMES,
    HANDSHAKES,
    OLD_TCP,
    PLAIN,
    RELAY,
    STOCK_V2_METADATA_ORDER,
    TAMPER,
    author_of,
)
from xmesh_agent.mmp.dialects.stock import decode_stock_cmb, verify_stock_record
from xmesh_agent.mmp.dialects.stock_frames import verify_attestation
from xmesh_agent.mmp.dialects.stock_keys import category_parents_commitment
from xmesh_agent.mmp.dialects.v2 import (
    ADDRESS_SCHEME,
    V2_SUITE,
    assertion_id,
    is_v2_record,
    record_suite,
    v2_signing_payload,
    verify_any_stock_record,
    verify_v2_record,
)
from xmesh_agent.mmp.e2e import is_encrypted_record, spki_decode
from xmesh_agent.mmp.handshake import parse_handshake
from xmesh_agent.mmp.session import Dialect, dialect_of


def test_captures_hold_what_we_expect() -> None:
    assert set(HANDSHAKES) == {"alice", "bob", "carol", "dave"} == set(E2E)
    assert len(CMB_FRAMES) == 5 and all(is_encrypted_record(f["cmb"]) for f in CMB_FRAMES)
    assert {f["cmb"]["metadata"]["createdBy"] for f in CMB_FRAMES} == set(HANDSHAKES)
    assert any(f["cmb"]["metadata"]["lineage"] for f in CMB_FRAMES)  # bob's remix of alice's block
    assert any(f.get("directed") for f in CMB_FRAMES)


@pytest.mark.parametrize("name", sorted(HANDSHAKES))
def test_the_v2_emitter_leaves_the_handshake_as_it_was(name: str) -> None:
    frame = HANDSHAKES[name]
    old = next(f for _p, fs in OLD_TCP for f in fs if f.get("type") == "handshake")
    assert list(frame) == list(old) and frame["version"] == "0.2.3" and frame["extensions"] == []
    assert dialect_of(frame) is Dialect.STOCK and parse_handshake(frame).name == name
    assert spki_decode(frame["e2ePublicKey"]) == E2E[name].public_key


def test_every_v2_record_is_named_and_shaped_as_the_stock_emitter_writes_it() -> None:
    for frame, plain in zip(CMB_FRAMES, PLAIN, strict=True):
        meta = frame["cmb"]["metadata"]
        assert list(meta) == STOCK_V2_METADATA_ORDER
        assert is_v2_record(frame["cmb"]) and record_suite(plain) == V2_SUITE
        assert meta["addressScheme"] == ADDRESS_SCHEME and meta["application"] is None
        assert meta["createdByNodeId"] == HANDSHAKES[meta["createdBy"]]["nodeId"]
        assert list(frame["cmb"]) == ["categories", "metadata", "lineage", "_e2e"]


def test_every_v2_record_verifies_in_full_against_itsauthor_of() -> None:
    for frame, plain in zip(CMB_FRAMES, PLAIN, strict=True):
        key, node_id = author_of(plain)
        assert verify_v2_record(plain, key, node_id=node_id)
        assert verify_any_stock_record(plain, key, node_id=node_id)
        # a relay-side observer can check the signature over the ciphertext record too
        assert verify_v2_record(frame["cmb"], key, node_id=node_id, check_content=False)
        assert not verify_v2_record(frame["cmb"], key, node_id=node_id)  # content needs the texts
        assert plain["metadata"]["assertionId"] == assertion_id(plain)
        others = [h for n, h in HANDSHAKES.items() if n != plain["metadata"]["createdBy"]]
        assert not any(verify_v2_record(plain, h["publicKey"]) for h in others)
        # the 0.12.1 reader's preimage is not what was signed: this is the `bad-signature` we fixed
        assert not verify_stock_record(plain, key)


def test_the_preimage_built_by_hand_matches_and_is_what_was_signed() -> None:
    plain = next(p for p in PLAIN if p["metadata"]["lineage"])
    m = plain["metadata"]

    def lp(text: str) -> bytes:
        raw = text.encode()
        return b"%d:%s" % (len(raw), raw)

    by_hand = b"mmp-sig-v2.0\n" + lp("2.0") + lp("mmp-cmb-merkle-v2") + lp(m["key"])
    by_hand += lp(m["createdByNodeId"]) + lp(m["createdBy"]) + lp(str(m["createdTimestamp"]))
    by_hand += lp(m["room"]) + lp(m["to"]) + lp("1") + lp(m["lineage"]["parents"][0])
    by_hand += lp(category_parents_commitment(plain["categories"]))
    by_hand += lp(hashlib.sha256(b"mmp-app-v1\n1:0").hexdigest())
    assert v2_signing_payload(plain) == by_hand
    assert m["to"] == HANDSHAKES["alice"]["nodeId"]
    assert m["assertionId"] == "asrt-" + hashlib.sha256(by_hand).hexdigest()


@pytest.mark.parametrize("field", sorted(TAMPER))
def test_tampering_any_signed_or_bound_field_fails(field: str) -> None:
    for plain in PLAIN:
        key, node_id = author_of(plain)
        bad = copy.deepcopy(plain)
        TAMPER[field](bad)
        if bad == plain:
            continue  # e.g. `to` already that value
        assert not verify_v2_record(bad, key, node_id=node_id), field
        assert not verify_any_stock_record(bad, key, node_id=node_id), field


def test_the_author_node_id_must_be_the_key_holder() -> None:
    plain = PLAIN[0]
    key, node_id = author_of(plain)
    assert verify_v2_record(plain, key)  # without a known nodeId only the signature speaks
    assert not verify_v2_record(plain, key, node_id=HANDSHAKES["dave"]["nodeId"])


def test_decoded_v2_records_become_our_cmbs() -> None:
    for plain in PLAIN:
        author_id = plain["metadata"]["createdByNodeId"]
        decoded = decode_stock_cmb(plain, author_node_id=author_id)
        assert decoded.key_matches and decoded.cmb.created_by == plain["metadata"]["createdBy"]
        assert decoded.cmb.text("focus") == plain["categories"]["focus"]["text"]
        assert decoded.cmb.group == plain["metadata"]["room"]


async def test_relay_messages_and_attestations_are_unchanged() -> None:
    client, seen = relay_reader()
    kinds = set()
    for line in RELAY:
        if line["dir"] == "r2c":
            kinds.add(json.loads(line["msg"]).get("type") or "deliver")
            await client._handle(line["msg"])
    assert {"relay-peers", "relay-peer-joined", "deliver"} <= kinds
    assert seen.peers and seen.deliveries
    by_id = {h["nodeId"]: h for h in HANDSHAKES.values()}
    atts = [f["attestation"] for f in FRAMES if f.get("type") == "attestation"]
    assert len(atts) == 4
    for att in atts:
        assert verify_attestation(att, by_id[att["by"]]["publicKey"])
