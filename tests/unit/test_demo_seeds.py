"""A demo run seeds a task every peer takes up: never a near-repeat (redundant), never a topic the peers'
memory rejects, whatever the run number and the clock say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from xmesh_agent.demo.seeds import ANGLES, PeerView, candidates, choose_seed, tagged_seed
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.admission.encoder import admit
from xmesh_agent.mmp.cmb import mint
from xmesh_agent.scenario import load_scenario, resolve

T1 = datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC)


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


@pytest.fixture(scope="module")
def trio():
    return load_scenario(resolve("trio"))


@pytest.fixture(scope="module")
def seeder() -> NodeIdentity:
    return NodeIdentity.generate("demo-seed")


def _views(configs, held):
    return [PeerView(c.name, c.weights, list(reversed(held))[:50]) for c in configs]


def test_a_rerun_tagged_only_by_run_and_clock_can_be_redundant(trio, seeder):
    """The failure mode: same clock time a day later, the tag differs in one digit."""
    spec, configs = trio
    first = mint(tagged_seed(spec.seed, 1, None, T1), identity=seeder, group="g", created_at=ms(T1))
    t2 = T1 + timedelta(days=1)
    again = mint(tagged_seed(spec.seed, 2, None, t2), identity=seeder, group="g", created_at=ms(t2))
    decisions = {admit(again, [first], c.weights, ms(t2)).decision for c in configs}
    assert decisions == {"redundant"}


def test_the_chosen_rerun_seed_is_admitted_by_every_peer(trio, seeder):
    spec, configs = trio
    first = mint(tagged_seed(spec.seed, 1, None, T1), identity=seeder, group="g", created_at=ms(T1))
    t2 = T1 + timedelta(days=1)
    choice = choose_seed(candidates(spec, 2, 0, t2, False), _views(configs, [first]), seeder, "g", ms(t2))
    assert choice.rejected_by == () and set(choice.admitted_by) == {c.name for c in configs}
    for cfg in configs:
        assert admit(choice.cmb, [first], cfg.weights, ms(t2)).decision in ("aligned", "guarded")
    assert "(run 2," in choice.texts["focus"] and ANGLES[1] in choice.texts["perspective"]


def test_every_run_of_a_long_series_gets_a_seed_all_peers_take_and_none_repeats(trio, seeder):
    spec, configs = trio
    held = []
    for run in range(1, len(ANGLES) + 1):
        t = T1 + timedelta(days=run)  # the same clock time every run: the digits never help
        choice = choose_seed(candidates(spec, run, 0, t, False), _views(configs, held), seeder, "g", ms(t))
        assert choice.rejected_by == (), f"run {run}: {choice.rejected_by} reject {choice.texts}"
        held.append(choice.cmb)
    assert len({c.key for c in held}) == len(held)


def test_first_seed_of_the_first_run_is_the_scenario_seed_as_written(trio, seeder):
    spec, configs = trio
    choice = choose_seed(candidates(spec, 1, 0, T1, False), _views(configs, []), seeder, "g", ms(T1))
    assert choice.texts["perspective"] == spec.seed["perspective"]
    assert choice.texts["focus"].startswith(spec.seed["focus"] + " (run 1,")


def test_candidates_rotate_through_the_tasks_and_angles(trio):
    spec, _ = trio
    run3 = candidates(spec, 3, 0, T1, False)
    assert len(run3) == (1 + len(spec.tasks)) * len(ANGLES)
    assert run3[0]["focus"].startswith(spec.tasks[1]["focus"])  # run 3 starts at the third seed
    assert ANGLES[2] in run3[0]["perspective"]
    soak = candidates(spec, 1, 2, T1, True)
    assert "task 3" in soak[0]["focus"] and soak[0]["focus"].startswith(spec.tasks[1]["focus"])


def test_when_no_option_suits_everyone_the_most_admitted_wins(trio, seeder):
    spec, configs = trio
    options = candidates(spec, 1, 0, T1, False)[:1]
    held = [mint(options[0], identity=seeder, group="g", created_at=ms(T1) - 1000)]  # an exact repeat
    choice = choose_seed(options, _views(configs, held), seeder, "g", ms(T1))
    assert set(choice.rejected_by) == {c.name for c in configs}
    with pytest.raises(ValueError):
        choose_seed([], _views(configs, held), seeder, "g", ms(T1))
