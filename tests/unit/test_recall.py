"""recall / show / key lookup over real stores on disk: read-only beside a writing peer, ranked by the
peer's encoder, filtered, caught up as the store grows; prefixes and stock keys resolve."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from xmesh_agent import paths
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.lookup import KeyLookupError, close_all, open_reader, open_readers, resolve_key
from xmesh_agent.mmp.cmb import content_key, mint, minted_texts
from xmesh_agent.mmp.dialects.stock_keys import stock_key_for
from xmesh_agent.mmp.store import CMBStore
from xmesh_agent.recall import Query, RecallError, parse_since, recall, save_profile

T0 = 1_765_000_000_000
TOPICS = [
    {"focus": "token bucket rate limiter for the login endpoint", "intent": "cap bursts per API key"},
    {"focus": "billing export to parquet files", "issue": "invoices spreadsheet too large"},
    {"focus": "translate the onboarding guide", "intent": "ship a german handbook"},
]


def _store(peer: str) -> CMBStore:
    return CMBStore(paths.peer_dir(peer) / "cmbs.db", group_commit=False)


@pytest.fixture
def writer() -> NodeIdentity:
    return NodeIdentity.generate("writer-1")


def _fill(store: CMBStore, ids: list[NodeIdentity], n: int, group: str = "g") -> list:
    out = []
    for i in range(n):
        texts = {k: f"{v} note {i}" for k, v in TOPICS[i % 3].items()}
        cmb = mint(texts, identity=ids[i % len(ids)], group=group, created_at=T0 + i * 60_000)
        store.put(cmb, source="own" if i % 2 else ids[i % len(ids)].name)
        out.append(cmb)
    return out


def test_recall_ranks_by_the_peer_encoder_filters_and_catches_up_beside_a_writer(writer):
    other = NodeIdentity.generate("reviewer-1")
    store = _store("p1")  # stays open for writing, as a running peer's does
    cmbs = _fill(store, [writer, other], 30)
    save_profile("p1", "lexical", {"focus": 2.0}, "g")
    readers = open_readers()
    try:
        hits = recall(readers, Query("parquet billing export", limit=5))
        assert len(hits) == 5 and all("parquet" in h.cmb.text("focus") for h in hits)
        assert hits[0].score is not None and hits[0].score >= hits[-1].score > 0
        assert all(h.peers == ["p1"] for h in hits)

        by_author = recall(readers, Query("rate limiter", author="reviewer-1", limit=50))
        assert by_author and {h.cmb.created_by for h in by_author} == {"reviewer-1"}
        since = recall(readers, Query("", since_ms=T0 + 25 * 60_000, limit=50))
        assert [h.cmb.key for h in since] == [c.key for c in reversed(cmbs[25:])]
        assert recall(readers, Query("rate limiter", group="elsewhere")) == []
        newest = recall(readers, Query("", limit=3))
        assert [h.cmb.key for h in newest] == [c.key for c in reversed(cmbs[-3:])]
        answer = mint(
            {"focus": "limiter answered"}, identity=other, group="g", created_at=T0, parents=[cmbs[0]]
        )
        store.put(answer, source="reviewer-1")
        for text in ("", "limiter"):
            [child] = recall(readers, Query(text, parent=cmbs[0].key))
            assert child.cmb.key == answer.key and child.to_json()["parents"] == [cmbs[0].key]

        fresh = mint(
            {"focus": "parquet billing export checklist"}, identity=writer, group="g", created_at=T0 + 10**7
        )
        store.put(fresh, source="own")  # the writer keeps writing while readers are open
        assert recall(readers, Query("parquet checklist", limit=1))[0].cmb.key == fresh.key
    finally:
        close_all(readers)
        store.close()


def test_recall_searches_every_local_peer_once_per_key(writer):
    shared = mint(TOPICS[0], identity=writer, group="g", created_at=T0)
    for peer in ("a", "b"):
        store = _store(peer)
        store.put(shared, source="writer-1")
        store.close()
    readers = open_readers()
    try:
        [hit] = recall(readers, Query("rate limiter"))
        assert hit.cmb.key == shared.key and hit.peers == ["a", "b"]
        assert hit.to_json()["fields"]["focus"] == TOPICS[0]["focus"]
        assert set(hit.to_json()) >= {"key", "author", "created_at", "parents", "fields"}
    finally:
        close_all(readers)


def test_keys_resolve_by_prefix_and_stock_key_and_ambiguity_lists_candidates(writer):
    store = _store("p1")
    cmbs = _fill(store, [writer], 300)
    store.close()
    with open_reader("p1") as reader:
        target = cmbs[7]
        assert resolve_key(target.key[:16] + "…", [reader]) == target.key
        assert resolve_key(target.key[5:20], [reader]) == target.key  # hex without cmb1-
        assert resolve_key(stock_key_for(target), [reader]) == target.key
        assert resolve_key(stock_key_for(target)[:14], [reader]) == target.key
    seen: dict[str, int] = {}  # two texts whose keys share their first six hex digits
    for i in range(100_000):
        key = content_key(minted_texts({"focus": f"twin {i}"}))
        if key[:11] in seen:
            break
        seen[key[:11]] = i
    store = _store("p1")
    for n in (seen[key[:11]], i):
        store.put(mint({"focus": f"twin {n}"}, identity=writer, group="g", created_at=T0), source="own")
    store.close()
    prefix = key[:11]
    with open_reader("p1") as reader:
        with pytest.raises(KeyLookupError, match="ambiguous: cmb1-") as err:
            resolve_key(prefix, [reader])
        assert str(err.value).count("cmb1-") == 3  # the prefix and both candidates
        for bad, words in [
            ("cmb1-12", "too short"),
            ("nonsense!", "not a CMB key"),
            ("cmb1-" + "f" * 64, "no CMB"),
        ]:
            with pytest.raises(KeyLookupError, match=words):
                resolve_key(bad, [reader])


def test_since_takes_spans_and_iso_dates():
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    base = int(now.timestamp() * 1000)
    assert parse_since("1h", now) == base - 3_600_000
    assert parse_since("2d", now) == base - 2 * 86_400_000
    assert parse_since("30m", now) == base - 1_800_000
    assert parse_since("2026-12-01", now) == int(datetime(2026, 12, 1, tzinfo=UTC).timestamp() * 1000)
    with pytest.raises(RecallError, match="--since 'yesterday'"):
        parse_since("yesterday", now)


def test_recall_indexes_in_memory_when_its_side_index_cannot_be_written(writer):
    store = _store("p1")
    _fill(store, [writer], 9)
    store.close()
    (paths.peer_dir("p1") / "recall-index.db").mkdir()  # as unusable as a directory we may not write
    with open_reader("p1") as reader:
        hits = recall([reader], Query("parquet billing"))
    assert len(hits) == 3 and all("parquet" in h.cmb.text("focus") for h in hits)
