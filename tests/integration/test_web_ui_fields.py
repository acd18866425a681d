"""What the Temporal Web UI gets of a wake, read the way the UI reads it: the description (static summary,
search attributes for the XmPeer / XmOutcome columns), the call-model step's summary naming the model,
and the page's current details carrying the emitted reply (the `__temporal_workflow_metadata` query)."""

from __future__ import annotations

from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata

from tests.integration.envelope_kit import deliver, group_name, history_events, of_type, result_of, trigger
from tests.integration.peer_kit import peer_config, start_peer
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.wake.payloads import Outcome
from xmesh_agent.workflows import search


async def test_an_emitted_wake_shows_peer_outcome_model_and_reply(temporal_env):
    client, group = temporal_env.client, group_name()
    author = NodeIdentity.generate("ui-author")
    peer = await start_peer(client, peer_config("ui-p", "reviewer", group))
    try:
        cmb = trigger(author, group, 0)
        wid = await deliver(peer, cmb)
        result = await result_of(client, wid)
        assert result.outcome == Outcome.EMITTED
        handle = client.get_workflow_handle(wid)

        desc = await handle.describe()
        assert await desc.static_summary() == f"ui-p <- ui-author: {cmb.text('focus')}"
        attrs = desc.typed_search_attributes
        assert attrs.get(search.PEER) == "ui-p" and attrs.get(search.OUTCOME) == "emitted"

        events = await history_events(handle)
        summaries = [
            e.user_metadata.summary.data.decode().strip('"')
            for e in of_type(events, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
            if e.activity_task_scheduled_event_attributes.activity_type.name == "call_model"
        ]
        assert summaries == ["call model offline/offline-echo"]

        meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        details = meta.current_details
        assert details.startswith("**emitted**") and f"emitted `{result.emitted_key}`" in details
        reply = peer.store.get(result.emitted_key)
        assert reply is not None and "**The reply it emitted:**" in details
        assert reply.text("focus") == "neutral" and "**focus**" not in details  # a reviewer answers on issue
        assert f"- **issue**: {reply.text('issue')}\n" in details
        assert f"- **perspective**: {reply.text('perspective')}\n" in details
    finally:
        await peer.stop()
