"""Session rules of §5 on real sockets: handshake first, groups, duplicate guard, heartbeat."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.unit.node_testkit import RawPeer, make_node, note, poll
from xmesh_agent.identity import NodeIdentity


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XMESH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XMESH_SYM_LOOPBACK_DIR", str(tmp_path / "loopback"))


async def test_our_handshake_carries_the_spec_fields_and_room(tmp_path: Path) -> None:
    node, _ = make_node(tmp_path, "host", discovery=[])
    await node.start()
    raw = await RawPeer(NodeIdentity.generate("visitor")).connect(node.port)
    try:
        theirs = await raw.handshake()
        assert theirs["nodeId"] == node.identity.node_id and theirs["name"] == "host"
        assert theirs["version"] == "1.1.0" and theirs["extensions"] == ["mmp-handshake-proof-v2"]
        assert isinstance(theirs["nonce"], str) and len(theirs["nonce"]) == 43
        assert theirs["lifecycleRole"] == "participant"
        assert theirs["group"] == "team" and theirs["room"] == "team"
        assert theirs["publicKey"] == node.identity.public_key_b64url
        assert await node.wait_for_peers(1, 2.0)
        [peer] = node.peers()
        assert peer.name == "visitor" and peer.address.startswith("127.0.0.1:")
    finally:
        await raw.close()
        await node.stop()


async def test_group_mismatch_is_refused(tmp_path: Path) -> None:
    node, inbox = make_node(tmp_path, "host", discovery=[])
    await node.start()
    raw = await RawPeer(NodeIdentity.generate("stranger"), group="elsewhere").connect(node.port)
    try:
        await raw.handshake()
        await raw.send_cmb(note(raw.identity, "elsewhere", "cross-group"))
        _, closed = await raw.frames_until_closed(2.0)
        assert closed
        assert node.peers() == [] and node.store.count() == 0 and inbox.cmbs == []
        assert inbox.named("peer-connected") == []
    finally:
        await raw.close()
        await node.stop()


async def test_stock_room_field_counts_as_the_group(tmp_path: Path) -> None:
    node, _ = make_node(tmp_path, "host", discovery=[])
    await node.start()
    raw = await RawPeer(NodeIdentity.generate("stock")).connect(node.port)
    try:
        hs = {
            "type": "handshake",
            "nodeId": raw.identity.node_id,
            "name": "stock",
            "version": "0.2.3",
            "extensions": [],
            "room": "team",
            "publicKey": raw.identity.public_key_b64url,
        }
        await raw.send(hs)
        assert (await raw.recv())["type"] == "handshake"
        assert await node.wait_for_peers(1, 2.0)
        assert node.peers()[0].version == "0.2.3"
    finally:
        await raw.close()
        await node.stop()


async def test_silent_connection_is_closed_after_the_handshake_timeout(tmp_path: Path) -> None:
    node, _ = make_node(tmp_path, "host", discovery=[], handshake_timeout=0.3)
    await node.start()
    raw = await RawPeer(NodeIdentity.generate("mute")).connect(node.port)
    try:
        frames, closed = await raw.frames_until_closed(3.0)
        assert closed
        assert [f["type"] for f in frames] == ["handshake", "error"]
        assert frames[1]["code"] == 1004
        assert node.peers() == []
    finally:
        await raw.close()
        await node.stop()


async def test_a_cmb_before_the_handshake_closes_the_connection(tmp_path: Path) -> None:
    node, inbox = make_node(tmp_path, "host", discovery=[])
    await node.start()
    raw = await RawPeer(NodeIdentity.generate("eager")).connect(node.port)
    try:
        await raw.send_cmb(note(raw.identity, "team", "too early"))
        _, closed = await raw.frames_until_closed(2.0)
        assert closed and node.store.count() == 0 and inbox.cmbs == []
    finally:
        await raw.close()
        await node.stop()


async def test_duplicate_node_id_on_the_same_transport_is_closed(tmp_path: Path) -> None:
    node, inbox = make_node(tmp_path, "host", discovery=[])
    await node.start()
    twin = NodeIdentity.generate("twin")
    first = await RawPeer(twin).connect(node.port)
    second = await RawPeer(twin).connect(node.port)
    try:
        await first.handshake()
        assert await node.wait_for_peers(1, 2.0)
        await second.handshake()
        frames, closed = await second.frames_until_closed(2.0)
        assert closed and any(f.get("type") == "error" and f.get("code") == 1005 for f in frames)
        # The first connection is untouched and still carries CMBs.
        cmb = note(twin, "team", "still here")
        await first.send_cmb(cmb)
        assert await inbox.wait(lambda: len(inbox.cmbs) == 1)
        assert len(node.peers()) == 1
    finally:
        await first.close()
        await second.close()
        await node.stop()


async def test_heartbeat_pings_then_closes_a_silent_peer(tmp_path: Path) -> None:
    node, inbox = make_node(tmp_path, "host", discovery=[], ping_interval=0.2, heartbeat_timeout=0.6)
    await node.start()
    raw = await RawPeer(NodeIdentity.generate("sleepy")).connect(node.port)
    try:
        await raw.handshake()
        assert await node.wait_for_peers(1, 2.0)
        frames, closed = await raw.frames_until_closed(3.0)  # never answers the pings
        assert closed
        assert "ping" in [f["type"] for f in frames]
        assert await inbox.wait(lambda: len(inbox.named("peer-disconnected")) == 1)
        assert node.peers() == []
    finally:
        await raw.close()
        await node.stop()


async def test_heartbeat_keeps_a_peer_that_answers_and_pongs_our_ping(tmp_path: Path) -> None:
    node, inbox = make_node(tmp_path, "host", discovery=[], ping_interval=0.2, heartbeat_timeout=1.0)
    await node.start()
    raw = await RawPeer(NodeIdentity.generate("awake")).connect(node.port)
    try:
        await raw.handshake()
        await raw.send({"type": "ping"})
        pongs = pings = 0
        deadline = time.monotonic() + 1.6  # well past the heartbeat timeout
        while time.monotonic() < deadline:
            frame = await raw.recv(max(0.01, deadline - time.monotonic()))
            if frame is None:
                continue
            if frame["type"] == "ping":
                pings += 1
                await raw.send({"type": "pong"})
            elif frame["type"] == "pong":
                pongs += 1
        assert pongs == 1 and pings >= 2
        assert len(node.peers()) == 1 and inbox.named("peer-disconnected") == []
    finally:
        await raw.close()
        await node.stop()


async def test_two_nodes_in_different_groups_never_connect(tmp_path: Path) -> None:
    a, _ = make_node(tmp_path, "a", group="red", discovery=[])
    b, _ = make_node(tmp_path, "b", group="blue", discovery=[])
    await b.start()
    a.static_peers = [f"127.0.0.1:{b.port}"]
    await a.start()
    try:
        assert not await a.wait_for_peers(1, 0.6)
        assert b.peers() == []
        assert await poll(lambda: all(t.task and not t.task.done() for t in a._peering.targets.values()), 0.5)
    finally:
        await a.stop()
        await b.stop()


async def test_a_slow_cmb_handler_does_not_stall_the_session(tmp_path: Path) -> None:
    import asyncio

    release = asyncio.Event()
    seen: list[str] = []

    async def slow_on_cmb(cmb, peer) -> None:
        seen.append(cmb.key)
        await release.wait()

    node, inbox = make_node(tmp_path, "host", discovery=[], ping_interval=0.2, heartbeat_timeout=0.6)
    node.on_cmb = slow_on_cmb
    await node.start()
    bob = NodeIdentity.generate("bob")
    raw = await RawPeer(bob).connect(node.port)
    try:
        await raw.handshake()
        first, second = note(bob, "team", "one"), note(bob, "team", "two")
        await raw.send_cmb(first)
        await raw.send_cmb(second)
        assert await poll(lambda: seen == [first.key])
        # The handler is stuck, yet pings are answered and the next block is already stored.
        await raw.send({"type": "ping"})
        while (frame := await raw.recv(2.0)) is not None and frame["type"] != "pong":
            pass
        assert frame is not None and node.store.has(second.key)
        release.set()
        assert await poll(lambda: seen == [first.key, second.key])
    finally:
        release.set()
        await raw.close()
        await node.stop()


async def test_connections_that_never_handshake_are_capped(tmp_path: Path) -> None:
    node, _ = make_node(tmp_path, "host", discovery=[], max_pending_handshakes=3, handshake_timeout=5.0)
    await node.start()
    idle = [await RawPeer(NodeIdentity.generate(f"idle{i}")).connect(node.port) for i in range(3)]
    try:
        for raw in idle:
            assert (await raw.recv())["type"] == "handshake"
        extra = await RawPeer(NodeIdentity.generate("extra")).connect(node.port)
        frames, closed = await extra.frames_until_closed(2.0)
        assert closed and frames == []
        await extra.close()
        await idle[0].close()
        assert await poll(lambda: node._quota.pending == 2)
        late = await RawPeer(NodeIdentity.generate("late")).connect(node.port)
        await late.handshake()
        assert await node.wait_for_peers(1, 2.0)
        await late.close()
    finally:
        for raw in idle:
            await raw.close()
        await node.stop()
