"""Wakes recorded by earlier workflow code still replay with the current WakeWorkflow.

tests/fixtures/wake-*.json were recorded (tests/fixtures/record_wake_histories.py) with the wake as it
stood before its stage upserts were batched per workflow task: one history per path (emitted, rejected,
budget, gate, approval granted / denied / timed out, no emit, model failure); wake-fallback.json is a
wake whose retired model fell back to the next of its chain (tests/integration/test_model_fallback.py
with XMESH_RECORD_FALLBACK_FIXTURE=1). A wake that is in flight
during an upgrade is resumed by the new code from such a history, so each must replay cleanly.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow

from xmesh_agent.wake.payloads import WakeInput, WakeResult
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
