"""Model retries belong to Temporal (issue #4): what the workflow history shows for 503, 401 and 429.

Temporal records only the last attempt of a retried activity: the ActivityTaskStarted event carries
its attempt number and the previous attempt's failure, and an intermediate failure never becomes an
ActivityTaskFailed event. So a retry shows as "started with attempt=2, last_failure=<the 503>", then
completed; a non-retryable failure shows as attempt=1, then ActivityTaskFailed.
"""

from __future__ import annotations

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError

from tests.fakes.model_servers import Reply
from tests.integration.envelope_kit import (
    activity_attempts,
    deliver,
    group_name,
    history_events,
    of_type,
    openai_config,
    result_of,
    trigger,
)
from tests.integration.peer_kit import start_peer
from xmesh_agent.clock import now_ms
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.wake.payloads import Outcome

REPLY = {
    "focus": "token bucket for the billing API rate limiter, reviewed",
    "issue": "burst of 20 is too high",
}


@pytest.fixture
def author() -> NodeIdentity:
    return NodeIdentity.generate("author-r")


async def test_a_503_is_retried_and_the_wake_ends_emitted(temporal_env, fake, author):
    group = group_name()
    fake.script(Reply.error(503, "overloaded"), fake.tool_call(REPLY))
    peer = await start_peer(temporal_env.client, openai_config("retry-p", group, fake.base_url))
    try:
        wid = await deliver(peer, trigger(author, group, 0))
        result = await result_of(temporal_env.client, wid)
        assert result.outcome == Outcome.EMITTED and result.emitted_key
        assert len(fake.requests) == 2
        events = await history_events(temporal_env.client.get_workflow_handle(wid))
        [started] = activity_attempts(events, "call_model")
        attrs = started.activity_task_started_event_attributes
        assert attrs.attempt == 2
        assert "HTTP 503" in attrs.last_failure.message
        assert attrs.last_failure.application_failure_info.type == "TransientModelError"
        assert len(of_type(events, EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)) == 1
        assert of_type(events, EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED) == []
        # one reply emitted; the failed attempt cost nothing, the successful one is charged once
        assert [c.key for c in peer.store.recent_by_author("retry-p", 5)] == [result.emitted_key]
        assert peer.safety.cost.totals(now_ms()).calls == 1
    finally:
        await peer.stop()


async def test_a_401_is_not_retried_and_the_wake_fails(temporal_env, fake, author):
    group = group_name()
    fake.script(Reply.error(401, "invalid api key"))
    peer = await start_peer(temporal_env.client, openai_config("auth-p", group, fake.base_url))
    try:
        wid = await deliver(peer, trigger(author, group, 0))
        with pytest.raises(WorkflowFailureError) as failed:
            await result_of(temporal_env.client, wid)
        cause = failed.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == "ModelCallFailed"
        assert isinstance(cause.cause, ActivityError)
        inner = cause.cause.cause
        assert isinstance(inner, ApplicationError)
        assert inner.type == "PermanentModelError" and inner.non_retryable and "HTTP 401" in inner.message
        assert len(fake.requests) == 1
        handle = temporal_env.client.get_workflow_handle(wid)
        events = await history_events(handle)
        [started] = activity_attempts(events, "call_model")
        assert started.activity_task_started_event_attributes.attempt == 1
        [act_failed] = of_type(events, EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED)
        assert act_failed.activity_task_failed_event_attributes.failure.application_failure_info.non_retryable
        desc = await handle.describe()
        assert desc.search_attributes["XmOutcome"] == ["failed"]
    finally:
        await peer.stop()


async def test_a_429_with_retry_after_waits_that_long(temporal_env, fake, author):
    group = group_name()
    fake.script(Reply.error(429, "rate limit reached", retry_after="3"), fake.tool_call(REPLY))
    peer = await start_peer(temporal_env.client, openai_config("rl-p", group, fake.base_url))
    try:
        wid = await deliver(peer, trigger(author, group, 0))
        result = await result_of(temporal_env.client, wid)
        assert result.outcome == Outcome.EMITTED
        events = await history_events(temporal_env.client.get_workflow_handle(wid))
        [started] = activity_attempts(events, "call_model")
        attrs = started.activity_task_started_event_attributes
        assert attrs.attempt == 2
        info = attrs.last_failure.application_failure_info
        assert info.type == "TransientModelError" and info.next_retry_delay.ToSeconds() == 3
        [scheduled] = [
            e
            for e in of_type(events, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
            if e.activity_task_scheduled_event_attributes.activity_type.name == "call_model"
        ]
        # the policy alone would retry after 1 s; the second attempt started >= 3 s after scheduling
        waited = started.event_time.ToDatetime() - scheduled.event_time.ToDatetime()
        assert waited.total_seconds() >= 3.0
    finally:
        await peer.stop()


# A key the server echoes in part, as OpenAI does; its visible pieces use letters no hex id contains.
KEY = "sk-proj-Qr7u" + "N" * 40 + "Wm3z"
ECHOED = (
    "Incorrect API key provided: sk-proj-Qr7u********************Wm3z. "
    "You can find your API key at https://platform.openai.com/account/api-keys."
)


async def test_a_key_echoed_in_part_reaches_neither_history_nor_stderr(
    temporal_env, fake, author, capfd, caplog
):
    # issue 22: only exact matches of the configured key were masked; a partial echo went through
    group = group_name()
    fake.script(Reply.error(401, ECHOED))
    config = openai_config("echo-p", group, fake.base_url, model={"api_key": KEY})
    peer = await start_peer(temporal_env.client, config)
    try:
        wid = await deliver(peer, trigger(author, group, 0))
        with pytest.raises(WorkflowFailureError) as failed:
            await result_of(temporal_env.client, wid)
        history = (await temporal_env.client.get_workflow_handle(wid).fetch_history()).to_json()
    finally:
        await peer.stop()
    inner = failed.value.cause.cause.cause
    assert "HTTP 401" in inner.message and "Incorrect API key provided: sk-" in inner.message
    said = history + str(failed.value) + capfd.readouterr().err + caplog.text
    assert "HTTP 401" in history
    for piece in ("Qr7u", "Wm3z", KEY):
        assert piece not in said, piece
