"""Which task a demo run seeds: one its peers will actually take up, never a repeat they drop.

A peer admits a CMB by SVAF against what it already holds (spec §9): a seed that differs from an
earlier run's only by a run number and a clock time can be judged `redundant` (depending on the
digits), and a wholly new topic is `rejected` by peers whose memory is about another one. So each
run rotates through the scenario's tasks and gives every candidate an angle of its own, then asks
each peer's own admission (its α weights, its stored CMBs) which candidates it would take, and
seeds the first that every peer admits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.admission.encoder import admit
from xmesh_agent.mmp.cmb import CMB, mint
from xmesh_agent.scenario import Scenario

_ASPECTS = (
    "edge cases and limits",
    "failure modes and recovery",
    "tests that pin the behaviour down",
    "logs and metrics an operator needs",
    "a security review of the change",
    "documentation for the users",
    "performance under load",
)
ANGLES = _ASPECTS + tuple(f"{a} with {b}" for i, a in enumerate(_ASPECTS) for b in _ASPECTS[i + 1 :])
"""What a run asks the peers to look at, in turn (28 angles): the seed's `perspective` carries it."""


def tagged_seed(
    texts: Mapping[str, str], run: int, task: int | None, now: datetime, angle: str | None = None
) -> dict[str, str]:
    """The seed texts made distinct per run: a tag on focus and motivation, the run's angle in perspective."""
    tag = f"run {run}" + (f" task {task}" if task is not None else "") + f", {now:%H:%M:%S}"
    out = dict(texts)
    out["focus"] = f"{texts.get('focus', 'task')} ({tag})"
    if texts.get("motivation"):
        out["motivation"] = f"{texts['motivation']} ({tag})"
    if angle:
        out["perspective"] = f"{texts.get('perspective') or 'the team'}, this time on {angle}"
    return out


def candidates(scenario: Scenario, run: int, index: int, now: datetime, soak: bool) -> list[dict[str, str]]:
    """Run `run`'s seed number `index`, in order of preference: each task in rotation from this run's
    own with this run's angle, then with each other angle (a return to an earlier topic is never a
    mere repeat). The very first seed of the first run is the scenario's seed as written."""
    turn = run - 1 + index
    count = 1 + len(scenario.tasks)
    task_no = index + 1 if soak else None
    angles: list[str | None] = [ANGLES[(turn + k) % len(ANGLES)] for k in range(len(ANGLES))]
    if turn == 0:
        angles.insert(0, None)
    return [
        tagged_seed(scenario.task(turn + offset), run, task_no, now, angle)
        for angle in angles
        for offset in range(count)
    ]


@dataclass(frozen=True)
class PeerView:
    """What one peer would judge a seed by: its α weights and the CMBs it holds (newest first)."""

    name: str
    weights: Mapping[str, float]
    anchors: Sequence[CMB]


@dataclass(frozen=True)
class SeedChoice:
    texts: dict[str, str]
    cmb: CMB
    admitted_by: tuple[str, ...]
    rejected_by: tuple[str, ...]


def choose_seed(
    options: Sequence[dict[str, str]],
    peers: Sequence[PeerView],
    identity: NodeIdentity,
    group: str,
    created_at: int,
) -> SeedChoice:
    """The first option every peer admits; else the one most peers admit (the first of equals)."""
    best: SeedChoice | None = None
    for texts in options:
        cmb = mint(texts, identity=identity, group=group, created_at=created_at)
        verdicts = {p.name: admit(cmb, p.anchors, p.weights, created_at).accepted for p in peers}
        choice = SeedChoice(
            texts,
            cmb,
            tuple(n for n, ok in verdicts.items() if ok),
            tuple(n for n, ok in verdicts.items() if not ok),
        )
        if not choice.rejected_by:
            return choice
        if best is None or len(choice.admitted_by) > len(best.admitted_by):
            best = choice
    if best is None:
        raise ValueError("no seed options: the scenario has no seed")
    return best
