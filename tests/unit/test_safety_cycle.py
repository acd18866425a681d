"""Cycle detection over real minted CMBs resolved from a real CMB store."""

from __future__ import annotations

from pathlib import Path

import pytest

from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import CMB, mint
from xmesh_agent.mmp.store import CMBStore
from xmesh_agent.safety.cycle import detect_cycle

ME = NodeIdentity.generate("writer-01")
ALICE = NodeIdentity.generate("alice")
BOB = NodeIdentity.generate("bob")


class Chain:
    """Mints a lineage chain into a store: chain[0] is the root, chain[-1] the newest."""

    def __init__(self, store: CMBStore) -> None:
        self.store = store
        self.cmbs: list[CMB] = []
        self.clock = 1_000

    def add(self, author: NodeIdentity, text: str, parents: list[CMB] | None = None) -> CMB:
        self.clock += 1
        parents = parents if parents is not None else self.cmbs[-1:]
        cmb = mint({"focus": text}, identity=author, group="g", created_at=self.clock, parents=parents)
        self.store.put(cmb, source="own" if author is ME else author.name)
        self.cmbs.append(cmb)
        return cmb


@pytest.fixture
def store(tmp_path: Path) -> CMBStore:
    s = CMBStore(tmp_path / "cmbs.db")
    yield s
    s.close()


def test_own_cmb_as_direct_parent_is_suspect_at_depth_1(store: CMBStore) -> None:
    chain = Chain(store)
    mine = chain.add(ME, "plan")
    v = detect_cycle({"focus": "more"}, [mine.key], "writer-01", 5, store.get)
    assert v.suspect and v.reason == "self-ancestor" and v.hit_key == mine.key and v.hit_depth == 1


def test_hit_exactly_at_depth_limit_and_just_past_it(store: CMBStore) -> None:
    chain = Chain(store)
    mine = chain.add(ME, "root")
    chain.add(ALICE, "a1")
    chain.add(BOB, "b1")
    admitted = chain.add(ALICE, "a2")  # mine is 4 hops back from the proposal
    at_limit = detect_cycle({"focus": "x"}, [admitted.key], "writer-01", 4, store.get)
    assert at_limit.suspect and at_limit.hit_depth == 4 and at_limit.hit_key == mine.key
    past = detect_cycle({"focus": "x"}, [admitted.key], "writer-01", 3, store.get)
    assert not past.suspect and past.reason == "clean"


def test_nearest_hit_is_reported_first(store: CMBStore) -> None:
    chain = Chain(store)
    chain.add(ME, "old")
    chain.add(ALICE, "a")
    near = chain.add(ME, "new")
    admitted = chain.add(BOB, "b")
    v = detect_cycle({"focus": "x"}, [admitted.key], "writer-01", 5, store.get)
    assert v.hit_key == near.key and v.hit_depth == 2


def test_missing_ancestors_are_skipped_not_fatal(store: CMBStore) -> None:
    chain = Chain(store)
    mine = chain.add(ME, "mine")
    other = chain.add(ALICE, "other", parents=[])
    admitted = chain.add(BOB, "merge", parents=[other, mine])
    v = detect_cycle({"focus": "x"}, ["cmb1-" + "0" * 64, admitted.key], "writer-01", 5, store.get)
    assert v.suspect and v.hit_key == mine.key and v.hit_depth == 2

    def broken(key: str) -> CMB | None:
        raise RuntimeError("store entry unreadable")

    assert detect_cycle({"focus": "x"}, [admitted.key], "writer-01", 5, broken).reason == "clean"


def test_non_empty_commitment_is_exempt_but_neutral_is_not(store: CMBStore) -> None:
    chain = Chain(store)
    mine = chain.add(ME, "plan")
    exempt = detect_cycle({"commitment": "I will open the PR"}, [mine], "writer-01", 5, store.get)
    assert not exempt.suspect and exempt.reason == "commitment-exception"
    for empty in ("", "   ", "neutral", "Neutral"):
        v = detect_cycle({"commitment": empty}, [mine], "writer-01", 5, store.get)
        assert v.suspect, empty


def test_others_only_lineage_is_clean_and_cycles_in_lineage_terminate(store: CMBStore) -> None:
    chain = Chain(store)
    chain.add(ALICE, "a")
    admitted = chain.add(BOB, "b")
    assert detect_cycle({"focus": "x"}, [admitted.key], "writer-01", 64, store.get).reason == "clean"
    assert detect_cycle({"focus": "x"}, [], "writer-01", 5, store.get).reason == "clean"

    class Loop:  # a malformed lineage that points at itself must not spin forever
        key = "k"
        created_by = "alice"
        parents = ["k"]

    assert detect_cycle({"focus": "x"}, [Loop()], "writer-01", 64, lambda k: Loop()).reason == "clean"


def test_cmbs_given_directly_need_no_resolver_at_depth_1() -> None:
    mine = mint({"focus": "p"}, identity=ME, group="g", created_at=1)
    v = detect_cycle({"focus": "x"}, [mine], "writer-01", 1)
    assert v.suspect and v.hit_depth == 1
    assert detect_cycle({"focus": "x"}, [mine.key], "writer-01", 1).reason == "clean"
