"""One wake end to end: two real peers on loopback TCP, a real Temporal dev server, offline model."""

from __future__ import annotations

import uuid

from tests.integration.peer_kit import all_wakes, closed_wakes, eventually, peer_config, start_peer
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import mint
from xmesh_agent.workers.client import wake_id
from xmesh_agent.workflows.wake import WakeWorkflow


async def test_seed_wakes_both_peers_and_replies_flow_back(temporal_env):
    client = temporal_env.client
    group = f"t-{uuid.uuid4().hex[:8]}"
    writer = await start_peer(client, peer_config("writer-a", "writer", group))
    reviewer = await start_peer(client, peer_config("reviewer-a", "reviewer", group))
    try:
        await eventually(lambda: len(writer.node.peers()) == 1 and len(reviewer.node.peers()) == 1)
        seed = mint(
            {"focus": "rate limiter", "intent": "implement a token bucket per API key"},
            identity=writer.identity,
            group=group,
            created_at=1_760_000_000_000,
        )
        assert await writer.node.publish(seed) == 1

        query = f"XmGroup = '{group}'"

        async def quiet_with_emissions() -> bool:
            wakes = await all_wakes(client, query)
            closed = await closed_wakes(client, query)
            return len(wakes) >= 2 and len(closed) == len(wakes)

        await eventually(quiet_with_emissions, timeout=60)
        handle = client.get_workflow_handle_for(WakeWorkflow.run, wake_id("reviewer-a", seed.key))
        result = await handle.result()
        assert result.outcome == "emitted"
        reply = reviewer.store.get(result.emitted_key)
        assert reply is not None and reply.parents == [seed.key]
        assert reply.created_by == "reviewer-a" and reply.sig
        # the reply reached the writer, which woke on it
        await eventually(lambda: writer.store.has(result.emitted_key))
        writer_wake = await client.get_workflow_handle_for(
            WakeWorkflow.run, wake_id("writer-a", result.emitted_key)
        ).result()
        assert writer_wake.outcome in ("emitted", "suppressed-cycle", "rejected")
        desc = await handle.describe()
        attrs = {k: v for k, v in desc.search_attributes.items()}
        assert attrs["XmPeer"] == ["reviewer-a"] and attrs["XmOutcome"] == ["emitted"]
        assert attrs["XmTrigger"] == ["writer-a"]
    finally:
        await writer.stop()
        await reviewer.stop()


async def test_same_cmb_delivered_twice_wakes_once(temporal_env):
    client = temporal_env.client
    group = f"t-{uuid.uuid4().hex[:8]}"
    peer = await start_peer(client, peer_config("solo-b", "reviewer", group))
    try:
        author = NodeIdentity.generate("author-b")
        cmb = mint({"focus": "dup check"}, identity=author, group=group, created_at=1_760_000_000_000)
        peer.store.put(cmb, source="author-b")
        await peer.starter.on_cmb(cmb)
        await peer.starter.on_cmb(cmb)
        await peer.starter.drain_once()
        # and a third time straight to Temporal, bypassing the ledger: USE_EXISTING keeps one run
        first = await peer.starter.start_wake(cmb.key)
        second = await peer.starter.start_wake(cmb.key)
        assert first.id == second.id == wake_id("solo-b", cmb.key)
        await client.get_workflow_handle(first.id).result()
        wakes = await all_wakes(client, f"XmGroup = '{group}'")
        assert [w.id for w in wakes] == [wake_id("solo-b", cmb.key)]
    finally:
        await peer.stop()


async def test_cmb_stored_but_never_spooled_is_woken_on_start(temporal_env):
    """A crash between the node storing a CMB and the listener spooling it must not lose the wake."""
    from xmesh_agent.workers.peer import Peer

    client = temporal_env.client
    group = f"t-{uuid.uuid4().hex[:8]}"
    peer = Peer(peer_config("solo-c", "reviewer", group), client)
    author = NodeIdentity.generate("author-c")
    cmb = mint(
        {"focus": "stored before the crash"}, identity=author, group=group, created_at=1_760_000_000_000
    )
    assert peer.store.put(cmb, source="author-c")
    assert peer.ledger.pending() == []
    await peer.start()
    try:
        handle = client.get_workflow_handle_for(WakeWorkflow.run, wake_id("solo-c", cmb.key))
        await eventually(lambda: peer.ledger.was_woken(cmb.key))
        assert (await handle.result()).outcome
        assert peer.starter.reconcile() == 0  # already woken: nothing spooled twice
    finally:
        await peer.stop()
