"""A wake started by the current code: fewer stage upserts, the same visible stages, and a clean replay."""

from __future__ import annotations

import uuid

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from tests.integration.peer_kit import eventually, peer_config, start_peer
from xmesh_agent.clock import now_ms
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import mint
from xmesh_agent.workers.client import wake_id
from xmesh_agent.workers.replay import check_history
from xmesh_agent.workflows import search
from xmesh_agent.workflows.wake import LEAN_STAGES_PATCH, WakeWorkflow


async def _stage_upserts(client: Client, workflow_id: str) -> list[dict]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    upserts = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
            upserts.append({k: v.data.decode() for k, v in fields.items()})
    return upserts


async def _closed(client, wid: str):  # noqa: ANN001, ANN202 - a temporalio Client; its handle
    """The wake's handle once it has closed (it may not have started yet)."""
    handle = client.get_workflow_handle_for(WakeWorkflow.run, wid)

    async def done():
        try:
            return (await handle.describe()).close_time is not None
        except Exception:  # noqa: BLE001 - not started yet
            return False

    await eventually(done, timeout=30)
    return handle


async def test_new_wake_upserts_only_the_stages_anyone_can_see(temporal_env) -> None:
    client = temporal_env.client
    group = f"t-{uuid.uuid4().hex[:8]}"
    peer = await start_peer(client, peer_config("lean-a", "reviewer", group))
    try:
        author = NodeIdentity.generate("author-x")
        cmb = mint(
            {"focus": "rename the wake ledger table", "issue": "old name is misleading"},
            identity=author,
            group=group,
            created_at=now_ms(),
        )
        peer.store.put(cmb, source="author-x")
        await peer.starter.on_cmb(cmb)
        wid = wake_id("lean-a", cmb.key)
        handle = await _closed(client, wid)
        result = await handle.result()
        assert result.outcome == "emitted" and peer.store.has(result.emitted_key)

        upserts = await _stage_upserts(client, wid)
        stages = [u[search.STAGE.name] for u in upserts if search.STAGE.name in u]
        assert stages == ['"model"', '"done"']
        assert upserts[0] == {"TemporalChangeVersion": f'["{LEAN_STAGES_PATCH}"]'}
        desc = await handle.describe()
        assert desc.typed_search_attributes.get(search.STAGE) == "done"
        assert desc.typed_search_attributes.get(search.OUTCOME) == "emitted"
        assert (await desc.memo())["result"]["outcome"] == "emitted"

        report = await check_history(await handle.fetch_history())
        assert report.ok, report.message
    finally:
        await peer.stop()


async def test_rejected_at_arrival_is_one_workflow_task_shown_in_the_web_ui(temporal_env) -> None:
    """The listener decides SVAF at start: a rejected trigger's wake records it and returns, with its
    outcome in search attributes, memo and details from the start; no activity, marker or upsert."""
    client = temporal_env.client
    group = f"t-{uuid.uuid4().hex[:8]}"
    peer = await start_peer(client, peer_config("lean-r", "reviewer", group))
    try:
        author, other = NodeIdentity.generate("author-x"), NodeIdentity.generate("author-y")
        now = now_ms()
        held = mint({"focus": "tidy the docs index"}, identity=author, group=group, created_at=now)
        peer.store.put(held, source="author-x")
        repeat = mint(held.texts(), identity=other, group=group, created_at=now + 5, parents=[held])
        peer.store.put(repeat, source="author-y")
        await peer.starter.on_cmb(repeat)
        wid = wake_id("lean-r", repeat.key)
        handle = await _closed(client, wid)
        result = await handle.result()
        assert result.outcome == "rejected" and result.admission == "redundant"
        assert "SVAF redundant" in result.reason

        history = await handle.fetch_history()
        kinds = [e.event_type for e in history.events]
        assert kinds == [
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,
            EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
            EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
            EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
        ]
        desc = await handle.describe()
        assert desc.typed_search_attributes.get(search.OUTCOME) == "rejected"
        assert desc.typed_search_attributes.get(search.STAGE) == "done"
        assert (await desc.memo())["result"]["reason"] == result.reason
        assert "**rejected**" in (await desc.static_details() or "")
        assert await handle.query(WakeWorkflow.stage) == "done"
        report = await check_history(history)
        assert report.ok, report.message
    finally:
        await peer.stop()
