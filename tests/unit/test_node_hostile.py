"""Hostile input: thousands of malformed frames from raw sockets while a good peer keeps working."""

from __future__ import annotations

import asyncio
import json
import random
import struct
from pathlib import Path
from typing import Any

import pytest

from tests.unit.node_testkit import RawPeer, make_node, note
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import sign_cmb


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XMESH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XMESH_SYM_LOOPBACK_DIR", str(tmp_path / "loopback"))


def _body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _frame(obj: Any) -> bytes:
    body = _body(obj)
    return struct.pack(">I", len(body)) + body


def bad_bodies(attacker: NodeIdentity, victim_name: str, rng: random.Random) -> list[bytes]:
    """Frames that must each be dropped (silently or with a reject event) without closing anything.

    The one exception: a random mutation can land outside the signed content (say in `sigAlg`, which
    is pinned rather than trusted), leaving the attacker's own validly signed "bait" block intact.
    """
    good = note(attacker, "team", "bait")
    evil_focus = good.fields["focus"].model_copy(update={"text": "swapped"})
    swapped = good.model_copy(update={"fields": {**good.fields, "focus": evil_focus}})
    forger = NodeIdentity.generate("forger")
    wire = good.to_wire()
    bodies = [
        b"not json at all",
        b"\xff\xfe\x00 invalid utf-8",
        b"[1, 2, 3]",
        b'"a string"',
        b"{}",
        b'{"type": 42}',
        b'{"type": null}',
        b"[" * 50_000,
        _body({"type": "x-vendor-unknown", "data": "a" * 1000}),
        _body({"type": "state-sync", "h1": [0.1] * 64}),
        _body({"type": "cmb"}),
        _body({"type": "cmb", "cmb": None}),
        _body({"type": "cmb", "cmb": []}),
        _body({"type": "cmb", "cmb": {**wire, "fields": []}}),
        _body({"type": "cmb", "cmb": {**wire, "createdAt": "yesterday"}}),
        _body({"type": "cmb", "cmb": {**wire, "createdAt": 10**40}}),
        _body({"type": "cmb", "cmb": {**wire, "key": 12345}}),
        _body({"type": "cmb", "cmb": {**wire, "sig": 99}}),
        _body({"type": "cmb", "cmb": {**wire, "sig": "!!!not-base64!!!"}}),
        _body({"type": "cmb", "cmb": {**wire, "createdBy": "x" * 100_000}}),
        _body({"type": "cmb", "cmb": {**wire, "fields": {"focus": {"text": "y" * 500_000}}}}),
        _body({"type": "cmb", "cmb": sign_cmb(note(attacker, "team", "forged sig"), forger).to_wire()}),
        _body({"type": "cmb", "cmb": swapped.to_wire()}),
        _body({"type": "cmb", "cmb": note(attacker, "other-group", "cross").to_wire()}),
        _body({"type": "cmb", "cmb": note(attacker, "team", "misdirected", to="nobody").to_wire()}),
        _body({"type": "peer-info", "peers": "nope"}),
        _body(
            {
                "type": "peer-info",
                "peers": [1, None, {"nodeId": 3}, {"nodeId": "a", "name": "b", "publicKey": "@@"}],
            }
        ),
        _body({"type": "handshake", "nodeId": "again", "name": victim_name}),
        _body({"type": "error", "code": 1005, "message": "obey me"}),
        _body({"type": "pong"}),
    ]
    # Random printable junk, and random mutations of a valid cmb frame.
    frame = json.dumps({"type": "cmb", "cmb": wire})
    for _ in range(40):
        bodies.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))))
        i = rng.randrange(len(frame))
        bodies.append((frame[:i] + rng.choice('{}[]",:x0') + frame[i + 1 :]).encode())
    return bodies


async def _flood_session(port: int, rounds: int, seed: int) -> int:
    """A handshaken attacker throwing bad frames (split across tiny writes, too). Returns frames sent."""
    rng = random.Random(seed)
    raw = RawPeer(NodeIdentity.generate(f"attacker{seed}"))
    await raw.connect(port)
    await raw.handshake()
    bodies = bad_bodies(raw.identity, "host", rng)
    sent = 0
    for _ in range(rounds):
        batch = bytearray()
        for body in bodies:
            batch += struct.pack(">I", len(body)) + body
            sent += 1
        # Partial reads: deliver the batch in ragged pieces.
        view = memoryview(bytes(batch))
        while view:
            cut = rng.randrange(1, 70_000)
            await raw.send_raw(bytes(view[:cut]))
            view = view[cut:]
    await raw.send({"type": "ping"})
    while (frame := await raw.recv(10.0)) is not None and frame["type"] != "pong":
        pass
    assert frame is not None, "the node closed a connection that only sent droppable frames"
    await raw.close()
    return sent


async def _killer(port: int, payload: bytes, handshake: bool) -> bool:
    """A connection whose bytes must make the node close it. True when it was closed."""
    raw = RawPeer(NodeIdentity.generate("killer"))
    await raw.connect(port)
    if handshake:
        await raw.handshake()
    await raw.send_raw(payload)
    _, closed = await raw.frames_until_closed(3.0)
    await raw.close()
    return closed


async def test_node_survives_a_flood_of_malformed_input_and_keeps_serving(tmp_path: Path) -> None:
    # Thirteen hostile connections from one address at once: this test is about their bytes, not
    # about their number (test_node_trust.py holds the per-source quota).
    host, inbox = make_node(
        tmp_path,
        "host",
        discovery=[],
        heartbeat_timeout=5.0,
        ping_interval=2.0,
        handshake_timeout=0.8,
        max_pending_per_source=32,
    )
    await host.start()
    good, good_inbox = make_node(
        tmp_path, "good", discovery=[], static_peers=[f"127.0.0.1:{host.port}"], heartbeat_timeout=5.0
    )
    await good.start()
    try:
        assert await host.wait_for_peers(1, 5.0)
        floods = [asyncio.ensure_future(_flood_session(host.port, 12, seed)) for seed in range(6)]
        killers = [
            _killer(host.port, struct.pack(">I", 0), True),
            _killer(host.port, struct.pack(">I", 2**31) + b"{}", True),
            _killer(host.port, struct.pack(">I", 1024 * 1024 + 1), True),
            _killer(host.port, struct.pack(">I", 0), False),
            _killer(host.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False),
            _killer(host.port, struct.pack(">I", 2) + b"{}", False),  # no type: dropped, then timeout
            _killer(
                host.port, struct.pack(">I", 40) + b'{"type":"handshake","nodeId":"x","name":"y"}', False
            ),
        ]
        kill_task = asyncio.ensure_future(asyncio.gather(*killers))
        # Meanwhile the good peer talks both ways.
        sent_good = []
        for i in range(20):
            cmb = note(good.identity, "team", f"good block {i}")
            sent_good.append(cmb.key)
            assert await good.publish(cmb) == 1
        back = note(host.identity, "team", "host answers")
        assert await host.publish(back) == 1
        totals = await asyncio.gather(*floods)
        closed = await kill_task
        # A frame with no type is dropped silently; the handshake deadline then closes.
        assert all(closed), closed
        assert sum(totals) > 5000
        good_keys = set(sent_good)
        assert await inbox.wait(lambda: good_keys <= {c.key for c, _ in inbox.cmbs})
        assert await good_inbox.wait(lambda: len(good_inbox.cmbs) == 1)
        # Only the good peer's blocks, our own, and attacker blocks that are either their intact
        # "bait" or claim an author nobody holds a key for (the unsigned-from-unknown window the
        # spec discloses in §18.3.1) were stored. Nothing names a known identity falsely.
        others = [c for c, _ in inbox.cmbs if c.key not in good_keys]
        for c in others:
            intact = c.text("focus") == "bait" and c.created_by.startswith("attacker")
            assert intact or host.verifier.resolve(c.created_by) is None, c.to_wire()
            assert host.store.source_of(c.key).startswith("attacker")
        assert host.store.count() == 21 + len(others)
        # The attackers' sockets are closed on their side; the host notices within its read loop.
        deadline = asyncio.get_running_loop().time() + 10.0
        while {p.name for p in host.peers()} != {"good"} and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert {p.name for p in host.peers()} == {"good"}
        reasons = set(inbox.rejects())
        assert {"malformed", "bad-signature", "key-mismatch", "wrong-group", "not-for-us"} <= reasons
    finally:
        await good.stop()
        await host.stop()
