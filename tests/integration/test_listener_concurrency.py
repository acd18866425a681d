"""The listener starts a backlog of spooled wakes a few at a time, and still marks each woken only after
its own start returned (real peer, real Temporal; only the start call is wrapped to observe or fail it)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio.service import RPCError, RPCStatusCode

from tests.integration.peer_kit import peer_config, start_peer
from xmesh_agent.clock import now_ms
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import mint
from xmesh_agent.workers import listener
from xmesh_agent.workers.peer import Peer


def spool(peer: Peer, n: int) -> list[str]:
    """n distinct CMBs stored and spooled, without kicking the listener loop."""
    author = NodeIdentity.generate("author-l")
    keys = []
    for i in range(n):
        cmb = mint(
            {"focus": f"backlog item {i}: {uuid.uuid4().hex[:6]}", "issue": f"case {i}"},
            identity=author,
            group=peer.config.group,
            created_at=now_ms() + i,
        )
        peer.store.put(cmb, source="author-l")
        assert peer.ledger.enqueue(cmb.key, "author-l")
        keys.append(cmb.key)
    return keys


class Observed:
    """Wraps the starter's start_wake and the ledger's mark_woken: concurrency and order of the two."""

    def __init__(self, peer: Peer, fail: set[str] | None = None) -> None:
        self.in_flight = self.most = 0
        self.returned: set[str] = set()
        self.early_marks: list[str] = []
        self.fail = fail or set()
        start, mark = peer.starter.start_wake, peer.ledger.mark_woken

        async def start_wake(cmb_key: str):
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            try:
                await asyncio.sleep(0)  # let the other starts of the batch begin
                if cmb_key in self.fail:
                    raise RPCError("temporal is away", RPCStatusCode.UNAVAILABLE, b"")
                handle = await start(cmb_key)
                self.returned.add(cmb_key)
                return handle
            finally:
                self.in_flight -= 1

        def mark_woken(cmb_key: str, workflow_id: str) -> None:
            if cmb_key not in self.returned:
                self.early_marks.append(cmb_key)
            mark(cmb_key, workflow_id)

        peer.starter.start_wake = start_wake  # type: ignore[method-assign]
        peer.ledger.mark_woken = mark_woken  # type: ignore[method-assign]


@pytest.fixture
async def idle_peer(temporal_env):
    """A peer whose listener loop is stopped, so the test drives drain_once itself."""
    group = f"t-{uuid.uuid4().hex[:8]}"
    peer = await start_peer(temporal_env.client, peer_config("lst-a", "reviewer", group))
    listener_task = peer._tasks[1]
    listener_task.cancel()
    try:
        yield peer
    finally:
        await peer.stop()


async def test_backlog_starts_concurrently_but_marks_each_after_its_start(idle_peer, monkeypatch):
    monkeypatch.setattr(listener, "DRAIN_BATCH", 5)  # 12 spooled: three batches in one drain
    keys = spool(idle_peer, 12)
    seen = Observed(idle_peer)
    assert await idle_peer.starter.drain_once() is True
    assert idle_peer.ledger.pending() == []
    assert all(idle_peer.ledger.was_woken(k) for k in keys)
    assert seen.returned == set(keys) and seen.early_marks == []
    assert 1 < seen.most <= listener.START_CONCURRENCY
    assert idle_peer.starter.started == 12


async def test_unreachable_start_keeps_its_key_spooled_and_the_rest_resume(idle_peer):
    keys = spool(idle_peer, 8)
    seen = Observed(idle_peer, fail={keys[2]})
    assert await idle_peer.starter.drain_once() is False
    pending = {k for k, _ in idle_peer.ledger.pending()}
    woken = {k for k in keys if idle_peer.ledger.was_woken(k)}
    assert keys[2] in pending and keys[2] not in woken
    assert woken == seen.returned and pending | woken == set(keys) and not pending & woken
    assert seen.early_marks == []
    seen.fail.clear()  # Temporal is back
    assert await idle_peer.starter.drain_once() is True
    assert idle_peer.ledger.pending() == [] and all(idle_peer.ledger.was_woken(k) for k in keys)
