"""DNS-SD discovery on the loopback interface only, and its best-effort failure mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.node_testkit import make_node, note


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
        if a._mdns is None or a._mdns.failed:
            pytest.skip(f"no multicast on loopback here: {a._mdns and a._mdns.failed}")
        assert await a.wait_for_peers(1, 5.0) and await b.wait_for_peers(1, 5.0)
        assert [p.name for p in a.peers()] == ["b"] and c.peers() == []
        assert await a.publish(note(a.identity, "team", "found you by mDNS")) == 1
        assert await inbox_b.wait(lambda: len(inbox_b.cmbs) == 1)
        assert all(t.source == "mdns" for t in (a._targets | b._targets).values())
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
        assert a._mdns is not None and a._mdns.failed
        assert await a.wait_for_peers(1, 5.0)  # the registry still works
    finally:
        await a.stop()
        await b.stop()
