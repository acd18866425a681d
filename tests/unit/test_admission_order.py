"""Admission follows store order: the anchors of a CMB are what the peer held when it was stored.

So the same arrival sequence gives the same decisions however the wakes are scheduled: two
identical replies arriving in one read are admitted once, a wake started late or replayed decides
as one started at once, and the in-memory window answers exactly as the store would after a restart.
"""

from __future__ import annotations

import asyncio
import math
import random
from pathlib import Path

import pytest

from xmesh_agent.clock import now_ms
from xmesh_agent.config import parse_config
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.admission.encoder import DEFAULT_ENCODER, admit_stored, config_for
from xmesh_agent.mmp.admission.svaf import FieldDrift, SvafConfig, evaluate, evaluate_units
from xmesh_agent.mmp.cmb import CMB, mint
from xmesh_agent.mmp.store import CMBStore
from xmesh_agent.wake.steps import ANCHOR_WINDOW, WakeSteps

NOW = now_ms()  # admission judges ages at arrival, which is now
GROUP = "g"
WORDS = [
    "relay",
    "auth",
    "timeout",
    "token",
    "bucket",
    "limiter",
    "docs",
    "review",
    "billing",
    "search",
    "upload",
    "export",
    "cache",
    "login",
]
QUESTION = {"focus": "token bucket or leaky bucket per API key for the login limiter"}
REPLY = {"focus": "token bucket per API key", "intent": "cap bursts at 20 requests per second"}


def _ids(*names: str) -> list[NodeIdentity]:
    return [NodeIdentity.generate(n) for n in names]


def _random_texts(rng: random.Random) -> dict[str, str]:
    fields = {f: " ".join(rng.sample(WORDS, rng.randint(1, 4))) for f in ("focus", "issue", "intent")}
    if rng.random() < 0.3:
        fields["mood"] = "neutral"
    return fields


def _decide(store: CMBStore, key: str, limit: int = ANCHOR_WINDOW):
    view = store.admission_view(key, GROUP, limit)
    assert view is not None
    return admit_stored(*view, None)


def _same(a, b) -> None:
    assert (a.decision, a.total_drift, a.max_nearest_drift) == (
        b.decision,
        b.total_drift,
        b.max_nearest_drift,
    )


# --- two identical texts in one read --------------------------------------------------------------


def test_identical_roots_share_a_key_so_the_second_is_a_duplicate(tmp_path: Path) -> None:
    """Why the pair below is made of replies: a root key binds only the texts, so two authors' identical
    root CMBs are one key, and the second is never stored (nor woken for)."""
    alice, bob = _ids("alice", "bob")
    store = CMBStore(tmp_path / "s.db")
    first = mint(REPLY, identity=alice, group=GROUP, created_at=NOW)
    second = mint(REPLY, identity=bob, group=GROUP, created_at=NOW)
    assert first.key == second.key
    assert store.put(first, source="alice") and not store.put(second, source="bob")
    store.close()


async def test_two_identical_replies_in_one_read_first_admitted_second_redundant(tmp_path: Path) -> None:
    """Two authors answer the same CMB in the same words: every compared field is identical, but a
    reply's key binds its author's node id, so both are stored. Both land in one loop iteration (one
    group commit, as the frames of one read do) before either wake runs."""
    asker, alice, bob = _ids("asker", "alice", "bob")
    store = CMBStore(tmp_path / "s.db")
    question = mint(QUESTION, identity=asker, group=GROUP, created_at=NOW)
    store.put(question, source="asker")
    await asyncio.sleep(0)  # committed
    first = mint(REPLY, identity=alice, group=GROUP, created_at=NOW + 10, parents=[question])
    second = mint(REPLY, identity=bob, group=GROUP, created_at=NOW + 20, parents=[question])
    assert first.key != second.key and first.texts() == second.texts()
    assert store.put(first, source="alice") and store.put(second, source="bob")  # one transaction
    await asyncio.sleep(0)
    # the wakes run after both were stored, in either order: the decisions do not depend on it
    later, earlier = _decide(store, second.key), _decide(store, first.key)
    assert earlier.accepted, earlier
    assert later.decision == "redundant", later
    store.close()


async def test_the_wake_step_decides_the_pair_the_same_way(tmp_path: Path) -> None:
    me, asker, alice, bob = _ids("me", "asker", "alice", "bob")
    cfg = parse_config(
        {
            "identity": {"name": "me", "role": "reviewer"},
            "mesh": {"group": GROUP},
            "model": {"adapter": "offline"},
        }
    )
    store = CMBStore(tmp_path / "s.db")
    steps = WakeSteps(cfg, me, store, None, None, None, None)  # type: ignore[arg-type]  # admit reads config + store
    question = mint(QUESTION, identity=asker, group=GROUP, created_at=NOW)
    first = mint(REPLY, identity=alice, group=GROUP, created_at=NOW + 10, parents=[question])
    second = mint(REPLY, identity=bob, group=GROUP, created_at=NOW + 20, parents=[question])
    for cmb in (question, first, second):
        store.put(cmb, source=cmb.created_by)
    assert (await steps._admit(second.key)).decision == "redundant"
    assert (await steps._admit(first.key)).admitted
    with pytest.raises(LookupError):
        await steps._admit("cmb1-" + "0" * 64)
    store.close()


# --- late, replayed and restarted wakes ------------------------------------------------------------


def _seed(store: CMBStore, rng: random.Random, authors: list[NodeIdentity], n: int, t0: int) -> list[CMB]:
    out = []
    for i in range(n):
        cmb = mint(
            _random_texts(rng), identity=authors[i % len(authors)], group=GROUP, created_at=t0 + i * 1000
        )
        if store.put(cmb, source=cmb.created_by):
            out.append(cmb)
    return out


def test_a_late_wake_decides_as_one_started_at_once(tmp_path: Path) -> None:
    rng = random.Random(5)
    authors = _ids("a", "b", "c")
    store = CMBStore(tmp_path / "s.db")
    _seed(store, rng, authors, 80, NOW - 3_600_000)
    trigger = mint(
        {"focus": "auth timeout on the relay", "issue": "idle sockets"},
        identity=authors[0],
        group=GROUP,
        created_at=NOW,
    )
    store.put(trigger, source="a")
    at_once = _decide(store, trigger.key)
    # meanwhile: the same texts from another author (would make it redundant), and more traffic
    store.put(
        mint(trigger.texts(), identity=authors[1], group=GROUP, created_at=NOW + 5, parents=[trigger]),
        source="b",
    )
    _seed(store, rng, authors, 120, NOW + 10_000)
    late = _decide(store, trigger.key)
    _same(late, at_once)
    assert at_once.decision != "redundant"
    # a restarted peer (window empty: loaded from SQLite) and a window too small to hold the trigger's
    # anchors (answered by SQL) decide the same
    store.close()
    for capacity in (512, 60, 1):
        reopened = CMBStore(tmp_path / "s.db", window_capacity=capacity)
        _same(_decide(reopened, trigger.key), at_once)
        reopened.close()


def test_window_and_sql_agree_on_every_admission(tmp_path: Path) -> None:
    rng = random.Random(11)
    authors = _ids("a", "b")
    cached = CMBStore(tmp_path / "c.db", window_capacity=70)
    cached.admission_view("none", GROUP, 1)  # held from the start, trimmed as it grows
    stored = [c for c in _seed(cached, rng, authors, 150, NOW)]
    cached.flush()
    plain = CMBStore(tmp_path / "c.db", window_capacity=1)  # the same file, answered by SQL
    decisions = set()
    for cmb in stored:
        mine, theirs = _decide(cached, cmb.key), _decide(plain, cmb.key)
        _same(mine, theirs)
        decisions.add(mine.decision)
    assert {"aligned", "redundant"} <= decisions, decisions
    cached.close()
    plain.close()


def test_pruned_cmbs_stop_being_anchors(tmp_path: Path) -> None:
    alice, bob = _ids("alice", "bob")
    store = CMBStore(tmp_path / "s.db", retention_days=1)
    old = mint(REPLY, identity=alice, group=GROUP, created_at=NOW)
    store.put(old, source="alice")
    again = mint(REPLY, identity=bob, group=GROUP, created_at=NOW + 1, parents=[old])
    store.put(again, source="bob")
    assert _decide(store, again.key).decision == "redundant"
    assert store.prune(now_ms=int(1e15)) == 2  # everything is past retention
    assert store.admission_view(again.key, GROUP, ANCHOR_WINDOW) is None
    store.close()


class BatchEncoder:
    """An encoder with a batch `units` call (as the semantic kernel has), over the default kernel."""

    kernel_id = "batch-ngram"
    dim = DEFAULT_ENCODER.dim

    def __init__(self) -> None:
        self.batches: list[int] = []  # one entry per "model call": texts not yet cached
        self.seen: set[str] = set()

    def units(self, texts: list[str]):
        todo = set(texts) - self.seen
        if todo:
            self.batches.append(len(todo))
            self.seen |= todo
        return [DEFAULT_ENCODER.unit(t) for t in texts]

    def encode(self, text: str) -> list[float]:
        return DEFAULT_ENCODER.encode(text)


def test_a_batch_encoder_is_called_once_per_admission_and_vectors_are_kept(tmp_path: Path) -> None:
    rng = random.Random(2)
    store = CMBStore(tmp_path / "s.db")
    cmbs = _seed(store, rng, _ids("a", "b"), 30, NOW)
    enc = BatchEncoder()
    view = store.admission_view(cmbs[-1].key, GROUP, ANCHOR_WINDOW)
    assert view is not None
    result = admit_stored(*view, None, encoder=enc)
    _same(result, admit_stored(*view, None, config=config_for(None, enc)))
    assert len(enc.batches) == 1
    admit_stored(*view, None, encoder=enc)
    assert len(enc.batches) == 1  # every entry already holds this kernel's vectors
    store.close()


# --- the vectorised math against the reference it replaced ---------------------------------------


def _reference_field(x, anchors, alpha, tau):
    """The pure-Python (math.fsum) field drift the numpy kernel replaced, kept here as the reference."""

    def unit(v):
        n = math.sqrt(math.fsum(a * a for a in v))
        return [a / n for a in v]

    def dot(a, b):
        return math.fsum(p * q for p, q in zip(a, b, strict=True))

    xu = unit(x)
    carried = [(unit(v), max(0.0, age), min(1.0, max(0.0, conf))) for v, age, conf in anchors]
    cosines = [dot(xu, v) for v, _, _ in carried]
    nearest = min(1.0, max(0.0, 1.0 - max(cosines)))
    youngest = min(age for _, age, _ in carried)
    fused = [0.0] * len(xu)
    for (v, age, conf), cos in zip(carried, cosines, strict=True):
        w = alpha * max(cos, 0.0) * math.exp(-(age - youngest) / tau) * conf
        for i, value in enumerate(v):
            fused[i] += w * value
    norm = math.sqrt(math.fsum(v * v for v in fused))
    drift = 1.0 if norm == 0 else min(1.0, max(0.0, 1.0 - dot([v / norm for v in fused], xu)))
    return FieldDrift(drift=drift, nearest_drift=nearest, weight=alpha, anchors=len(carried))


def test_numpy_kernel_matches_the_pure_python_reference() -> None:
    rng = random.Random(3)
    cfg = SvafConfig(field_weights={"focus": 2.0, "issue": 1.0, "intent": 0.5})
    for _ in range(300):
        dim = rng.choice([3, 8, 64])

        def vec(dim: int = dim) -> list[float]:
            return [rng.gauss(0, 1) if rng.random() < 0.6 else 0.0 for _ in range(dim)] + [
                rng.random() + 0.01
            ]

        incoming = {f: vec() for f in ("focus", "issue", "intent") if rng.random() < 0.8}
        anchors = [
            (
                {f: vec() for f in ("focus", "issue", "intent") if rng.random() < 0.7},
                rng.uniform(0, 7200),
                rng.random(),
            )
            for _ in range(rng.randint(1, 12))
        ]
        got = evaluate(incoming, anchors, cfg, age_s=rng.uniform(0, 3600))
        for name, drift in got.per_field.items():
            carried = [(f[name], age, conf) for f, age, conf in anchors if name in f]
            want = _reference_field(incoming[name], carried, cfg.weight(name), cfg.freshness_seconds)
            assert drift.drift == pytest.approx(want.drift, abs=1e-12)
            assert drift.nearest_drift == pytest.approx(want.nearest_drift, abs=1e-12)
            assert drift.anchors == want.anchors


def test_trusted_and_checked_paths_agree_on_encoder_vectors() -> None:
    rng = random.Random(4)
    for _ in range(100):
        incoming = {f: DEFAULT_ENCODER.unit(t) for f, t in _random_texts(rng).items() if t != "neutral"}
        anchors = [
            (
                {f: DEFAULT_ENCODER.unit(t) for f, t in _random_texts(rng).items() if t != "neutral"},
                rng.uniform(0, 9e3),
            )
            for _ in range(rng.randint(1, 20))
        ]
        cfg = config_for({"focus": 2.0})
        fast = evaluate_units(incoming, anchors, cfg, age_s=30.0)
        checked = evaluate(
            {f: list(v) for f, v in incoming.items()},
            [({f: list(v) for f, v in a.items()}, age) for a, age in anchors],
            cfg,
            age_s=30.0,
        )
        assert fast.decision == checked.decision
        assert fast.total_drift == pytest.approx(checked.total_drift, abs=1e-12)
