"""Two real nodes on 127.0.0.1 meeting through the same-host registry and exchanging signed CMBs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.node_testkit import make_node, note, ordered_identities, poll
from xmesh_agent.clock import now_ms


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XMESH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XMESH_SYM_LOOPBACK_DIR", str(tmp_path / "loopback"))


async def test_two_nodes_meet_via_registry_and_exchange_signed_cmbs(tmp_path: Path) -> None:
    a, inbox_a = make_node(tmp_path, "alice")
    b, inbox_b = make_node(tmp_path, "bob")
    await a.start()
    await b.start()
    try:
        assert await a.wait_for_peers(1, 5.0)
        assert await b.wait_for_peers(1, 5.0)
        [pa] = a.peers()
        assert pa.name == "bob" and pa.transport == "tcp" and pa.group == "team"
        assert pa.public_key == b.identity.public_key and pa.version == "1.1.0"
        assert pa.node_id == b.identity.node_id

        cmb = note(a.identity, "team", "rate limiting on login")
        assert await a.publish(cmb) == 1
        assert a.store.source_of(cmb.key) == "own"
        assert await inbox_b.wait(lambda: len(inbox_b.cmbs) == 1)
        got, via = inbox_b.cmbs[0]
        assert got.key == cmb.key and via.name == "alice"
        assert b.store.source_of(cmb.key) == "alice"

        # The same block again (duplicate delivery) surfaces nothing new; a reply flows back.
        assert await a.publish(cmb) == 1
        reply = note(b.identity, "team", "agreed, lockout after 5")
        assert await b.publish(reply) == 1
        assert await inbox_a.wait(lambda: len(inbox_a.cmbs) == 1)
        assert len(inbox_b.cmbs) == 1
        assert not [e for e in inbox_a.events + inbox_b.events if e[0] == "cmb-rejected"]
        assert "peer-connected" in [e[0] for e in inbox_a.events]
    finally:
        await a.stop()
        await b.stop()
    assert not list((tmp_path / "loopback").glob("*.json"))


async def test_directed_publish_reaches_only_the_addressee(tmp_path: Path) -> None:
    ids = ordered_identities("ann", "ben", "cat")
    nodes = [make_node(tmp_path, i.name, identity=i) for i in ids]
    for node, _ in nodes:
        await node.start()
    try:
        for node, _ in nodes:
            assert await node.wait_for_peers(2, 5.0)
        (ann, _), (_, ben_in), (_, cat_in) = nodes
        to_ben = note(ann.identity, "team", "for ben only", to="ben")
        assert await ann.publish(to_ben) == 1
        to_cat = note(ann.identity, "team", "for cat by id", to=ids[2].node_id)
        assert await ann.publish(to_cat) == 1
        assert await ben_in.wait(lambda: len(ben_in.cmbs) == 1)
        assert await cat_in.wait(lambda: len(cat_in.cmbs) == 1)
        assert ben_in.cmbs[0][0].key == to_ben.key and cat_in.cmbs[0][0].key == to_cat.key
        # Broadcast goes to both; nobody got the other's directed block.
        assert await ann.publish(note(ann.identity, "team", "everyone")) == 2
        assert await ben_in.wait(lambda: len(ben_in.cmbs) == 2)
        assert await cat_in.wait(lambda: len(cat_in.cmbs) == 2)
        assert {c.key for c, _ in ben_in.cmbs}.isdisjoint({to_cat.key})
    finally:
        for node, _ in nodes:
            await node.stop()


async def test_reconnects_when_the_accepting_side_restarts_on_a_new_port(tmp_path: Path) -> None:
    low, high = ordered_identities("low", "high")
    a, inbox_a = make_node(tmp_path, "low", identity=low)
    b, _ = make_node(tmp_path, "high", identity=high)
    await a.start()
    await b.start()
    try:
        assert await a.wait_for_peers(1, 5.0)
        await b.stop()
        assert await inbox_a.wait(lambda: len(inbox_a.named("peer-disconnected")) == 1)
        assert a.peers() == []
        b, inbox_b = make_node(tmp_path, "high", identity=high, store_name="high2")
        await b.start()
        assert await a.wait_for_peers(1, 5.0)
        assert await b.wait_for_peers(1, 5.0)
        cmb = note(low, "team", "after restart")
        assert await a.publish(cmb) == 1
        assert await inbox_b.wait(lambda: len(inbox_b.cmbs) == 1)
    finally:
        await a.stop()
        await b.stop()


async def test_static_peer_is_redialed_after_it_restarts_on_the_same_port(tmp_path: Path) -> None:
    a, inbox_a = make_node(tmp_path, "dialer", discovery=[])
    b, _ = make_node(tmp_path, "listener", discovery=[])
    await b.start()
    port = b.port
    a.static_peers = [f"127.0.0.1:{port}"]
    await a.start()
    try:
        assert await a.wait_for_peers(1, 5.0)
        await b.stop()
        assert await inbox_a.wait(lambda: len(inbox_a.named("peer-disconnected")) == 1)
        b, inbox_b = make_node(tmp_path, "listener", identity=b.identity, discovery=[], port=port)
        await b.start()
        assert await a.wait_for_peers(1, 5.0)
        assert await a.publish(note(a.identity, "team", "hello again")) == 1
        assert await inbox_b.wait(lambda: len(inbox_b.cmbs) == 1)
    finally:
        await a.stop()
        await b.stop()


async def test_simultaneous_static_dials_settle_on_one_connection(tmp_path: Path) -> None:
    a, inbox_a = make_node(tmp_path, "one", discovery=[])
    b, inbox_b = make_node(tmp_path, "two", discovery=[])
    await a.start()
    await b.start()
    a.static_peers, b.static_peers = [f"127.0.0.1:{b.port}"], [f"127.0.0.1:{a.port}"]
    a._peering.add_static_peer(a.static_peers[0])
    b._peering.add_static_peer(b.static_peers[0])
    try:
        assert await a.wait_for_peers(1, 5.0) and await b.wait_for_peers(1, 5.0)
        cmb = note(a.identity, "team", "exactly once")
        assert await a.publish(cmb) == 1
        assert await inbox_b.wait(lambda: len(inbox_b.cmbs) == 1)
        assert len(inbox_a.named("peer-connected")) == 1
    finally:
        await a.stop()
        await b.stop()


async def test_wait_for_peers_times_out_and_registry_skips_foreign_entries(tmp_path: Path) -> None:
    import json

    loop_dir = tmp_path / "loopback"
    loop_dir.mkdir()
    now = now_ms()
    # A foreign room, a stale entry, a dead pid and garbage: none of them may be dialed.
    (loop_dir / "f1.json").write_text(
        json.dumps(
            {"nodeId": "ffff-1", "name": "x", "port": 1, "pid": 1, "serviceType": "_other._tcp", "ts": now}
        )
    )
    (loop_dir / "f2.json").write_text(
        json.dumps(
            {"nodeId": "ffff-2", "name": "x", "port": 1, "serviceType": "_team._tcp", "ts": now - 600_000}
        )
    )
    (loop_dir / "f3.json").write_text(
        json.dumps(
            {
                "nodeId": "ffff-3",
                "name": "x",
                "port": 1,
                "pid": 2**22 + 12345,
                "serviceType": "_team._tcp",
                "ts": now,
            }
        )
    )
    (loop_dir / "f4.json").write_text("{not json")
    a, _ = make_node(tmp_path, "lonely")
    await a.start()
    try:
        assert not await a.wait_for_peers(1, 0.5)
        assert a._peering.registry is not None and a._peering.registry.scan() == []
        assert not (loop_dir / "f3.json").exists()  # dead process entries are collected
        entry = json.loads((loop_dir / f"{a.identity.node_id}.json").read_text())
        assert entry["serviceType"] == "_team._tcp" and entry["port"] == a.port and entry["name"] == "lonely"
        assert await poll(lambda: not a._peering.targets, 0.1)
    finally:
        await a.stop()


async def test_a_peer_that_drops_us_right_after_the_handshake_is_redialed_with_backoff(
    tmp_path: Path,
) -> None:
    import asyncio

    from xmesh_agent.identity import NodeIdentity
    from xmesh_agent.mmp import framing
    from xmesh_agent.mmp.handshake import build_handshake

    rude = NodeIdentity.generate("rude")
    accepted = 0

    async def handshake_then_hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        writer.write(framing.encode_frame(build_handshake(rude, "team")))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handshake_then_hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    a, _ = make_node(tmp_path, "patient", discovery=[], static_peers=[f"127.0.0.1:{port}"])
    await a.start()
    try:
        assert await poll(lambda: accepted >= 3, 3.0)
        before = accepted
        await asyncio.sleep(1.0)  # measuring a rate: the interval itself is the point here
        assert accepted - before <= 8, accepted - before  # reconnect_max 0.3 s: at most ~1 per 0.15 s
    finally:
        await a.stop()
        server.close()
        await server.wait_closed()
