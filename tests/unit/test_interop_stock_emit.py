"""What we write in the stock 0.12.1 dialect: our CMBs as stock records (plain, directed,
malformed input) and their end-to-end encryption, against the recorded frames' shape and Node's own
crypto. test_interop_captures.py reads the recorded frames themselves."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from typing import Any

import pytest

from tests.mmp_data import mmp_path
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import mint
from xmesh_agent.mmp.dialects.stock import (
    StockDialectError,
    block_key,
    check_stock_audience,
    decode_stock_cmb,
    encode_stock_cmb,
    recompute_stock_key,
    stock_key_for,
    verify_stock_record,
)
from xmesh_agent.mmp.e2e import E2EError, X25519KeyPair, decrypt_record, encrypt_record

TCP = json.loads((mmp_path("captures") / "stock-node-0.12.1-tcp.json").read_text())
TCP_FRAMES: list[dict[str, Any]] = [f for _ports, frames in TCP for f in frames]


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
