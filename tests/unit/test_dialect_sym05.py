"""The sym 0.5 dialect (original xmesh-agent peers), on frames recorded from sym 0.5.8 nodes.

Codec tests on the capture, then the capture replayed through a live MeshNode: detection from the
handshake, decryption of `fields`, the trust policy for unsigned blocks, and our answer in kind.
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
from xmesh_agent.mmp.cmb import CMB, content_key, legacy_key, mint, minted_texts
from xmesh_agent.mmp.dialects.sym05 import (
    Sym05EncryptedError,
    Sym05Error,
    decode_sym05_cmb,
    encode_sym05_cmb,
)
from xmesh_agent.mmp.e2e import X25519KeyPair, aes_gcm_available, decrypt_categories
from xmesh_agent.mmp.handshake import build_handshake
from xmesh_agent.mmp.session import Dialect, dialect_of

CAPTURE = mmp_path("captures", "sym-0.5.8-tcp.json")
needs_aes = pytest.mark.skipif(not aes_gcm_available(), reason="no AES-256-GCM on this CPU")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XMESH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XMESH_SYM_LOOPBACK_DIR", str(tmp_path / "loopback"))


def _capture() -> dict[str, Any]:
    return json.loads(CAPTURE.read_text())


def _keypair(name: str) -> X25519KeyPair:
    der = base64.b64decode(_capture()["keys"][name]["e2ePrivatePkcs8"])
    return X25519KeyPair.from_pkcs8_der(der)


def _frames(sender: str, receiver: str, kind: str) -> list[dict[str, Any]]:
    return [
        e
        for e in _capture()["frames"]
        if e["from"] == sender and e["to"] == receiver and e["frame"]["type"] == kind
    ]


def _secret(receiver: str, sender: str) -> bytes:
    return _keypair(receiver).shared_secret(_capture()["keys"][sender]["e2ePublicSpki"])


def test_the_handshake_tells_a_sym05_peer_from_stock_0_12_and_from_us() -> None:
    [hs] = _frames("sym05-writer", "sym05-late", "handshake")
    assert dialect_of(hs["frame"]) is Dialect.SYM05 and hs["frame"]["version"] == "0.2.3"
    ours = NodeIdentity.generate("xm")
    keys = X25519KeyPair.generate()
    stock = stock_handshake(ours, "team", keys)
    assert dialect_of(stock) is Dialect.STOCK  # 0.12: `room`
    assert dialect_of(build_handshake(ours, "team", keys.public_spki_b64)) is Dialect.SPEC  # ours
    assert stock["version"] == hs["frame"]["version"]  # same version string: `group`/`room` tell them apart


@needs_aes
def test_encrypted_root_and_remix_decode_into_our_cmb() -> None:
    root_e, remix_e = _frames("sym05-writer", "sym05-listener", "cmb")
    secret = _secret("sym05-listener", "sym05-writer")
    root = decode_sym05_cmb(root_e["frame"], secret=secret)
    assert root.encrypted and root.key_matches and not root.anchor
    assert root.cmb.text("focus") == root_e["decrypted_fields"]["focus"]["text"]
    assert root.cmb.fields["mood"].valence == pytest.approx(0.2)
    assert root.cmb.key == content_key(root.cmb.texts()) and root.cmb.lineage is None
    assert root.cmb.created_by == "sym05-writer" and root.cmb.sig is None

    writer_id = _capture()["keys"]["sym05-writer"]["nodeId"]
    remix = decode_sym05_cmb(remix_e["frame"], secret=secret, author_node_id=writer_id, aliases=root.aliases)
    assert remix.parents == [root.key] and remix.key_matches
    assert remix.cmb.parents == [root.cmb.key]  # their parent key mapped to our address
    assert remix.cmb.key == content_key(remix.cmb.texts(), [root.cmb.key], writer_id)


@needs_aes
def test_anchor_replays_are_flagged_and_a_wrong_or_missing_secret_is_refused() -> None:
    anchors = [e for e in _frames("sym05-writer", "sym05-late", "cmb") if e["frame"].get("_anchor")]
    assert len(anchors) == 2
    decoded = decode_sym05_cmb(anchors[0]["frame"], secret=_secret("sym05-late", "sym05-writer"))
    assert decoded.anchor
    with pytest.raises(Sym05EncryptedError):
        decode_sym05_cmb(anchors[0]["frame"], secret=_secret("sym05-listener", "sym05-writer"))
    with pytest.raises(Sym05EncryptedError):
        decode_sym05_cmb(anchors[0]["frame"])


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c.update(fields=42),
        lambda c: c.update(key="cmb1-" + "0" * 64),
        lambda c: c.pop("createdBy"),
        lambda c: c.update(fields={"focus": {"text": ""}}),
        lambda c: c.update(fields="c2VjcmV0"),  # string fields without _e2e
    ],
)
def test_malformed_sym05_frames_raise_a_clear_error(mutate: Any) -> None:
    frame = {
        "type": "cmb",
        "timestamp": 1,
        "cmb": {"key": "cmb-" + "a" * 32, "createdBy": "x", "createdAt": 1},
    }
    frame["cmb"]["fields"] = {"focus": {"text": "hello"}}
    mutate(frame["cmb"])
    with pytest.raises(Sym05Error):
        decode_sym05_cmb(frame)


@needs_aes
def test_our_frame_is_keyed_as_sym05_keys_the_same_texts_and_opens_with_its_secret() -> None:
    [root_e, _] = _frames("sym05-writer", "sym05-listener", "cmb")
    captured = root_e["decrypted_fields"]
    texts = {f: v["text"] for f, v in captured.items()}
    cmb = CMB(
        key=content_key(minted_texts(texts)),
        createdBy="xm",
        createdAt=1,
        fields={f: {"text": t} for f, t in texts.items()},
    )
    secret = bytes(range(32))
    frame = encode_sym05_cmb(cmb, secret=secret, timestamp=5)
    body = frame["cmb"]
    assert body["key"] == root_e["frame"]["cmb"]["key"] == legacy_key(texts)
    assert list(body) == ["key", "createdBy", "createdAt", "fields", "lineage", "_e2e"]
    opened = decrypt_categories(body["fields"], body["_e2e"]["nonce"], secret)
    assert {f: v["text"] for f, v in opened.items()} == texts
    back = decode_sym05_cmb(frame, secret=secret)
    assert back.cmb.texts() == cmb.texts() and back.key_matches


# ── through a live MeshNode ───────────────────────────────────────────────────────────────


async def _sym05_session(tmp_path: Path, admission: str = "tofu"):
    """Our node holds the capture's listener e2e key; a raw peer replays the writer's side."""
    [hs] = _frames("sym05-writer", "sym05-late", "handshake")
    node, inbox = make_node(
        tmp_path,
        "xm",
        group="s05cap",
        discovery=[],
        admission=admission,
        e2e_keypair=_keypair("sym05-listener"),
    )
    await node.start()
    raw = await RawPeer(NodeIdentity.generate("sym05-writer"), group="s05cap").connect(node.port)
    await raw.send(hs["frame"])
    ours = await raw.recv()
    assert ours is not None and ours["type"] == "handshake" and ours["group"] == "s05cap"
    assert await node.wait_for_peers(1, 2.0)
    return node, inbox, raw


async def _settle(raw: RawPeer) -> None:
    await raw.send({"type": "ping"})
    while (frame := await raw.recv(2.0)) is not None and frame["type"] != "pong":
        pass


@needs_aes
async def test_a_captured_encrypted_sym05_cmb_is_decrypted_stored_and_surfaced(tmp_path: Path) -> None:
    node, inbox, raw = await _sym05_session(tmp_path)
    try:
        root_e, remix_e = _frames("sym05-writer", "sym05-listener", "cmb")
        for entry in (root_e, root_e, remix_e):  # the duplicate is dropped
            await raw.send(entry["frame"])
        assert await inbox.wait(lambda: len(inbox.cmbs) == 2)
        await _settle(raw)
        (root, peer), (remix, _) = inbox.cmbs
        assert peer.name == "sym05-writer" and peer.version == "0.2.3"
        assert root.text("focus") == root_e["decrypted_fields"]["focus"]["text"]
        assert remix.parents == [root.key] and inbox.rejects() == []
        assert node.store.source_of(root.key) == "sym05-writer"
    finally:
        await raw.close()
        await node.stop()


@needs_aes
async def test_strict_admission_refuses_unsigned_sym05_blocks(tmp_path: Path) -> None:
    node, inbox, raw = await _sym05_session(tmp_path, admission="strict")
    try:
        root_e, _ = _frames("sym05-writer", "sym05-listener", "cmb")
        tampered = copy.deepcopy(root_e["frame"])
        tampered["cmb"]["fields"] = "A" + tampered["cmb"]["fields"][1:]
        await raw.send(root_e["frame"])
        await raw.send(tampered)
        await _settle(raw)
        assert inbox.rejects() == ["untrusted-key", "e2e-undecryptable"] and inbox.cmbs == []
    finally:
        await raw.close()
        await node.stop()


@needs_aes
async def test_we_answer_a_sym05_peer_in_its_frame_encrypted_and_as_a_root_to_its_own_block(
    tmp_path: Path,
) -> None:
    node, inbox, raw = await _sym05_session(tmp_path)
    try:
        root_e, _ = _frames("sym05-writer", "sym05-listener", "cmb")
        await raw.send(root_e["frame"])
        assert await inbox.wait(lambda: len(inbox.cmbs) == 1)
        [(theirs, _)] = inbox.cmbs
        answer = mint(
            {"focus": "reply in the 0.5 dialect", "intent": "ack"},
            identity=node.identity,
            group="s05cap",
            created_at=7,
            parents=[theirs],
        )
        assert await node.publish(answer) == 1
        while (frame := await raw.recv(2.0)) is not None and frame["type"] != "cmb":
            pass
        assert frame is not None and "metadata" not in frame["cmb"] and "sig" not in frame["cmb"]
        body = frame["cmb"]
        fields = decrypt_categories(
            body["fields"], body["_e2e"]["nonce"], _secret("sym05-writer", "sym05-listener")
        )
        assert fields["focus"]["text"] == "reply in the 0.5 dialect" and fields["issue"]["text"] == "neutral"
        assert body["createdBy"] == "xm" and body["key"] == legacy_key(
            {f: v["text"] for f, v in fields.items()}
        )
        assert body["lineage"]["parents"] == []  # its own block as parent would be dropped as an echo
        assert node.store.get(answer.key).parents == [theirs.key]  # our store keeps the lineage
        note_cmb = note(node.identity, "s05cap", "a plain broadcast")
        assert await node.publish(note_cmb) == 1
    finally:
        await raw.close()
        await node.stop()


@needs_aes
@pytest.mark.parametrize(
    ("admission", "signed_before", "expected"), [("open", False, []), ("tofu", True, ["downgrade"])]
)
async def test_open_accepts_and_a_name_that_signed_before_cannot_go_unsigned(
    tmp_path: Path, admission: str, signed_before: bool, expected: list[str]
) -> None:
    node, inbox, raw = await _sym05_session(tmp_path, admission=admission)
    try:
        if signed_before:
            node.verifier._mark_signer("sym05-writer")  # as if it had once sent us a signed block
        root_e, _ = _frames("sym05-writer", "sym05-listener", "cmb")
        await raw.send(root_e["frame"])
        await _settle(raw)
        assert inbox.rejects() == expected and len(inbox.cmbs) == (0 if expected else 1)
    finally:
        await raw.close()
        await node.stop()
