"""The lexical encoder's caches are bounded and fill early: a peer's memory does not creep for days
while they fill (benchmarks/long_run.py), and a cached text or feature gives the same vector as a new one."""

from __future__ import annotations

from xmesh_agent.mmp.admission.encoder import FEATURE_CACHE, TEXT_CACHE, HashedNgramEncoder


def test_numbers_and_names_never_seen_before_stop_growing_the_caches_at_their_bounds() -> None:
    enc = HashedNgramEncoder()
    for i in range(FEATURE_CACHE + 500):
        enc.encode(f"rate limiter case {i} for tenant t{i * 7919}")
    assert enc._buckets.cache_info().currsize == FEATURE_CACHE
    assert enc._cached.cache_info().currsize == TEXT_CACHE
    assert TEXT_CACHE * 512 * 8 <= 4 * 2**20, "the text cache holds at most 4 MiB of vectors"


def test_evicted_texts_and_features_encode_to_the_same_vector() -> None:
    enc, fresh = HashedNgramEncoder(), HashedNgramEncoder()
    first = enc.encode("deploy the rate limiter to staging")
    for i in range(FEATURE_CACHE):
        enc.encode(f"filler {i} w{i}")
    assert (
        enc.encode("deploy the rate limiter to staging")
        == first
        == fresh.encode("deploy the rate limiter to staging")
    )


def test_the_store_keeps_a_small_page_cache(tmp_path) -> None:
    from xmesh_agent.mmp.store import PAGE_CACHE_KIB, CMBStore

    store = CMBStore(tmp_path / "cmbs.db")
    try:
        assert store._db.execute("PRAGMA cache_size").fetchone()[0] == -PAGE_CACHE_KIB
        assert PAGE_CACHE_KIB <= 512
    finally:
        store.close()
