"""The v2.0 reader and emitter against frames recorded from stock nodes with the v2.0 emitter on.

The captures carry the four throwaway nodes' X25519 keys, so every record is opened and verified
in full: signature (mmp-sig-v2.0, by the stock node's own Ed25519 key), assertion id, author
nodeId and content address. A preimage that differed by one byte would fail every one of them.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from tests.mmp_data import mmp_path
from tests.stock_peer import relay_reader
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import CAT7, mint
from xmesh_agent.mmp.dialects.stock import (
    StockDialectError,
    decode_stock_cmb,
    encode_stock_cmb,
    stock_key_for,
    stock_signing_payload,
    verify_stock_record,
)
from xmesh_agent.mmp.dialects.stock_frames import verify_attestation
from xmesh_agent.mmp.dialects.stock_keys import category_parents_commitment
from xmesh_agent.mmp.dialects.v2 import (
    ADDRESS_SCHEME,
    V2_SUITE,
    application_commitment,
    assertion_id,
    is_v2_record,
    record_suite,
    sign_as_v2,
    sign_v2_record,
    to_v2_record,
    v2_signing_payload,
    verify_any_stock_record,
    verify_v2_record,
)
from xmesh_agent.mmp.e2e import (
    X25519KeyPair,
    decrypt_record,
    encrypt_record,
    is_encrypted_record,
    spki_decode,
)
from xmesh_agent.mmp.handshake import parse_handshake
from xmesh_agent.mmp.session import Dialect, dialect_of

CAPTURES = mmp_path("captures")
TCP = json.loads((CAPTURES / "stock-node-0.12.x-v2-tcp.json").read_text())
RELAY = [
    json.loads(line) for line in (CAPTURES / "stock-node-0.12.x-v2-relay.jsonl").read_text().splitlines()
]
E2E = {
    name: X25519KeyPair.from_pkcs8_der(base64.b64decode(der))
    for name, der in json.loads((CAPTURES / "stock-node-0.12.x-v2-e2e-keys.json").read_text()).items()
}
OLD_TCP = json.loads((CAPTURES / "stock-node-0.12.1-tcp.json").read_text())

STOCK_V2_METADATA_ORDER = [
    "key",
    "createdBy",
    "createdTimestamp",
    "lineage",
    "room",
    "to",
    "addressScheme",
    "signatureSuite",
    "createdByNodeId",
    "application",
    "assertionId",
    "sig",
    "sigAlg",
]


def _relay_payloads(direction: str = "r2c") -> list[dict[str, Any]]:
    out = []
    for line in RELAY:
        msg = json.loads(line["msg"])
        if line["dir"] == direction and "payload" in msg:
            out.append(msg["payload"])
    return out


TCP_FRAMES = [f for _ports, frames in TCP for f in frames]
FRAMES = TCP_FRAMES + _relay_payloads()
HANDSHAKES = {f["name"]: f for f in FRAMES if f.get("type") == "handshake"}
CMB_FRAMES = [f for f in FRAMES if f.get("type") == "cmb"]


def _recipient(author: str) -> str:
    return {"alice": "bob", "bob": "alice", "carol": "dave", "dave": "carol"}[author]


def _open(record: dict[str, Any]) -> dict[str, Any]:
    """The plaintext record, opened with the recipient's captured key and the author's e2e key."""
    author = record["metadata"]["createdBy"]
    secret = E2E[_recipient(author)].shared_secret(HANDSHAKES[author]["e2ePublicKey"])
    return decrypt_record(record, secret)


def _author(record: dict[str, Any]) -> tuple[str, str]:
    hs = HANDSHAKES[record["metadata"]["createdBy"]]
    return hs["publicKey"], hs["nodeId"]


PLAIN = [_open(f["cmb"]) for f in CMB_FRAMES]


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


def test_every_v2_record_verifies_in_full_against_its_author() -> None:
    for frame, plain in zip(CMB_FRAMES, PLAIN, strict=True):
        key, node_id = _author(plain)
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


def _flip_first(sig: str) -> str:
    """Another first character: a fixed one would leave a signature that starts with it unchanged."""
    return ("B" if sig[0] == "A" else "A") + sig[1:]


_TAMPER: dict[str, Callable[[dict[str, Any]], None]] = {
    "focus text": lambda r: r["categories"]["focus"].update(text="no rate limit at all"),
    "category parents": lambda r: r["categories"]["issue"]["meta"].update(parents=["cmb-" + "0" * 64]),
    "addressScheme": lambda r: r["metadata"].update(addressScheme="mmp-cmb-flat-v1"),
    "suite stripped": lambda r: r["metadata"].pop("signatureSuite"),
    "suite unknown": lambda r: r["metadata"].update(signatureSuite="mmp-sig-v9"),
    "createdByNodeId": lambda r: r["metadata"].update(createdByNodeId="01a20000-0000-7000-8000-000000000000"),
    "assertionId": lambda r: r["metadata"].update(assertionId="asrt-" + "0" * 64),
    "assertionId gone": lambda r: r["metadata"].pop("assertionId"),
    "createdBy": lambda r: r["metadata"].update(createdBy="mallory"),
    "createdTimestamp": lambda r: r["metadata"].update(
        createdTimestamp=r["metadata"]["createdTimestamp"] + 1
    ),
    "room": lambda r: r["metadata"].update(room="room9"),
    "room null": lambda r: r["metadata"].update(room=None),
    "to": lambda r: r["metadata"].update(to="01a20000-0000-7000-8000-00000000000f"),
    "parents": lambda r: r["metadata"].update(lineage={"parents": ["cmb-" + "1" * 64], "method": "SVAF-v2"}),
    "application": lambda r: r["metadata"].update(application=_application(b"rm -rf /")),
    "sigAlg": lambda r: r["metadata"].update(sigAlg="none"),
    "sig": lambda r: r["metadata"].update(sig=_flip_first(r["metadata"]["sig"])),
    "key": lambda r: r["metadata"].update(key="cmb-" + "0" * 64),
}


@pytest.mark.parametrize("field", sorted(_TAMPER))
def test_tampering_any_signed_or_bound_field_fails(field: str) -> None:
    for plain in PLAIN:
        key, node_id = _author(plain)
        bad = copy.deepcopy(plain)
        _TAMPER[field](bad)
        if bad == plain:
            continue  # e.g. `to` already that value
        assert not verify_v2_record(bad, key, node_id=node_id), field
        assert not verify_any_stock_record(bad, key, node_id=node_id), field


def test_the_author_node_id_must_be_the_key_holder() -> None:
    plain = PLAIN[0]
    key, node_id = _author(plain)
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


# ── the application commitment ────────────────────────────────────────────────────────────


def _application(raw: bytes, **over: Any) -> dict[str, Any]:
    app = {
        "mediaType": "application/json",
        "schema": "xmesh.test/v1",
        "encoding": "base64url",
        "data": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        "byteLength": len(raw),
        "digest": "sha256-" + hashlib.sha256(raw).hexdigest(),
    }
    app.update(over)
    return app


def test_application_commitment_rules() -> None:
    assert application_commitment(None) == hashlib.sha256(b"mmp-app-v1\n1:0").hexdigest()
    good = _application(b'{"op":"noop"}')
    assert len(application_commitment(good)) == 64 and application_commitment(good) != application_commitment(
        None
    )
    for bad in (
        _application(b"x", byteLength=2),
        _application(b"x", digest="sha256-" + "0" * 64),
        _application(b"xy", data=base64.urlsafe_b64encode(b"xy").decode()),  # padded
        _application(b"x", encoding="base64"),
        _application(b"x", mediaType="Application/JSON"),
        _application(b"x", mediaType="text/plain; charset=utf-8"),
        _application(b"x" * 524289),
    ):
        with pytest.raises(StockDialectError):
            application_commitment(bad)


# ── what we emit ──────────────────────────────────────────────────────────────────────────


def _ours(identity: NodeIdentity, **kw: Any):
    texts = {"focus": "per-account buckets are in", "issue": "NAT users were locked out", "mood": "calm"}
    return mint(texts, identity=identity, group="room1", created_at=1796225141000, mood=(0.1, -0.2), **kw)


def test_our_v2_record_verifies_under_the_v2_rules_and_looks_like_theirs() -> None:
    me = NodeIdentity.generate("xm")
    frame = encode_stock_cmb(_ours(me), me, "room1", timestamp=1796225141001, sign=sign_as_v2)
    record = frame["cmb"]
    assert list(record) == ["categories", "metadata", "lineage"]
    assert list(record["metadata"]) == STOCK_V2_METADATA_ORDER
    assert list(record["categories"]) == list(CAT7)
    assert record["metadata"]["createdByNodeId"] == me.node_id and record["metadata"]["to"] is None
    assert record["metadata"]["key"] == stock_key_for(_ours(me))
    assert verify_v2_record(record, me.public_key, node_id=me.node_id)
    assert not verify_v2_record(record, NodeIdentity.generate("xm").public_key)
    assert not verify_stock_record(record, me.public_key)  # not the 0.12.1 preimage
    assert record["metadata"]["assertionId"] == assertion_id(record)
    # sealed for a stock peer, the signature still checks over ciphertext, and opens intact
    peer = X25519KeyPair.generate()
    mine = X25519KeyPair.generate()
    sealed = encrypt_record(record, mine.shared_secret(peer.public_key))
    assert verify_v2_record(sealed, me.public_key, node_id=me.node_id, check_content=False)
    assert decrypt_record(sealed, peer.shared_secret(mine.public_key)) == record


def test_our_directed_v2_remix() -> None:
    me = NodeIdentity.generate("xm")
    bob = HANDSHAKES["bob"]
    parent = next(p for p in PLAIN if p["metadata"]["createdBy"] == "bob")["metadata"]["key"]
    frame = encode_stock_cmb(_ours(me), me, "room1", to=bob["nodeId"], parents=[parent], sign=sign_as_v2)
    meta = frame["cmb"]["metadata"]
    assert frame["directed"] is True and frame["to"] == meta["to"] == bob["nodeId"]
    assert meta["lineage"] == {"parents": [parent], "method": "SVAF-v2"}
    assert verify_v2_record(frame["cmb"], me.public_key, node_id=me.node_id)
    for field, mutate in _TAMPER.items():
        bad = copy.deepcopy(frame["cmb"])
        mutate(bad)
        assert not verify_v2_record(bad, me.public_key, node_id=me.node_id), field


def test_upgrading_a_record_drops_the_old_signature_and_signing_needs_our_node_id() -> None:
    me = NodeIdentity.generate("xm")
    plain = copy.deepcopy(PLAIN[0])
    record = to_v2_record(plain, me.node_id)
    assert "sig" not in record["metadata"] and "assertionId" not in record["metadata"]
    with pytest.raises(StockDialectError, match="createdByNodeId"):
        sign_v2_record(to_v2_record(plain, "someone-else"), me)
    signed = sign_v2_record(record, me)
    assert verify_v2_record(signed, me.public_key, node_id=me.node_id)
    with pytest.raises(StockDialectError):
        stock_signing_payload({"metadata": {"key": "x"}})


def test_malformed_v2_records_fail_closed_never_crash() -> None:
    key, node_id = _author(PLAIN[0])
    for mutate in (
        lambda r: r.update(metadata="nope"),
        lambda r: r["metadata"].update(createdTimestamp=-1),
        lambda r: r["metadata"].update(createdTimestamp=1.5),
        lambda r: r["metadata"].update(room=7),
        lambda r: r["metadata"].update(to=["x"]),
        lambda r: r["metadata"].update(lineage="cmb-x"),
        lambda r: r["metadata"].update(lineage={"parents": "cmb-x"}),
        lambda r: r["metadata"].update(lineage={"parents": [3]}),
        lambda r: r["metadata"].update(createdByNodeId=""),
        lambda r: r["metadata"].update(application="base64"),
        lambda r: r["metadata"].update(sig=12),
    ):
        bad = copy.deepcopy(PLAIN[0])
        mutate(bad)
        assert not verify_v2_record(bad, key, node_id=node_id)
        assert not verify_any_stock_record(bad, key)
    assert not verify_v2_record(PLAIN[0], "not a key")
    assert not verify_v2_record([], key)  # type: ignore[arg-type]


def test_a_record_with_an_application_section_signs_and_binds_its_bytes() -> None:
    me = NodeIdentity.generate("xm")
    record = encode_stock_cmb(_ours(me), me, "room1", sign=sign_as_v2)["cmb"]
    record["metadata"]["application"] = _application(b'{"op":"rotate-token"}')
    sign_v2_record(record, me)
    assert verify_v2_record(record, me.public_key, node_id=me.node_id)
    swapped = copy.deepcopy(record)
    swapped["metadata"]["application"] = _application(b'{"op":"delete-all"}')
    assert not verify_v2_record(swapped, me.public_key, node_id=me.node_id)
    renamed = copy.deepcopy(record)
    renamed["metadata"]["application"]["schema"] = "xmesh.test/v2"
    assert not verify_v2_record(renamed, me.public_key, node_id=me.node_id)


_STOCK_VERIFY = r"""
const path = require('path');
const signing = require(path.join(process.env.SYM_NODE_DIR, 'lib', 'core', 'cmb-signing.js'));
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const out = input.records.map((r) => {
  const v = signing.verifyCMB(r, input.key);
  let aid = null;
  try { aid = signing.assertionIdV2_0(r); } catch (e) { aid = 'error: ' + e.message; }
  return { valid: v.valid, error: v.error || null, assertionId: aid };
});
process.stdout.write(JSON.stringify(out));
"""


@pytest.mark.skipif(
    not (os.environ.get("SYM_NODE_DIR") and shutil.which("node")),
    reason="set SYM_NODE_DIR to a stock sym 0.12.x checkout to cross-check with its own verifier",
)
def test_the_stock_verifier_accepts_what_we_sign_including_its_quirks() -> None:
    """Our v2.0 records, edge cases included (null room, NFC author, application), as a stock node
    reads them: its own verifyCMB says valid and its assertion id equals ours."""
    me = NodeIdentity(
        "Zoe\u0301", NodeIdentity.generate("x").node_id, NodeIdentity.generate("x").signing_key, ""
    )
    plain = encode_stock_cmb(_ours(me), me, "room1", sign=sign_as_v2)["cmb"]
    directed = encode_stock_cmb(
        _ours(me),
        me,
        "room1",
        to="pe\u0301er",
        parents=["cmb-" + "e" * 64, "cmb-" + "1" * 64],
        sign=sign_as_v2,
    )["cmb"]
    no_room = copy.deepcopy(plain)
    no_room["metadata"]["room"] = None
    with_app = copy.deepcopy(plain)
    with_app["metadata"]["application"] = _application(b"\x00\xffbinary")
    records = [plain, directed, sign_v2_record(no_room, me), sign_v2_record(with_app, me)]
    run = subprocess.run(
        ["node", "-e", _STOCK_VERIFY],
        input=json.dumps({"key": me.public_key_b64url, "records": records}),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert run.returncode == 0, run.stderr
    verdicts = json.loads(run.stdout)
    for record, verdict in zip(records, verdicts, strict=True):
        assert verdict == {"valid": True, "error": None, "assertionId": record["metadata"]["assertionId"]}
        assert verify_v2_record(record, me.public_key, node_id=me.node_id)
