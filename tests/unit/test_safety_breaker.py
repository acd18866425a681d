"""CircuitBreaker: threshold, 60 s half-open, single probe, re-open on a failed probe, persistence."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from xmesh_agent.safety.breaker import RESET_AFTER_MS, CircuitBreaker, backoff_ms


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "breaker.db"


def fail(b: CircuitBreaker, n: int, now: int, transient: bool = True) -> None:
    for _ in range(n):
        b.record_failure(now, transient=transient)


def test_opens_after_exactly_five_consecutive_failures(db: Path) -> None:
    b = CircuitBreaker(db)
    fail(b, 4, 1_000)
    assert b.snapshot(1_000).state == "closed" and b.can_attempt(1_000)
    snap = b.record_failure(1_001, transient=False)
    assert snap.state == "open" and snap.opened_at_ms == 1_001 and snap.consecutive_failures == 5
    assert snap.last_failure_transient is False
    assert not b.can_attempt(1_002)


def test_permanent_and_transient_failures_both_count_and_success_resets(db: Path) -> None:
    b = CircuitBreaker(db)
    fail(b, 2, 0, transient=True)
    fail(b, 2, 0, transient=False)
    b.record_success(0)
    fail(b, 4, 0)
    assert b.snapshot(0).state == "closed"
    b.record_failure(0, transient=False)
    assert b.snapshot(0).state == "open"


def test_half_open_exactly_60_s_after_opening_admits_a_single_probe(db: Path) -> None:
    b = CircuitBreaker(db)
    fail(b, 5, 10_000)
    assert not b.allow(10_000 + RESET_AFTER_MS - 1).allowed
    assert b.snapshot(10_000 + RESET_AFTER_MS).state == "half-open"
    probe = b.allow(10_000 + RESET_AFTER_MS)
    assert probe.allowed and probe.probe
    for t in (RESET_AFTER_MS, RESET_AFTER_MS + 1, RESET_AFTER_MS + 30_000):
        assert not b.allow(10_000 + t).allowed, "only one attempt while half-open"


def test_failed_probe_reopens_with_a_fresh_timer(db: Path) -> None:
    b = CircuitBreaker(db)
    fail(b, 5, 0)
    assert b.allow(RESET_AFTER_MS).probe
    snap = b.record_failure(RESET_AFTER_MS + 500)
    assert snap.state == "open" and snap.opened_at_ms == RESET_AFTER_MS + 500
    assert not b.allow(2 * RESET_AFTER_MS + 499).allowed
    again = b.allow(2 * RESET_AFTER_MS + 500)
    assert again.allowed and again.probe


def test_successful_probe_closes(db: Path) -> None:
    b = CircuitBreaker(db)
    fail(b, 5, 0)
    assert b.allow(RESET_AFTER_MS).probe
    snap = b.record_success(RESET_AFTER_MS + 10)
    assert snap.state == "closed" and snap.consecutive_failures == 0 and snap.next_backoff_ms == 0
    assert all(b.allow(RESET_AFTER_MS + 11).allowed for _ in range(3))


def test_lost_probe_lease_expires_so_the_breaker_cannot_wedge(db: Path) -> None:
    b = CircuitBreaker(db, probe_lease_ms=5_000)
    fail(b, 5, 0)
    assert b.allow(RESET_AFTER_MS).probe
    assert not b.allow(RESET_AFTER_MS + 4_999).allowed
    assert b.allow(RESET_AFTER_MS + 5_000).probe


def test_late_failure_while_open_does_not_extend_the_timer(db: Path) -> None:
    b = CircuitBreaker(db)
    fail(b, 5, 0)
    snap = b.record_failure(30_000)
    assert snap.opened_at_ms == 0 and snap.consecutive_failures == 6
    assert b.allow(RESET_AFTER_MS).probe


def test_state_and_probe_survive_a_restart(db: Path) -> None:
    b = CircuitBreaker(db)
    fail(b, 5, 0)
    b.close()
    reopened = CircuitBreaker(db)
    assert reopened.snapshot(1).state == "open"
    assert reopened.allow(RESET_AFTER_MS).probe
    reopened.close()
    third = CircuitBreaker(db)
    assert not third.allow(RESET_AFTER_MS + 1).allowed, "the probe claimed before restart still holds"
    assert CircuitBreaker(db, name="other-model").snapshot(0).state == "closed"


def test_racing_callers_get_exactly_one_probe(db: Path) -> None:
    assert CircuitBreaker(db, failure_threshold=1).record_failure(0).state == "open"
    breakers = [CircuitBreaker(db, failure_threshold=1) for _ in range(10)]
    start = threading.Barrier(len(breakers))
    results: list[bool] = []
    lock = threading.Lock()

    def worker(b: CircuitBreaker) -> None:
        start.wait()
        for _ in range(5):
            permit = b.allow(RESET_AFTER_MS + 1)
            with lock:
                results.append(permit.allowed)

    threads = [threading.Thread(target=worker, args=(b,)) for b in breakers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert breakers[0].snapshot(0).consecutive_failures == 1
    assert sum(results) == 1 and len(results) == 50


def test_backoff_doubles_and_caps() -> None:
    assert [backoff_ms(n) for n in range(0, 8)] == [0, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]
    assert backoff_ms(10_000) == 30_000


def test_bad_configuration_and_clock_are_clear_errors(db: Path) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(db, failure_threshold=0)
    with pytest.raises(TypeError):
        CircuitBreaker(db).allow(None)  # type: ignore[arg-type]


def test_budget_ledger_and_breaker_share_one_state_file(db: Path) -> None:
    from xmesh_agent.safety import CostLedger, WakeBudget

    budget, ledger, breaker = WakeBudget(db), CostLedger(db, run_id="r"), CircuitBreaker(db)
    assert budget.reserve("w", 0).allowed
    assert ledger.record("w", 0, 0.01, 0)
    breaker.record_failure(0)
    for part in (budget, ledger, breaker):
        part.close()
    assert WakeBudget(db).counts(0).minute == 1
    assert CostLedger(db, run_id="r").totals(0).run_calls == 1
    assert CircuitBreaker(db).snapshot(0).consecutive_failures == 1
