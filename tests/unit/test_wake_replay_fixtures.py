"""Wakes recorded by earlier workflow code still replay with the current WakeWorkflow.

tests/fixtures/wake-*.json were recorded (tests/fixtures/record_wake_histories.py) with the wake as it
stood before its stage upserts were batched per workflow task: one history per path (emitted, rejected,
budget, gate, approval granted / denied / timed out, no emit, model failure); wake-fallback.json is a
wake whose retired model fell back to the next of its chain (tests/integration/test_model_fallback.py
with XMESH_RECORD_FALLBACK_FIXTURE=1). A wake that is in flight
during an upgrade is resumed by the new code from such a history, so each must replay cleanly.

wake-approved.json and wake-denied.json were decided by unsigned updates, before decisions were signed
and before a held wake put its reply in its memo. They still replay: Temporal records only the updates a
validator accepted, and a replay does not run validators again, so the recorded decision is taken as
it was; the memo upsert is behind a patch those histories never passed. Live, the same unsigned
decision is refused (below). wake-approved-signed.json / wake-denied-signed.json are the same paths
with a signed decision and the held memo.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow

from xmesh_agent.wake import approval
from xmesh_agent.wake.payloads import ApprovalDecision, SafetyVerdict, WakeInput, WakeResult
from xmesh_agent.workers.history_json import readable
from xmesh_agent.workers.replay import check_history, load_history
from xmesh_agent.workflows.wake import WakeWorkflow

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RECORDED = sorted(FIXTURES.glob("wake-*.json"))
PATHS = {
    "emitted",
    "rejected",
    "budget-exceeded",
    "suppressed-gate",
    "approved",
    "denied",
    "approved-signed",
    "denied-signed",
    "approval-timeout",
    "no-emit",
    "failed",
    "fallback",
}


def test_every_wake_path_has_a_recorded_history() -> None:
    assert {p.stem.removeprefix("wake-") for p in RECORDED} == PATHS


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.stem)
async def test_recorded_wake_replays_with_current_code(path: Path) -> None:
    report = await check_history(load_history(path.read_text(), path.stem))
    assert report.ok, report.message


@workflow.defn(name="WakeWorkflow", sandboxed=False)
class TimerFirstWake(WakeWorkflow):
    """A wake changed without a patch guard: a timer before admission."""

    @workflow.run
    async def run(self, wake: WakeInput) -> WakeResult:
        await workflow.sleep(timedelta(seconds=1))
        return await super().run(wake)


async def test_an_unguarded_change_is_caught_by_the_fixtures() -> None:
    """The replay check can fail: a timer the recorded wakes never had is non-determinism."""
    path = FIXTURES / "wake-emitted.json"
    report = await check_history(load_history(path.read_text(), path.stem), [TimerFirstWake])
    assert not report.ok and report.nondeterministic, report.message


def _recorded(name: str) -> tuple[dict, ApprovalDecision, SafetyVerdict]:
    """(started event attributes, the accepted decision, the check_safety verdict) of a decided wake."""
    events = json.loads(readable((FIXTURES / f"wake-{name}.json").read_text()))["events"]
    started = events[0]["workflowExecutionStartedEventAttributes"]
    accepted = next(e for e in events if "workflowExecutionUpdateAcceptedEventAttributes" in e)
    args = accepted["workflowExecutionUpdateAcceptedEventAttributes"]["acceptedRequest"]["input"]["args"]
    decision = ApprovalDecision.model_validate(args["payloads"][0]["json"])
    results = [
        e["markerRecordedEventAttributes"]["details"]["result"]["payloads"][0]["json"]
        for e in events
        if "result" in e.get("markerRecordedEventAttributes", {}).get("details", {})
    ]
    verdict = SafetyVerdict.model_validate(next(r for r in results if isinstance(r, dict) and "action" in r))
    return started, decision, verdict


@pytest.mark.parametrize("name", ["approved-signed", "denied-signed"])
def test_signed_recordings_carry_a_decision_the_validator_accepts(name: str) -> None:
    started, decision, verdict = _recorded(name)
    run_id = started["originalExecutionRunId"]
    peer = started["input"]["payloads"][0]["json"]["peer"]
    wid = f"wake-{peer}-{started['memo']['fields']['trigger']['json']}"
    assert verdict.action == "approve" and verdict.approver_key
    args = (wid, run_id, verdict.approver_key, peer, decision.signed_at_ms)
    assert approval.refusal(decision, *args) is None
    forged = decision.model_copy(update={"approved": not decision.approved})
    assert "does not verify" in (approval.refusal(forged, *args) or "")


@pytest.mark.parametrize("name", ["approved", "denied"])
def test_old_unsigned_recordings_replay_though_the_same_decision_is_refused_live(name: str) -> None:
    started, decision, verdict = _recorded(name)
    assert not decision.signature and not verdict.approver_key
    refused = approval.refusal(decision, "w", started["originalExecutionRunId"], "", "p", 0)
    assert refused and "trusts no key" in refused
