"""Every wake outcome on the real Temporal dev server, through real peers (node + worker + listener).

The model is the offline adapter or the loopback OpenAI fake (a real HTTP server speaking the wire
format); where an emission matters, an observer node on loopback TCP counts what reached the mesh.
"""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowFailureError

from tests.fakes.model_servers import FakeOpenAIServer, Reply
from tests.integration.envelope_kit import (
    ONE_CALL_USD,
    Observer,
    deliver,
    group_name,
    openai_config,
    result_of,
    trigger,
    wake,
)
from tests.integration.peer_kit import eventually, peer_config, start_peer
from xmesh_agent.clock import now_ms
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import mint
from xmesh_agent.wake import approval
from xmesh_agent.wake.payloads import Outcome


@pytest.fixture
def author() -> NodeIdentity:
    return NodeIdentity.generate("author-x")


async def test_emitted_reaches_the_mesh_once(temporal_env, tmp_path, author):
    group = group_name()
    peer = await start_peer(temporal_env.client, peer_config("emit-p", "reviewer", group))
    observer = await Observer(tmp_path, group).start()
    try:
        await eventually(lambda: len(peer.node.peers()) == 1)
        result = await wake(peer, trigger(author, group, 0))
        assert result.outcome == Outcome.EMITTED and result.emitted_key
        await eventually(lambda: result.emitted_key in observer.keys)
        assert [c.key for c in observer.from_author("emit-p")] == [result.emitted_key]
    finally:
        await observer.stop()
        await peer.stop()


async def test_rejected_exact_repeat_of_what_the_peer_holds(temporal_env, author, fake):
    group = group_name()
    peer = await start_peer(temporal_env.client, openai_config("rej-p", group, fake.base_url))
    try:
        held = trigger(author, group, 0)
        peer.store.put(held, source="author-x")
        # the same texts again (a CMB key covers texts and parents, so this one quotes the first)
        other = NodeIdentity.generate("author-y")
        repeat = mint(
            held.texts(), identity=other, group=group, created_at=held.created_at + 5, parents=[held]
        )
        assert repeat.key != held.key and repeat.texts() == held.texts()
        result = await wake(peer, repeat)
        assert result.outcome == Outcome.REJECTED and result.admission == "redundant"
        assert "SVAF redundant" in result.reason
        assert fake.requests == []  # a rejected CMB never reaches the model
    finally:
        await peer.stop()


async def test_budget_exceeded_on_the_second_trigger_within_a_minute(temporal_env, author):
    group = group_name()
    cfg = peer_config("bud-p", "reviewer", group, budget={"max_wakes_per_minute": 1})
    peer = await start_peer(temporal_env.client, cfg)
    try:
        first = await wake(peer, trigger(author, group, 0))
        second = await wake(peer, trigger(author, group, 1))
        assert first.outcome == Outcome.EMITTED
        assert second.outcome == Outcome.BUDGET_EXCEEDED and second.reason.startswith("burst")
        assert second.admission == "aligned"  # admitted, then stopped by the budget
    finally:
        await peer.stop()


async def test_cost_cap_stops_the_next_model_call(temporal_env, author, fake, caplog):
    group = group_name()
    cap = ONE_CALL_USD / 2  # the first call crosses it
    cfg = openai_config("cost-p", group, fake.base_url, budget={"max_cost_usd_per_run": cap})
    fake.script(fake.tool_call({"focus": "token bucket for the billing API rate limiter, reviewed"}))
    peer = await start_peer(temporal_env.client, cfg)
    try:
        first = await wake(peer, trigger(author, group, 0))
        assert first.outcome == Outcome.EMITTED and first.cost_usd == pytest.approx(ONE_CALL_USD)
        # the call that crossed the cap says so at once, before any further wake
        capped = [r for r in caplog.records if "cost cap reached (cost-cap-run)" in r.getMessage()]
        assert len(capped) == 1 and "stops waking" in capped[0].getMessage()
        second = await wake(peer, trigger(author, group, 1))
        third = await wake(peer, trigger(author, group, 2))
        assert second.outcome == third.outcome == Outcome.COST_CAP
        assert second.reason == "cost-cap-run"
        assert len(fake.requests) == 1  # no model call once the cap is reached
        assert len([r for r in caplog.records if "cost cap reached" in r.getMessage()]) == 1  # said once
    finally:
        await peer.stop()


async def test_circuit_opens_after_five_failing_calls(temporal_env, author, fake):
    group = group_name()
    fake.script(*[Reply.error(401, "invalid api key") for _ in range(5)])
    peer = await start_peer(temporal_env.client, openai_config("brk-p", group, fake.base_url))
    try:
        for i in range(5):
            wid = await deliver(peer, trigger(author, group, i))
            with pytest.raises(WorkflowFailureError):
                await result_of(temporal_env.client, wid)
        assert len(fake.requests) == 5
        result = await wake(peer, trigger(author, group, 5))
        assert result.outcome == Outcome.CIRCUIT_OPEN
        assert "after 5 model failures" in result.reason
        assert len(fake.requests) == 5  # the open breaker kept the sixth call off the server
    finally:
        await peer.stop()


async def test_no_emit_on_a_plain_text_reply(temporal_env, author, fake):
    group = group_name()
    fake.script(fake.text("I have nothing to add to the rate limiter."))
    peer = await start_peer(temporal_env.client, openai_config("txt-p", group, fake.base_url))
    try:
        result = await wake(peer, trigger(author, group, 0))
        assert result.outcome == Outcome.NO_EMIT and "nothing to add" in result.reason
        assert result.emitted_key is None and result.cost_usd == pytest.approx(100 * 0.15e-6 + 20 * 0.6e-6)
        assert peer.store.recent_by_author("txt-p", 5) == []
    finally:
        await peer.stop()


async def test_suppressed_empty_when_every_field_is_neutral(temporal_env, author, fake):
    group = group_name()
    fake.script(fake.tool_call({"focus": "neutral", "mood": " neutral "}))
    peer = await start_peer(temporal_env.client, openai_config("emp-p", group, fake.base_url))
    try:
        result = await wake(peer, trigger(author, group, 0))
        assert result.outcome == Outcome.SUPPRESSED_EMPTY
        assert peer.store.recent_by_author("emp-p", 5) == []
    finally:
        await peer.stop()


# bypasses of issue 22 among them: global options before push, a variation selector inside a word
GATED_REPLIES = {
    "in-intent": ({"focus": "release of the rate limiter", "intent": "git push origin main"}, "git-push"),
    "in-focus": (
        {"focus": "done; now run git push --force origin main and deploy", "intent": "wrap up"},
        "git-push",
    ),
    "git-global-options": ({"focus": "the limiter", "intent": "git -C ./repo --no-pager push"}, "git-push"),
    "invisible-mark": ({"focus": "the limiter", "mood": "then gi\ufe0ft push"}, "git-push"),
}


@pytest.mark.parametrize("case", list(GATED_REPLIES))
async def test_suppressed_gate_on_git_push(temporal_env, author, fake, tmp_path, case):
    reply, rule = GATED_REPLIES[case]
    # the wake id is the peer's name and the trigger's content key: each case its own trigger, or a
    # case would read the result of an earlier case's wake
    i = list(GATED_REPLIES).index(case)
    group = group_name()
    fake.script(fake.tool_call(reply))
    peer = await start_peer(temporal_env.client, openai_config("gate-p", group, fake.base_url))
    observer = await Observer(tmp_path, group).start()
    try:
        await eventually(lambda: len(peer.node.peers()) == 1)
        result = await wake(peer, trigger(author, group, i))
        assert result.outcome == Outcome.SUPPRESSED_GATE and rule in result.reason
        assert peer.store.recent_by_author("gate-p", 5) == []
        assert observer.from_author("gate-p") == []
    finally:
        await observer.stop()
        await peer.stop()


async def test_denied_when_approval_times_out_and_emitted_when_approved(temporal_env, author, fake):
    group = group_name()
    push = fake.tool_call({"focus": "release of the rate limiter", "intent": "git push origin main"})
    fake.script(push, push)
    safety = {"approval_gates": "approve", "approval_timeout_seconds": 1}
    peer = await start_peer(temporal_env.client, openai_config("apr-p", group, fake.base_url, safety=safety))
    try:
        timed_out = await wake(peer, trigger(author, group, 0))
        assert timed_out.outcome == Outcome.DENIED and timed_out.reason == "approval timed out"
        assert peer.store.recent_by_author("apr-p", 5) == []
    finally:
        await peer.stop()
    # the same gate with a long timeout, approved by an operator through the update
    safety["approval_timeout_seconds"] = 600
    peer = await start_peer(temporal_env.client, openai_config("apr-p", group, fake.base_url, safety=safety))
    try:
        wid = await deliver(peer, trigger(author, group, 1))
        handle = temporal_env.client.get_workflow_handle(wid)

        async def awaiting() -> bool:
            try:
                return await handle.query("stage") == "awaiting-approval"
            except Exception:  # noqa: BLE001 - not started yet
                return False

        await eventually(awaiting)
        run_id = (await handle.describe()).run_id
        decision = approval.sign(
            peer.identity, wid, run_id, approved=True, by="op", reason="", now_ms=now_ms()
        )
        assert await handle.execute_update("decide", decision) == "approved"
        result = await result_of(temporal_env.client, wid)
        assert result.outcome == Outcome.EMITTED
    finally:
        await peer.stop()


async def test_ping_pong_is_cut_by_the_cycle_check_and_a_commitment_gets_through(temporal_env, tmp_path):
    group = group_name()
    with FakeOpenAIServer() as model_a, FakeOpenAIServer() as model_b:
        a = await start_peer(temporal_env.client, openai_config("pp-a", group, model_a.base_url))
        b = await start_peer(temporal_env.client, openai_config("pp-b", group, model_b.base_url))
        observer = await Observer(tmp_path, group).start()
        try:
            await eventually(lambda: all(len(x.peers()) == 2 for x in (a.node, b.node, observer.node)))
            # b answers the seed; a answers b with a commitment (the exception); b's answer to that is cut
            model_b.script(
                model_b.tool_call(topic_fields_for("bravo")), model_b.tool_call(topic_fields_for("delta"))
            )
            model_a.script(
                model_a.tool_call(
                    {**topic_fields_for("charlie"), "commitment": "I will ship the token bucket by Friday"}
                )
            )
            seed = trigger(a.identity, group, 0)
            a.store.put(seed, source="own")
            assert await a.node.publish(seed) == 2
            r1 = await result_of(temporal_env.client, f"wake-pp-b-{seed.key}")
            assert r1.outcome == Outcome.EMITTED
            r2 = await result_of(temporal_env.client, f"wake-pp-a-{r1.emitted_key}")
            assert r2.outcome == Outcome.EMITTED  # own seed is its grandparent, but it commits
            r3 = await result_of(temporal_env.client, f"wake-pp-b-{r2.emitted_key}")
            assert r3.outcome == Outcome.SUPPRESSED_CYCLE and r1.emitted_key in r3.reason
            await eventually(lambda: r2.emitted_key in observer.keys)
            assert [c.key for c in observer.from_author("pp-b")] == [r1.emitted_key]
            assert [c.key for c in observer.from_author("pp-a")] == [seed.key, r2.emitted_key]
        finally:
            await observer.stop()
            await a.stop()
            await b.stop()


def topic_fields_for(case: str) -> dict[str, str]:
    return {
        "focus": f"rate limiter for the billing API, case {case}",
        "intent": f"add a token bucket test for case {case}",
    }
