"""CostLedger caps at their boundaries, windows, runs, unknown prices, idempotence and persistence."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from xmesh_agent.config import BudgetConfig
from xmesh_agent.safety.cost import DAY_MS, HOUR_MS, CostLedger, clamp_max_tokens


def caps(hour: float = 100.0, day: float = 1000.0, run: float = 500.0) -> BudgetConfig:
    return BudgetConfig(max_cost_usd_per_hour=hour, max_cost_usd_per_day=day, max_cost_usd_per_run=run)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "cost.db"


def test_hour_cap_reached_exactly_at_the_cap(db: Path) -> None:
    ledger = CostLedger(db, caps(hour=1.0), run_id="r1")
    ledger.record("w1", 1, 0.5, 1_000)
    ledger.record("w2", 1, 0.499999, 1_000)
    assert ledger.check(1_000).allowed
    ledger.record("w3", 1, 0.000001, 1_000)
    decision = ledger.check(1_000)
    assert not decision.allowed and decision.reason == "cost-cap-hour"
    assert decision.totals.hour_usd == pytest.approx(1.0)


def test_sums_are_exact_so_ten_dimes_reach_a_dollar(db: Path) -> None:
    ledger = CostLedger(db, caps(hour=1.0), run_id="r1")
    for i in range(10):
        ledger.record(f"w{i}", 0, 0.1, 5)
    assert ledger.check(5).reason == "cost-cap-hour"
    assert ledger.totals(5).hour_usd == 1.0


def test_cap_zero_allows_no_spending(db: Path) -> None:
    assert CostLedger(db, caps(run=0), run_id="r").check(0).reason == "cost-cap-run"
    assert CostLedger(db, caps(hour=0), run_id="r").check(0).reason == "cost-cap-hour"


def test_reasons_in_order_hour_day_run(db: Path) -> None:
    ledger = CostLedger(db, caps(hour=1.0, day=2.0, run=3.0), run_id="r")
    ledger.record("a", 0, 1.0, 0)
    assert ledger.check(0).reason == "cost-cap-hour"
    ledger.record("b", 0, 1.0, HOUR_MS)
    assert ledger.check(HOUR_MS).reason == "cost-cap-hour"
    assert ledger.check(2 * HOUR_MS).reason == "cost-cap-day"
    ledger.record("c", 0, 1.0, DAY_MS + HOUR_MS)
    assert ledger.check(DAY_MS + 2 * HOUR_MS).reason == "cost-cap-run"


def test_hour_window_rolls_over_at_exactly_3600_s(db: Path) -> None:
    ledger = CostLedger(db, caps(hour=1.0), run_id="r")
    ledger.record("a", 0, 1.0, 42)
    assert ledger.totals(42 + HOUR_MS - 1).hour_usd == 1.0
    assert ledger.check(42 + HOUR_MS - 1).reason == "cost-cap-hour"
    t = ledger.totals(42 + HOUR_MS)
    assert t.hour_usd == 0.0 and t.day_usd == 1.0
    assert ledger.check(42 + HOUR_MS).allowed


def test_day_window_rolls_over_at_exactly_86400_s(db: Path) -> None:
    ledger = CostLedger(db, caps(day=2.0), run_id="r")
    ledger.record("a", 0, 2.0, 0)
    assert ledger.check(DAY_MS - 1).reason == "cost-cap-day"
    assert ledger.check(DAY_MS).allowed
    assert ledger.totals(DAY_MS).lifetime_usd == 2.0


def test_run_counts_only_this_run_and_lifetime_counts_all(db: Path) -> None:
    first = CostLedger(db, caps(run=1.0), run_id="run-1", run_started_ms=0)
    first.record("a", 0, 1.0, 0)
    assert first.check(DAY_MS * 3).reason == "cost-cap-run"
    first.close()
    second = CostLedger(db, caps(run=1.0), run_id="run-2", run_started_ms=DAY_MS * 3)
    t = second.totals(DAY_MS * 3)
    assert (t.run_usd, t.lifetime_usd, t.run_calls, t.calls) == (0.0, 1.0, 0, 1)
    assert second.check(DAY_MS * 3).allowed
    second.record("b", 0, 0.25, DAY_MS * 3)
    t = second.totals(DAY_MS * 3)
    assert (t.run_usd, t.lifetime_usd) == (0.25, 1.25)


def test_unknown_cost_is_counted_never_silently_zero(db: Path) -> None:
    ledger = CostLedger(db, caps(hour=1.0), run_id="r")
    assert ledger.record("a", 0, None, 10, input_tokens=100, output_tokens=20, model="mystery")
    ledger.record("b", 0, 0.5, 10)
    t = ledger.totals(10)
    assert t.unknown_calls == 1 and t.run_unknown_calls == 1 and t.calls == 2
    assert t.hour_usd == 0.5
    assert ledger.check(10).allowed


def test_same_wake_and_attempt_counts_once(db: Path) -> None:
    ledger = CostLedger(db, caps(), run_id="r")
    assert ledger.record("w", 1, 0.3, 0)
    assert not ledger.record("w", 1, 0.3, 5)
    assert not ledger.record("w", "1", 0.9, 5), "attempt 1 and '1' are the same key"
    assert ledger.record("w", 2, 0.3, 5)
    t = ledger.totals(5)
    assert t.calls == 2 and t.lifetime_usd == pytest.approx(0.6)


def test_ledger_survives_reopening_the_file(db: Path) -> None:
    ledger = CostLedger(db, caps(), run_id="r")
    ledger.record("w", 0, 0.125, 100)
    ledger.record("x", 0, None, 100)
    ledger.close()
    again = CostLedger(db, caps(), run_id="r")
    t = again.totals(100)
    assert (t.run_usd, t.hour_usd, t.unknown_calls) == (0.125, 0.125, 1)
    assert not again.record("w", 0, 0.125, 200)


def test_concurrent_recording_of_the_same_calls_counts_each_once(db: Path) -> None:
    ledgers = [CostLedger(db, caps(), run_id="r") for _ in range(6)]
    start = threading.Barrier(len(ledgers))

    def worker(ledger: CostLedger) -> None:
        start.wait()
        for i in range(20):
            ledger.record(f"w{i}", 0, 0.01, 1_000)

    threads = [threading.Thread(target=worker, args=(lg,)) for lg in ledgers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    totals = ledgers[0].totals(1_000)
    assert totals.calls == 20 and totals.run_usd == pytest.approx(0.2)


@pytest.mark.parametrize("bad", [-0.01, float("nan"), float("inf")])
def test_bad_costs_are_refused(db: Path, bad: float) -> None:
    ledger = CostLedger(db, caps(), run_id="r")
    with pytest.raises(ValueError, match="cost_usd"):
        ledger.record("w", 0, bad, 0)
    assert ledger.totals(0).calls == 0


def test_bad_arguments_are_clear_errors(db: Path) -> None:
    with pytest.raises(ValueError, match="run_id"):
        CostLedger(db, caps(), run_id="")
    ledger = CostLedger(db, caps(), run_id="r")
    with pytest.raises(TypeError):
        ledger.record("w", 0, "0.1", 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="wake_id"):
        ledger.record("", 0, 0.1, 0)


def test_clamp_max_tokens() -> None:
    assert clamp_max_tokens(None, 1024) == 1024
    assert clamp_max_tokens(4096, 1024) == 1024
    assert clamp_max_tokens(1024, 1024) == 1024
    assert clamp_max_tokens(1023, 1024) == 1023
    assert clamp_max_tokens(0, 1024) == 1
    with pytest.raises(ValueError):
        clamp_max_tokens(10, 0)


def brute_totals(rows: list[tuple[int, int | None, str]], now: int, run_id: str) -> tuple:
    """The sums read straight off the recorded calls: what the minute and run summaries must equal."""
    nanos = [(at, n, r) for at, n, r in rows]
    return (
        sum(n for at, n, _ in nanos if n is not None and at > now - HOUR_MS),
        sum(n for at, n, _ in nanos if n is not None and at > now - DAY_MS),
        sum(n for _, n, r in nanos if n is not None and r == run_id),
        sum(n for _, n, _ in nanos if n is not None),
        len(rows),
        sum(n is None for _, n, _ in rows),
        sum(r == run_id for _, _, r in rows),
    )


def as_nanos(t) -> tuple:
    usd = (t.hour_usd, t.day_usd, t.run_usd, t.lifetime_usd)
    return (*(round(u * 1_000_000_000) for u in usd), t.calls, t.unknown_calls, t.run_calls)


def test_summaries_equal_the_sums_of_every_call_at_any_time(db: Path) -> None:
    import random

    rng = random.Random(7)
    ledgers = {r: CostLedger(db, caps(), run_id=r) for r in ("r1", "r2")}
    rows: list[tuple[int, int | None, str]] = []
    for i in range(600):
        at = rng.randrange(-120_000, 2 * DAY_MS)
        run = rng.choice(("r1", "r2"))
        cents = None if rng.random() < 0.1 else rng.randrange(0, 1000)
        ledgers[run].record(f"w{i}", 0, None if cents is None else cents / 100, at)
        ledgers[run].record(f"w{i}", 0, 5.0, at + 1)  # a retry: counted once
        rows.append((at, None if cents is None else cents * 10_000_000, run))
    edges = [at + d for at, _, _ in rows[:40] for d in (HOUR_MS - 1, HOUR_MS, DAY_MS, DAY_MS + 1, 0)]
    for now in edges + [rng.randrange(-DAY_MS, 3 * DAY_MS) for _ in range(200)]:
        assert as_nanos(ledgers["r1"].totals(now)) == brute_totals(rows, now, "r1"), now


def test_a_ledger_from_before_the_summaries_is_summed_on_open(db: Path) -> None:
    import sqlite3

    ledger = CostLedger(db, caps(), run_id="old")
    for i in range(30):
        ledger.record(f"w{i}", 0, None if i % 7 == 0 else 0.01 * i, 1_000 + i * 300_000)
    expected = as_nanos(ledger.totals(9_000_000))
    ledger.close()
    with sqlite3.connect(db) as con:
        con.execute("DROP TABLE cost_minutes")
        con.execute("DROP TABLE cost_runs")
    again = CostLedger(db, caps(), run_id="old")
    assert as_nanos(again.totals(9_000_000)) == expected
    assert expected[4] == 30 and expected[5] == 5
