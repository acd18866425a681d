"""A stock reference node's frames, replayed from the recorded captures, through a live MeshNode."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tests.mmp_data import mmp_path
from tests.unit.node_testkit import RawPeer, make_node, note
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.dialects.stock_keys import verify_stock_record

CAPTURE = mmp_path("captures", "stock-node-0.12.1-tcp.json")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XMESH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XMESH_SYM_LOOPBACK_DIR", str(tmp_path / "loopback"))


def _bob_frames() -> tuple[dict, dict]:
    if not CAPTURE.exists():
        pytest.skip("stock captures not present")
    directions = json.loads(CAPTURE.read_text())
    for _ports, frames in directions:
        if frames and frames[0].get("name") == "bob":
            cmb = next(f for f in frames if f["type"] == "cmb")
            return frames[0], cmb
    raise AssertionError("bob's direction not in the capture")


async def _stock_session(tmp_path: Path):
    hs, cmb_frame = _bob_frames()
    node, inbox = make_node(tmp_path, "alice", group="room1", discovery=[])
    await node.start()
    raw = await RawPeer(NodeIdentity.generate("bob"), group="room1").connect(node.port)
    await raw.send(hs)
    assert (await raw.recv())["type"] == "handshake"
    assert await node.wait_for_peers(1, 2.0)
    return node, inbox, raw, cmb_frame


async def _settle(raw: RawPeer) -> None:
    await raw.send({"type": "ping"})
    while (frame := await raw.recv(2.0)) is not None and frame["type"] != "pong":
        pass


async def test_a_captured_stock_cmb_is_verified_stored_and_surfaced(tmp_path: Path) -> None:
    node, inbox, raw, cmb_frame = await _stock_session(tmp_path)
    try:
        await raw.send(cmb_frame)
        await raw.send(cmb_frame)  # duplicate delivery
        assert await inbox.wait(lambda: len(inbox.cmbs) == 1)
        await _settle(raw)
        [(cmb, peer)] = inbox.cmbs
        assert peer.name == "bob" and peer.version == "0.2.3"
        assert cmb.created_by == "bob" and cmb.group == "room1" and cmb.key.startswith("cmb1-")
        assert cmb.text("focus") == "rate-limit middleware on /api/login"
        assert node.store.source_of(cmb.key) == "bob" and inbox.rejects() == []
        # bob signed: a stripped copy is now a downgrade.
        stripped = copy.deepcopy(cmb_frame)
        stripped["cmb"]["metadata"]["sig"] = None
        stripped["cmb"]["categories"]["issue"]["text"] = "changed and unsigned"
        await raw.send(stripped)
        await _settle(raw)
        assert inbox.rejects() == ["downgrade"]
    finally:
        await raw.close()
        await node.stop()


async def test_tampered_stock_records_are_rejected(tmp_path: Path) -> None:
    node, inbox, raw, cmb_frame = await _stock_session(tmp_path)
    try:
        swapped = copy.deepcopy(cmb_frame)
        swapped["cmb"]["categories"]["focus"]["text"] = "something else"
        forged = copy.deepcopy(cmb_frame)
        sig = forged["cmb"]["metadata"]["sig"]
        forged["cmb"]["metadata"]["sig"] = ("A" if sig[0] != "A" else "B") + sig[1:]
        other_room = copy.deepcopy(cmb_frame)
        other_room["cmb"]["metadata"]["room"] = "room2"
        encrypted = copy.deepcopy(cmb_frame)
        encrypted["cmb"]["categories"] = "bm90IHJlYWRhYmxl"
        for frame in (swapped, forged, other_room, encrypted):
            await raw.send(frame)
        await _settle(raw)
        assert inbox.rejects() == ["key-mismatch", "bad-signature", "wrong-group", "malformed"]
        assert node.store.count() == 0 and inbox.cmbs == []
    finally:
        await raw.close()
        await node.stop()


async def test_we_answer_a_stock_peer_with_a_signed_stock_record(tmp_path: Path) -> None:
    node, _, raw, _ = await _stock_session(tmp_path)
    try:
        ours = note(node.identity, "room1", "reply in the stock dialect", to="bob")
        assert await node.publish(ours) == 1
        while (frame := await raw.recv(2.0)) is not None and frame["type"] != "cmb":
            pass
        assert frame is not None
        record = frame["cmb"]
        assert record["categories"]["focus"]["text"] == "reply in the stock dialect"
        assert record["metadata"]["createdBy"] == "alice" and record["metadata"]["room"] == "room1"
        assert frame["directed"] is True and record["metadata"]["to"] == frame["to"]
        assert verify_stock_record(record, node.identity.public_key)
    finally:
        await raw.close()
        await node.stop()
