"""The durable-wake invariants with real parts: one wake per CMB however often it arrives, exactly one
emission after a worker is SIGKILLed mid model call, and nothing lost while Temporal is down.

The last two run `xmesh-agent run` and `temporal server start-dev` as child processes, so the test can
kill the one and stop and restart the other (same SQLite file, same port).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError

from tests.fakes.model_servers import FakeOpenAIServer, Reply
from tests.integration.envelope_kit import (
    Observer,
    activity_attempts,
    group_name,
    history_events,
    openai_config,
    trigger,
)
from tests.integration.peer_kit import all_wakes, eventually, peer_config, start_peer
from tests.integration.process_kit import DevServerProcess, PeerProcess, child_env
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.wake.ledger import WakeLedger
from xmesh_agent.wake.payloads import Outcome
from xmesh_agent.workers.client import XMESH_PLUGIN, wake_id
from xmesh_agent.workflows.wake import WakeWorkflow

REPLY = {
    "focus": "token bucket for the billing API rate limiter, reviewed",
    "issue": "burst of 20 is too high",
}


async def test_one_cmb_delivered_fifty_times_wakes_once(temporal_env, tmp_path):
    client = temporal_env.client
    group = group_name()
    peer = await start_peer(client, peer_config("dup-p", "reviewer", group))
    senders = [await Observer(tmp_path, group, name=f"sender-{i}").start() for i in range(3)]
    try:
        await eventually(lambda: len(peer.node.peers()) == 3 and all(s.node.peers() for s in senders))
        cmb = trigger(senders[0].identity, group, 0)
        for s in senders[1:]:  # the other senders hold it too, so they can re-send it
            s.store.put(cmb, source="sender-0")
        # over the wire: 50 times from three nodes at once
        sent = await asyncio.gather(*[senders[i % 3].node.publish(cmb) for i in range(50)])
        assert all(n >= 1 for n in sent)
        await eventually(lambda: peer.store.has(cmb.key))
        # then, racing 30 more wire copies: 50 times into the listener and 10 starts straight to Temporal
        storm = [senders[i % 3].node.publish(cmb) for i in range(30)]
        storm += [peer.starter.on_cmb(cmb) for _ in range(50)]
        storm += [peer.starter.start_wake(cmb.key) for _ in range(10)]
        results = await asyncio.gather(*storm, return_exceptions=True)
        # a direct start after the wake closed is refused by the reuse policy: that is the point
        assert not [r for r in results if isinstance(r, BaseException) and not already(r)]
        wid = wake_id("dup-p", cmb.key)
        result = await client.get_workflow_handle_for(WakeWorkflow.run, wid).result()
        assert result.outcome == Outcome.EMITTED
        await eventually(lambda: result.emitted_key in senders[0].keys)
        await peer.starter.drain_once()
        assert [w.id for w in await all_wakes(client, f"XmGroup = '{group}'")] == [wid]
        assert [c.key for c in senders[0].from_author("dup-p")] == [result.emitted_key]
        assert peer.ledger.counts() == {"pending": 0, "woken": 1, "emissions": 1}
    finally:
        for s in senders:
            await s.stop()
        await peer.stop()


def already(exc: BaseException) -> bool:
    return isinstance(exc, WorkflowAlreadyStartedError)


async def test_spooled_cmb_whose_wake_already_ran_is_marked_woken(temporal_env):
    """A crash between starting a wake and recording it leaves the CMB spooled; the listener must not choke."""
    client = temporal_env.client
    group = group_name()
    peer = await start_peer(client, peer_config("crash-p", "reviewer", group))
    try:
        cmb = trigger(NodeIdentity.generate("author-c"), group, 0)
        peer.store.put(cmb, source="author-c")
        handle = await peer.starter.start_wake(cmb.key)  # started, but never recorded in the ledger
        assert (await handle.result()).outcome == Outcome.EMITTED
        assert peer.ledger.enqueue(cmb.key, "author-c")  # as after a restart: still in the spool
        assert await peer.starter.drain_once() is True
        assert peer.ledger.pending() == [] and peer.ledger.was_woken(cmb.key)
        assert [w.id for w in await all_wakes(client, f"XmGroup = '{group}'")] == [handle.id]
        # and the listener keeps going: the next CMB still wakes the peer
        nxt = trigger(NodeIdentity.generate("author-c"), group, 1)
        peer.store.put(nxt, source="author-c")
        await peer.starter.on_cmb(nxt)
        await eventually(lambda: peer.ledger.was_woken(nxt.key))
    finally:
        await peer.stop()


def _dirs(tmp_path: Path) -> tuple[Path, Path]:
    return Path(os.environ["XMESH_HOME"]), Path(os.environ["XMESH_SYM_LOOPBACK_DIR"])


async def _client(address: str) -> Client:
    async def connect() -> Client | None:
        try:
            return await Client.connect(address, plugins=[XMESH_PLUGIN])
        except RuntimeError:
            return None

    return await eventually(connect, timeout=30, interval=0.5)


@pytest.mark.slow
async def test_worker_killed_mid_model_call_resumes_and_emits_once(tmp_path):
    home, loopback = _dirs(tmp_path)
    server = DevServerProcess(tmp_path).start()
    group = group_name()
    with FakeOpenAIServer() as fake:
        answer = fake.tool_call(REPLY)
        fake.script(Reply(status=200, body=answer.body, delay=120), answer)  # the first call hangs
        cfg = openai_config("kill-p", group, fake.base_url)
        peer = PeerProcess(cfg, tmp_path, child_env(home, loopback, server.address)).start()
        observer = await Observer(tmp_path, group).start()
        try:
            client = await _client(server.address)
            await eventually(lambda: [p.name for p in observer.node.peers()] == ["kill-p"], timeout=30)
            cmb = trigger(observer.identity, group, 0)
            assert await observer.node.publish(cmb) == 1
            await asyncio.to_thread(fake.wait_for_requests, 1, 30)
            peer.kill()  # mid model call: the HTTP request is open, nothing was answered
            handle = client.get_workflow_handle_for(WakeWorkflow.run, wake_id("kill-p", cmb.key))
            pending = (await handle.describe()).raw_description.pending_activities
            assert [a.activity_type.name for a in pending] == ["call_model"]
            peer.start()
            result = await asyncio.wait_for(handle.result(), 45)
            assert result.outcome == Outcome.EMITTED and result.emitted_key
            assert len(fake.requests) == 2
            [started] = activity_attempts(await history_events(handle), "call_model")
            attrs = started.activity_task_started_event_attributes
            assert attrs.attempt == 2 and "Heartbeat" in attrs.last_failure.message.title()
            await eventually(lambda: result.emitted_key in observer.keys, timeout=15)
            assert peer.stop() == 0
            assert [c.key for c in observer.from_author("kill-p")] == [result.emitted_key]
        finally:
            peer.stop()
            await observer.stop()
            server.stop()


@pytest.mark.slow
async def test_cmb_received_while_temporal_is_down_is_spooled_then_woken(tmp_path):
    home, loopback = _dirs(tmp_path)
    server = DevServerProcess(tmp_path).start()
    group = group_name()
    cfg = peer_config("spool-p", "reviewer", group)
    peer = PeerProcess(cfg, tmp_path, child_env(home, loopback, server.address)).start()
    observer = await Observer(tmp_path, group).start()
    ledger = WakeLedger(peer.home / "wakes.db")
    try:
        await eventually(lambda: [p.name for p in observer.node.peers()] == ["spool-p"], timeout=30)
        server.stop()
        cmb = trigger(observer.identity, group, 0)
        assert await observer.node.publish(cmb) == 1
        await eventually(lambda: ledger.pending() == [(cmb.key, observer.identity.name)], timeout=15)
        assert not ledger.was_woken(cmb.key)
        server.start()  # same --db-filename, same port
        client = await _client(server.address)
        await eventually(lambda: ledger.was_woken(cmb.key), timeout=30)
        handle = client.get_workflow_handle_for(WakeWorkflow.run, wake_id("spool-p", cmb.key))
        result = await asyncio.wait_for(handle.result(), 30)
        assert result.outcome == Outcome.EMITTED
        assert ledger.pending() == []
        await eventually(lambda: result.emitted_key in observer.keys, timeout=15)
        assert peer.stop() == 0
        assert [c.key for c in observer.from_author("spool-p")] == [result.emitted_key]
    finally:
        ledger.close()
        peer.stop()
        await observer.stop()
        server.stop()
