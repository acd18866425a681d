"""Two real nodes on 127.0.0.1 meeting through the same-host registry and exchanging signed CMBs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import CMB, mint
from xmesh_agent.mmp.connection import PeerInfo
from xmesh_agent.mmp.node import MeshNode
from xmesh_agent.mmp.store import CMBStore

FAST = dict(
    handshake_timeout=2.0,
    ping_interval=0.5,
    heartbeat_timeout=1.5,
    registry_interval=0.2,
    reconnect_min=0.05,
    reconnect_max=0.3,
    connect_timeout=2.0,
)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XMESH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XMESH_SYM_LOOPBACK_DIR", str(tmp_path / "loopback"))


class Inbox:
    def __init__(self) -> None:
        self.cmbs: list[tuple[CMB, PeerInfo]] = []
        self.events: list[tuple[str, dict]] = []
        self._changed = asyncio.Event()

    async def on_cmb(self, cmb: CMB, peer: PeerInfo) -> None:
        self.cmbs.append((cmb, peer))
        self._changed.set()

    def on_event(self, name: str, data: dict) -> None:
        self.events.append((name, data))
        self._changed.set()

    async def wait(self, predicate, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return predicate()
        return True


def make_node(tmp_path: Path, name: str, group: str = "team", identity: NodeIdentity | None = None, **kw):
    identity = identity or NodeIdentity.generate(name)
    inbox = Inbox()
    store = CMBStore(tmp_path / name / "store.sqlite")
    opts = {**FAST, **kw}
    node = MeshNode(identity, group, store, on_cmb=inbox.on_cmb, on_event=inbox.on_event, **opts)
    return node, inbox


def note(identity: NodeIdentity, group: str, text: str, to: str | None = None) -> CMB:
    return mint(
        {"focus": text, "intent": "share"},
        identity=identity,
        group=group,
        created_at=int(time.time() * 1000),
        to=to,
    )


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
