"""[model] fallback: a wake whose model is retired, out of quota, down or circuit-open answers with the next.

Each model of the chain is its own `call model` activity in the history (its own retries, its failure
kept), and the wake's result names the model that answered and why the ones before it did not.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from tests.fakes.model_servers import FakeAnthropicServer, Reply
from tests.integration.envelope_kit import (
    ONE_CALL_USD,
    deliver,
    group_name,
    history_events,
    of_type,
    openai_config,
    result_of,
    trigger,
)
from tests.integration.peer_kit import peer_config, start_peer
from xmesh_agent.clock import now_ms
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.wake.payloads import Outcome
from xmesh_agent.workers.control_cmds import HANDLERS
from xmesh_agent.workers.replay import check_history

REPLY = {"focus": "token bucket for the billing API rate limiter, reviewed", "issue": "burst too high"}
RETIRED = "gpt-4-0314"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture
def author() -> NodeIdentity:
    return NodeIdentity.generate("author-f")


def chain_config(name: str, group: str, base_url: str, fallback: list) -> object:
    return openai_config(name, group, base_url, model={"model_name": RETIRED, "fallback": fallback})


def call_model_summaries(events: list) -> list[str]:
    return [
        e.user_metadata.summary.data.decode().strip('"')
        for e in of_type(events, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
        if e.activity_task_scheduled_event_attributes.activity_type.name == "call_model"
    ]


async def test_a_retired_model_falls_back_and_the_result_names_the_answering_model(
    temporal_env, fake, author
):
    group = group_name()
    fake.script(Reply.error(404, f"The model `{RETIRED}` has been deprecated"), fake.tool_call(REPLY))
    peer = await start_peer(temporal_env.client, chain_config("fb-p", group, fake.base_url, ["gpt-4o-mini"]))
    try:
        wid = await deliver(peer, trigger(author, group, 0))
        result = await result_of(temporal_env.client, wid)
        assert result.outcome == Outcome.EMITTED and result.emitted_key
        assert result.model == "openai/gpt-4o-mini"
        [why] = result.model_errors
        assert why.startswith(f"openai/{RETIRED}: ") and "HTTP 404" in why
        assert [r.json["model"] for r in fake.requests] == [RETIRED, "gpt-4o-mini"]
        assert result.cost_usd == pytest.approx(ONE_CALL_USD)
        handle = temporal_env.client.get_workflow_handle(wid)
        events = await history_events(handle)
        assert call_model_summaries(events) == [
            f"call model openai/{RETIRED}",
            "call model openai/gpt-4o-mini (fallback 1)",
        ]
        [failed] = of_type(events, EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED)
        info = failed.activity_task_failed_event_attributes.failure.application_failure_info
        assert info.type == "PermanentModelError" and info.non_retryable
        # the fallback path replays with the current code
        history = await handle.fetch_history()
        report = await check_history(history)
        assert report.ok, report.message
        if os.environ.get("XMESH_RECORD_FALLBACK_FIXTURE"):  # how tests/fixtures/wake-fallback.json was made
            text = json.dumps(json.loads(history.to_json()), indent=1) + "\n"
            (FIXTURES / "wake-fallback.json").write_text(text)
        # the ledger charged the answering call once, under the fallback's model
        totals = peer.safety.cost.totals(now_ms())
        assert totals.calls == 1 and totals.run_usd == pytest.approx(ONE_CALL_USD)
        assert peer.safety.breakers[0].snapshot(now_ms()).consecutive_failures == 1
    finally:
        await peer.stop()


async def test_an_open_breaker_skips_its_model_without_a_request(temporal_env, fake, author):
    group = group_name()
    peer = await start_peer(
        temporal_env.client, chain_config("fb-open", group, fake.base_url, ["gpt-4o-mini"])
    )
    try:
        now = now_ms()
        for _ in range(5):
            peer.safety.breaker.record_failure(now, transient=True)
        assert peer.safety.breaker.snapshot(now).state == "open"
        fake.script(fake.tool_call(REPLY))
        wid = await deliver(peer, trigger(author, group, 0))
        result = await result_of(temporal_env.client, wid)
        assert result.outcome == Outcome.EMITTED and result.model == "openai/gpt-4o-mini"
        assert [r.json["model"] for r in fake.requests] == ["gpt-4o-mini"]
        assert "circuit open" in result.model_errors[0]
        events = await history_events(temporal_env.client.get_workflow_handle(wid))
        [failed] = of_type(events, EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED)
        info = failed.activity_task_failed_event_attributes.failure.application_failure_info
        assert info.type == "CircuitOpenError"
        # `xmesh-agent status` shows each model's breaker
        status = await HANDLERS["status"](peer.control, {"brief": True})
        assert status["breaker"]["state"] == "open"
        assert [(f["model"], f["breaker"]["state"]) for f in status["fallback"]] == [
            ("openai/gpt-4o-mini", "closed")
        ]
    finally:
        await peer.stop()


async def test_every_breaker_open_ends_the_wake_circuit_open(temporal_env, fake, author):
    group = group_name()
    peer = await start_peer(
        temporal_env.client, chain_config("fb-all", group, fake.base_url, ["gpt-4o-mini"])
    )
    try:
        now = now_ms()
        for breaker in peer.safety.breakers:
            for _ in range(5):
                breaker.record_failure(now)
        result = await result_of(temporal_env.client, await deliver(peer, trigger(author, group, 0)))
        assert result.outcome == Outcome.CIRCUIT_OPEN and "all 2 models" in result.reason
        assert fake.requests == []
    finally:
        await peer.stop()


async def test_a_used_up_quota_is_not_retried_the_next_model_answers(temporal_env, fake, author):
    group = group_name()
    quota = "You exceeded your current quota, please check your plan and billing details."
    fake.script(Reply.error(429, quota, retry_after="20"), fake.tool_call(REPLY))
    peer = await start_peer(
        temporal_env.client, chain_config("fb-quota", group, fake.base_url, ["gpt-4o-mini"])
    )
    try:
        started = time.monotonic()
        result = await result_of(temporal_env.client, await deliver(peer, trigger(author, group, 0)))
        assert result.outcome == Outcome.EMITTED and result.model == "openai/gpt-4o-mini"
        assert [r.json["model"] for r in fake.requests] == [RETIRED, "gpt-4o-mini"]
        assert "quota" in result.model_errors[0]
        assert time.monotonic() - started < 15  # not the 20 s Retry-After of a rate limit
    finally:
        await peer.stop()


async def test_a_vendor_down_falls_over_to_another_vendor(temporal_env, fake, author):
    """Anthropic answers 529 (overloaded) to each of its 3 attempts; the OpenAI fallback answers."""
    group = group_name()
    with FakeAnthropicServer() as claude:
        claude.script(*[Reply.error(529, "Overloaded")] * 3)
        model = {
            "adapter": "anthropic",
            "api_key": "sk-ant-test-key",
            "base_url": claude.base_url,
            "model_name": "claude-haiku-4-5-20251001",
            "fallback": [{"adapter": "openai", "model_name": "gpt-4o-mini", "base_url": fake.base_url}],
        }
        peer = await start_peer(temporal_env.client, peer_config("fb-vendor", "reviewer", group, model=model))
        try:
            fake.script(fake.tool_call(REPLY))
            result = await result_of(temporal_env.client, await deliver(peer, trigger(author, group, 0)))
            assert result.outcome == Outcome.EMITTED and result.model == "openai/gpt-4o-mini"
            assert len(claude.requests) == 3 and len(fake.requests) == 1
            assert "HTTP 529" in result.model_errors[0]
        finally:
            await peer.stop()


async def test_every_model_failing_fails_the_wake_with_each_reason(temporal_env, fake, author):
    group = group_name()
    fake.script(Reply.error(404, "no such model"), Reply.error(400, "bad request for this one"))
    peer = await start_peer(
        temporal_env.client, chain_config("fb-fail", group, fake.base_url, ["gpt-4o-mini"])
    )
    try:
        wid = await deliver(peer, trigger(author, group, 0))
        with pytest.raises(WorkflowFailureError) as failed:
            await result_of(temporal_env.client, wid)
        cause = failed.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == "ModelCallFailed"
        assert "HTTP 404" in cause.message and "HTTP 400" in cause.message
        desc = await temporal_env.client.get_workflow_handle(wid).describe()
        assert desc.search_attributes["XmOutcome"] == ["failed"]
    finally:
        await peer.stop()


async def test_without_fallback_the_wake_input_has_no_chain(temporal_env, fake, author):
    """A peer with one model starts wakes as before (no patch marker, one `call model` naming its model)."""
    group = group_name()
    fake.script(fake.tool_call(REPLY))
    peer = await start_peer(temporal_env.client, openai_config("fb-none", group, fake.base_url))
    try:
        wid = await deliver(peer, trigger(author, group, 0))
        result = await result_of(temporal_env.client, wid)
        assert result.outcome == Outcome.EMITTED and result.model == "openai/gpt-4o-mini"
        events = await history_events(temporal_env.client.get_workflow_handle(wid))
        assert call_model_summaries(events) == ["call model openai/gpt-4o-mini"]
        markers = of_type(events, EventType.EVENT_TYPE_MARKER_RECORDED)
        assert all(b"model-fallback" not in m.SerializeToString() for m in markers)
    finally:
        await peer.stop()
