"""DNS-SD discovery on the loopback interface only, and its best-effort failure mode."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from tests.unit.node_testkit import make_node, note, ordered_identities, poll
from xmesh_agent.config import LoggingConfig
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.logs import PeerLog
from xmesh_agent.mmp import framing
from xmesh_agent.mmp.discovery.mdns import (
    SERVICE_TYPE,
    MdnsDiscovery,
    instance_label,
    room_service_type,
    room_type_problem,
)
from xmesh_agent.mmp.node import MeshNode


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XMESH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XMESH_SYM_LOOPBACK_DIR", str(tmp_path / "loopback"))


async def test_nodes_find_each_other_over_mdns_on_loopback(tmp_path: Path) -> None:
    opts = dict(discovery=["mdns"], mdns_interfaces=["127.0.0.1"])
    a, _ = make_node(tmp_path, "a", **opts)
    b, inbox_b = make_node(tmp_path, "b", **opts)
    c, _ = make_node(tmp_path, "c", group="other", **opts)  # advertises too, but another group
    for node in (a, b, c):
        await node.start()
    try:
        if a._peering.mdns is None or a._peering.mdns.failed:
            pytest.skip(f"no multicast on loopback here: {a._peering.mdns and a._peering.mdns.failed}")
        assert await a.wait_for_peers(1, 5.0) and await b.wait_for_peers(1, 5.0)
        assert [p.name for p in a.peers()] == ["b"] and c.peers() == []
        assert await a.publish(note(a.identity, "team", "found you by mDNS")) == 1
        assert await inbox_b.wait(lambda: len(inbox_b.cmbs) == 1)
        assert all(t.source == "mdns" for t in (a._peering.targets | b._peering.targets).values())
    finally:
        for node in (a, b, c):
            await node.stop()


async def test_mdns_failure_is_logged_not_fatal(tmp_path: Path) -> None:
    # 192.0.2.123 (TEST-NET) is no interface of ours: zeroconf cannot bind it.
    a, _ = make_node(tmp_path, "a", discovery=["mdns", "registry"], mdns_interfaces=["192.0.2.123"])
    b, _ = make_node(tmp_path, "b")
    await a.start()
    await b.start()
    try:
        assert a._peering.mdns is not None and a._peering.mdns.failed
        assert await a.wait_for_peers(1, 5.0)  # the registry still works
    finally:
        await a.stop()
        await b.stop()


# -- the stock node's per-room service types (docs/interop.md, "Discovery") ----------------------


class HandshakeRecorder:
    """A tiny TCP listener standing in for a stock node: records the first frame of each connection."""

    def __init__(self) -> None:
        self.handshakes: list[dict[str, Any]] = []
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self) -> HandshakeRecorder:
        self.server = await asyncio.start_server(self._on_conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            self.handshakes.append(await asyncio.wait_for(framing.read_frame(reader), 2.0))
        writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


class RawZeroconf:
    """Registrations shaped by hand, as a stock node (or a foreign spec node) would publish them."""

    def __init__(self) -> None:
        self.zc = AsyncZeroconf(interfaces=["127.0.0.1"])
        self.infos: list[AsyncServiceInfo] = []

    async def register(self, service_type: str, node: NodeIdentity, port: int, **extra: str) -> None:
        txt = {"node-id": node.node_id, "node-name": node.name, "public-key": node.public_key_b64url}
        info = AsyncServiceInfo(
            service_type,
            f"{node.node_id}.{service_type}",
            addresses=[socket.inet_aton("127.0.0.1")],
            port=port,
            properties={**txt, "hostname": "stock-host", **extra},
            server=f"{node.node_id}.local.",
        )
        await self.zc.async_register_service(info)
        self.infos.append(info)

    async def close(self) -> None:
        for info in self.infos:
            with contextlib.suppress(Exception):
                await self.zc.async_unregister_service(info)
        await self.zc.async_close()


def _skip_without_multicast(node: MeshNode) -> None:
    if node._peering.mdns is None or node._peering.mdns.failed:
        pytest.skip(f"no multicast on loopback here: {node._peering.mdns and node._peering.mdns.failed}")


def test_room_service_type_rules() -> None:
    assert room_service_type("default") is None  # the stock default room IS _sym._tcp
    assert room_service_type("room-a") == "_room-a._tcp.local."
    assert room_service_type("a" * 15) == f"_{'a' * 15}._tcp.local."
    for bad in ("a" * 16, "team.ops", "team_ops", "a--b", "-ab", "ab-", "123"):
        assert room_service_type(bad) is None and room_type_problem(bad), bad
    assert instance_label("0190f1e2-aaaa-7bbb-8ccc-123456789abc") == "0190f1e2-aaaa-7bbb-8ccc-123456789abc"
    assert instance_label("has.dots and spaces").startswith("xm-")


async def test_room_peers_meet_and_stock_sees_stock_txt(tmp_path: Path) -> None:
    opts = dict(discovery=["mdns"], mdns_interfaces=["127.0.0.1"])
    a, _ = make_node(tmp_path, "a", group="room-a", **opts)
    b, inbox_b = make_node(tmp_path, "b", group="room-a", **opts)
    zc = AsyncZeroconf(interfaces=["127.0.0.1"])
    for node in (a, b):
        await node.start()
    try:
        _skip_without_multicast(a)
        assert await a.wait_for_peers(1, 5.0) and await b.wait_for_peers(1, 5.0)
        assert await a.publish(note(a.identity, "room-a", "found you in the room")) == 1
        assert await inbox_b.wait(lambda: len(inbox_b.cmbs) == 1)
        # A stock node in room-a browses _room-a._tcp and reads exactly its own TXT keys there.
        room_info = AsyncServiceInfo("_room-a._tcp.local.", f"{a.identity.node_id}._room-a._tcp.local.")
        assert await room_info.async_request(zc.zeroconf, 3000)
        props = {k.decode(): (v or b"").decode() for k, v in room_info.properties.items()}
        assert set(props) == {"node-id", "node-name", "public-key", "hostname"}
        assert props["node-id"] == a.identity.node_id and props["node-name"] == "a"
        assert room_info.port == a.port
        spec_info = AsyncServiceInfo(SERVICE_TYPE, f"{a.identity.node_id}.{SERVICE_TYPE}")
        assert await spec_info.async_request(zc.zeroconf, 3000)
        assert spec_info.properties[b"group"] == b"room-a"
    finally:
        await zc.async_close()
        for node in (a, b):
            await node.stop()


async def test_node_seen_under_both_types_is_reported_once(tmp_path: Path) -> None:
    me, peer = ordered_identities("me", "peer")
    found: list[tuple[str, str, int]] = []
    mine = MdnsDiscovery(
        me, "room-a", 1111, lambda *f: found.append(f[1:2] + f[3:]), interfaces=["127.0.0.1"]
    )
    theirs = MdnsDiscovery(peer, "room-a", 2222, lambda *f: None, interfaces=["127.0.0.1"])
    await mine.start()
    await theirs.start()
    try:
        if mine.failed:
            pytest.skip(f"no multicast on loopback here: {mine.failed}")
        both = {SERVICE_TYPE, "_room-a._tcp.local."}
        assert await poll(lambda: mine.found_under.get(peer.node_id) == both, 6.0)
        assert found == [(peer.node_id, "127.0.0.1", 2222)]
    finally:
        await mine.stop()
        await theirs.stop()


async def test_stock_shaped_room_registration_is_dialed(tmp_path: Path) -> None:
    me, stock = ordered_identities("me", "stock")  # our nodeId is the smaller: we dial (§5.1)
    listener = await HandshakeRecorder().start()
    raw = RawZeroconf()
    a, _ = make_node(
        tmp_path, "me", group="room-a", identity=me, discovery=["mdns"], mdns_interfaces=["127.0.0.1"]
    )
    await a.start()
    try:
        _skip_without_multicast(a)
        await raw.register("_room-a._tcp.local.", stock, listener.port)  # stock TXT keys, no group
        assert await poll(lambda: bool(listener.handshakes), 6.0)
        hs = listener.handshakes[0]
        assert hs["type"] == "handshake" and hs["nodeId"] == me.node_id
        assert hs["room"] == "room-a" and hs["group"] == "room-a"
        target = a._peering.targets[f"peer:{stock.node_id}"]
        assert target.source == "mdns" and target.port == listener.port
    finally:
        await a.stop()
        await raw.close()
        await listener.stop()


async def test_stock_shaped_registrations_of_other_rooms_are_not_dialed(tmp_path: Path) -> None:
    me, same, other_room, default_room, spec_other = ordered_identities("me", "same", "other", "dflt", "spec")
    listeners = {n: await HandshakeRecorder().start() for n in ("same", "other", "dflt", "spec")}
    raw = RawZeroconf()
    a, _ = make_node(
        tmp_path, "me", group="room-a", identity=me, discovery=["mdns"], mdns_interfaces=["127.0.0.1"]
    )
    await a.start()
    try:
        _skip_without_multicast(a)
        await asyncio.gather(
            raw.register("_room-a._tcp.local.", same, listeners["same"].port),  # control: our room
            raw.register(
                "_room-b._tcp.local.", other_room, listeners["other"].port
            ),  # a stock node in room-b
            raw.register(SERVICE_TYPE, default_room, listeners["dflt"].port),  # stock, default room
            raw.register(SERVICE_TYPE, spec_other, listeners["spec"].port, group="room-b"),  # a spec node
            raw.register("_room-a._tcp.local.", spec_other, listeners["spec"].port, group="room-b"),
        )
        assert await poll(lambda: bool(listeners["same"].handshakes), 6.0)
        # Both _sym._tcp instances were resolved and dropped for their group, not merely unseen.
        assert await poll(
            lambda: {default_room.node_id, spec_other.node_id} <= set(a._peering.mdns.ignored), 6.0
        )
        assert "'default'" in a._peering.mdns.ignored[default_room.node_id]
        assert "'room-b'" in a._peering.mdns.ignored[spec_other.node_id]
        assert [n for n, lst in listeners.items() if lst.handshakes] == ["same"]
        assert set(a._peering.targets) == {f"peer:{same.node_id}"}
    finally:
        await a.stop()
        await raw.close()
        for listener in listeners.values():
            await listener.stop()


async def test_group_too_long_for_a_service_type_falls_back_to_spec_type(tmp_path: Path) -> None:
    group = "sixteen-chars-xy"
    assert len(group) == 16
    opts = dict(discovery=["mdns"], mdns_interfaces=["127.0.0.1"])
    a, inbox_a = make_node(tmp_path, "a", group=group, **opts)
    b, _ = make_node(tmp_path, "b", group=group, **opts)
    for node in (a, b):
        await node.start()
    try:
        _skip_without_multicast(a)
        warning = inbox_a.named("mdns-warning")
        assert warning and warning[0]["reason"] == "no-room-service-type"
        assert warning[0]["serviceType"] == "_sym._tcp" + ".local." and "15" in warning[0]["detail"]
        assert a._peering.mdns.service_types == [SERVICE_TYPE]
        assert await a.wait_for_peers(1, 5.0) and await b.wait_for_peers(1, 5.0)  # the spec type still works
        assert a._peering.mdns.found_under == {b.identity.node_id: {SERVICE_TYPE}}
    finally:
        for node in (a, b):
            await node.stop()


def test_mdns_warning_is_a_warning_in_the_peer_log(tmp_path: Path) -> None:
    log = PeerLog("p", tmp_path / "peer.log", LoggingConfig(level="warn"))
    log.node_event("mdns-warning", {"reason": "no-room-service-type", "group": "sixteen-chars-xy"})
    log.node_event("peer-connected", {"name": "b"})  # info: below the threshold
    log.close()
    records = [json.loads(line) for line in (tmp_path / "peer.log").read_text().splitlines()]
    assert [(r["evt"], r["level"]) for r in records] == [("mdns-warning", "warn")]
