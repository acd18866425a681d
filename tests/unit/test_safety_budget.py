"""WakeBudget at its boundaries, across re-opens of its SQLite file, and under concurrent wakes."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest

from xmesh_agent.config import BudgetConfig
from xmesh_agent.safety.budget import DAY_MS, HOUR_MS, MINUTE_MS, WakeBudget


def cfg(minute: int = 1000, hour: int = 10_000, day: int = 100_000) -> BudgetConfig:
    return BudgetConfig(max_wakes_per_minute=minute, max_wakes_per_hour=hour, max_wakes_per_day=day)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "safety.db"


def test_exactly_at_minute_cap_then_denied_as_burst(db: Path) -> None:
    budget = WakeBudget(db, cfg(minute=3))
    decisions = [budget.reserve(f"w{i}", 1_000 + i) for i in range(3)]
    assert all(d.allowed for d in decisions)
    assert decisions[-1].counts.minute == 3
    denied = budget.reserve("w3", 1_010)
    assert not denied.allowed and denied.reason == "burst"
    assert denied.counts.minute == 3, "a denied wake is not counted"
    assert budget.counts(1_010).minute == 3


def test_burst_wins_over_sustained_and_daily(db: Path) -> None:
    budget = WakeBudget(db, cfg(minute=2, hour=2, day=2))
    budget.reserve("a", 0)
    budget.reserve("b", 1)
    assert budget.reserve("c", 2).reason == "burst"
    assert budget.reserve("d", MINUTE_MS + 1).reason == "sustained"
    assert budget.reserve("e", HOUR_MS + 1).reason == "daily"
    assert budget.reserve("f", DAY_MS + 1).allowed


def test_minute_window_rolls_over_at_exactly_60_s(db: Path) -> None:
    budget = WakeBudget(db, cfg(minute=2))
    budget.reserve("a", 5_000)
    budget.reserve("b", 5_000)
    assert budget.reserve("c", 5_000 + MINUTE_MS - 1).reason == "burst"
    assert budget.counts(5_000 + MINUTE_MS - 1).minute == 2
    assert budget.counts(5_000 + MINUTE_MS).minute == 0
    d = budget.reserve("d", 5_000 + MINUTE_MS)
    assert d.allowed and d.counts.minute == 1 and d.counts.hour == 3


def test_hour_window_rolls_over_at_exactly_3600_s(db: Path) -> None:
    budget = WakeBudget(db, cfg(hour=2))
    budget.reserve("a", 0)
    budget.reserve("b", 10)
    assert budget.reserve("c", HOUR_MS - 1).reason == "sustained"
    assert budget.reserve("d", HOUR_MS).allowed, "the wake at t=0 left the hour window"
    assert budget.reserve("e", HOUR_MS + 9).reason == "sustained"
    assert budget.reserve("f", HOUR_MS + 10).allowed


def test_day_window_rolls_over_at_exactly_86400_s(db: Path) -> None:
    budget = WakeBudget(db, cfg(day=1))
    budget.reserve("a", 7)
    assert budget.reserve("b", 7 + DAY_MS - 1).reason == "daily"
    assert budget.counts(7 + DAY_MS).day == 0
    assert budget.reserve("c", 7 + DAY_MS).allowed


@pytest.mark.parametrize(("cap", "first_warn"), [(10, 8), (5, 4), (3, 3), (1, 1), (100, 80)])
def test_soft_warning_at_80_percent_of_cap(db: Path, cap: int, first_warn: int) -> None:
    budget = WakeBudget(db, cfg(minute=cap))
    for i in range(1, cap + 1):
        d = budget.reserve(f"w{i}", 1_000)
        assert d.allowed
        assert d.soft_warning == ("burst" if i >= first_warn else None), (cap, i)


def test_soft_warning_names_first_window_reaching_80_percent(db: Path) -> None:
    budget = WakeBudget(db, cfg(minute=100, hour=5, day=5))
    warnings = [budget.reserve(f"w{i}", i * MINUTE_MS).soft_warning for i in range(5)]
    assert warnings == [None, None, None, "sustained", "sustained"]


def test_same_wake_id_counts_once_and_returns_same_decision(db: Path) -> None:
    budget = WakeBudget(db, cfg(minute=2))
    first = budget.reserve("wake-a", 100)
    again = budget.reserve("wake-a", 200)
    assert again.replayed and not first.replayed
    assert again.model_dump(exclude={"replayed"}) == first.model_dump(exclude={"replayed"})
    assert budget.counts(200).minute == 1
    budget.reserve("wake-b", 300)
    denied = budget.reserve("wake-c", 400)
    assert denied.reason == "burst"
    later = budget.reserve("wake-c", 400 + 10 * MINUTE_MS)
    assert not later.allowed and later.reason == "burst" and later.replayed


def test_reservations_survive_reopening_the_file(db: Path) -> None:
    budget = WakeBudget(db, cfg(minute=3))
    budget.reserve("a", 1_000)
    budget.reserve("b", 1_001)
    budget.close()
    reopened = WakeBudget(db, cfg(minute=3))
    assert reopened.counts(1_002).minute == 2
    assert reopened.reserve("a", 1_002).replayed
    assert reopened.reserve("c", 1_002).allowed
    assert reopened.reserve("d", 1_003).reason == "burst"
    assert reopened.decision_for("d") is not None and reopened.decision_for("zzz") is None
    reopened.close()


def test_many_threads_on_one_budget_never_exceed_the_cap(db: Path) -> None:
    budget = WakeBudget(db, cfg(minute=7))
    start = threading.Barrier(16)
    allowed: list[bool] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        start.wait()
        for i in range(5):
            d = budget.reserve(f"t{n}-{i}", 50_000)
            with lock:
                allowed.append(d.allowed)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(allowed) == 80 and sum(allowed) == 7
    assert budget.counts(50_000).minute == 7


def test_separate_connections_racing_on_one_file_never_exceed_the_cap(db: Path) -> None:
    budgets = [WakeBudget(db, cfg(minute=5)) for _ in range(8)]
    start = threading.Barrier(len(budgets))
    results: list[tuple[str, bool]] = []
    lock = threading.Lock()

    def worker(b: WakeBudget, n: int) -> None:
        start.wait()
        for i in range(6):
            wake = f"shared-{i}" if i % 2 else f"own-{n}-{i}"  # some wake ids reserved by everyone
            d = b.reserve(wake, 9_000)
            with lock:
                results.append((wake, d.allowed))

    threads = [threading.Thread(target=worker, args=(b, n)) for n, b in enumerate(budgets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    allowed_ids = {w for w, ok in results if ok}
    assert len(allowed_ids) == 5
    for wake in {w for w, _ in results}:
        assert len({ok for w, ok in results if w == wake}) == 1, f"{wake} got two different answers"
    assert budgets[0].counts(9_000).minute == 5


def _reserve_in_process(path: str, n: int, queue, ready, go) -> None:
    budget = WakeBudget(path, cfg(minute=6))
    ready.release()
    go.wait(30)
    queue.put([budget.reserve(f"p{n}-{i}", 1_000).allowed for i in range(5)])
    budget.close()


def test_worker_processes_sharing_the_file_never_exceed_the_cap(db: Path) -> None:
    WakeBudget(db, cfg(minute=6)).close()
    ctx = multiprocessing.get_context("spawn")
    queue, ready, go = ctx.Queue(), ctx.Semaphore(0), ctx.Event()
    procs = [ctx.Process(target=_reserve_in_process, args=(str(db), n, queue, ready, go)) for n in range(4)]
    for p in procs:
        p.start()
    for _ in procs:  # every worker has its connection open before any reserves: a real race
        assert ready.acquire(timeout=30)
    go.set()
    outcomes = [queue.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert sum(sum(o) for o in outcomes) == 6


def test_prune_forgets_old_reservations_only(db: Path) -> None:
    budget = WakeBudget(db, cfg())
    budget.reserve("old", 0)
    budget.reserve("new", DAY_MS + 1)
    assert budget.prune(2 * DAY_MS, keep_ms=DAY_MS) == 1
    assert budget.decision_for("old") is None and budget.decision_for("new") is not None


def test_bad_input_is_a_clear_error(db: Path) -> None:
    budget = WakeBudget(db, cfg())
    with pytest.raises(ValueError, match="wake_id"):
        budget.reserve("", 1)
    with pytest.raises(TypeError, match="now_ms"):
        budget.reserve("w", "soon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        budget.counts(float("nan"))  # type: ignore[arg-type]
    assert budget.counts(1).day == 0


def test_default_limits_come_from_config(db: Path) -> None:
    budget = WakeBudget(db)
    assert budget.limits.model_dump() == {"minute": 10, "hour": 100, "day": 1000}


def brute_counts(allowed_at: list[int], now: int) -> dict[str, int]:
    return {
        name: sum(at > now - window for at in allowed_at)
        for name, window in (("minute", MINUTE_MS), ("hour", HOUR_MS), ("day", DAY_MS))
    }


def test_minute_summaries_count_what_the_reservations_say_at_any_time(db: Path) -> None:
    import random

    rng = random.Random(11)
    budget = WakeBudget(db, cfg(minute=6, hour=40, day=200))
    allowed_at: list[int] = []
    now = 0
    for i in range(500):
        now += rng.choice((0, 1, 999, 7_000, 59_999, 60_000, 600_000))
        if budget.reserve(f"w{i}", now).allowed:
            allowed_at.append(now)
        assert budget.reserve(f"w{i}", now + 5).replayed
    assert 0 < len(allowed_at) < 500, "some wakes were denied, so denials are left out of the counts"
    for probe in [
        at + d for at in allowed_at[-60:] for d in (0, 1, MINUTE_MS - 1, MINUTE_MS, HOUR_MS, DAY_MS)
    ]:
        kept = [at for at in allowed_at if at > now - 2 * DAY_MS]
        assert budget.counts(probe).model_dump() == brute_counts(kept, probe), probe


def test_a_budget_from_before_the_summaries_is_counted_on_open(db: Path) -> None:
    import sqlite3

    budget = WakeBudget(db, cfg())
    for i in range(25):
        budget.reserve(f"w{i}", i * 170_000)
    expected = budget.counts(25 * 170_000).model_dump()
    budget.close()
    with sqlite3.connect(db) as con:
        con.execute("DROP TABLE wake_minutes")
    assert WakeBudget(db, cfg()).counts(25 * 170_000).model_dump() == expected
    assert expected["day"] == 25
