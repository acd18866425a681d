"""What we emit in the v2.0 dialect (records, directed remixes, the application section), checked
against the v2.0 rules, the recorded frames and, when SYM_NODE_DIR is set, the stock verifier itself."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import shutil
import subprocess
from typing import Any

import pytest

from tests.unit.v2_captures import HANDSHAKES, PLAIN, STOCK_V2_METADATA_ORDER, TAMPER, application, author_of
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import CAT7, mint
from xmesh_agent.mmp.dialects.stock import (
    StockDialectError,
    encode_stock_cmb,
    stock_key_for,
    stock_signing_payload,
    verify_stock_record,
)
from xmesh_agent.mmp.dialects.v2 import (
    application_commitment,
    assertion_id,
    sign_as_v2,
    sign_v2_record,
    to_v2_record,
    verify_any_stock_record,
    verify_v2_record,
)
from xmesh_agent.mmp.e2e import X25519KeyPair, decrypt_record, encrypt_record

# ── the application commitment ────────────────────────────────────────────────────────────


def test_application_commitment_rules() -> None:
    assert application_commitment(None) == hashlib.sha256(b"mmp-app-v1\n1:0").hexdigest()
    good = application(b'{"op":"noop"}')
    assert len(application_commitment(good)) == 64 and application_commitment(good) != application_commitment(
        None
    )
    for bad in (
        application(b"x", byteLength=2),
        application(b"x", digest="sha256-" + "0" * 64),
        application(b"xy", data=base64.urlsafe_b64encode(b"xy").decode()),  # padded
        application(b"x", encoding="base64"),
        application(b"x", mediaType="Application/JSON"),
        application(b"x", mediaType="text/plain; charset=utf-8"),
        application(b"x" * 524289),
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
    for field, mutate in TAMPER.items():
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
    key, node_id = author_of(PLAIN[0])
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
    record["metadata"]["application"] = application(b'{"op":"rotate-token"}')
    sign_v2_record(record, me)
    assert verify_v2_record(record, me.public_key, node_id=me.node_id)
    swapped = copy.deepcopy(record)
    swapped["metadata"]["application"] = application(b'{"op":"delete-all"}')
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
    with_app["metadata"]["application"] = application(b"\x00\xffbinary")
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
