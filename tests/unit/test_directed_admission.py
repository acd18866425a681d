"""MMP §9.2.2: a CMB directed to this peer (`to` = its node id) surfaces whatever SVAF says; SVAF then
only says whether it is kept in memory (the `remixed` indicator). A broadcast stays SVAF-gated.

And §19.2: memory older than the profile's retention stops anchoring admission.
"""

from __future__ import annotations

import time
from pathlib import Path

from xmesh_agent.config import parse_config
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import mint
from xmesh_agent.mmp.store import CMBStore
from xmesh_agent.wake.steps import admission

GROUP = "g"
TOPIC = {
    "focus": "token bucket rate limiter for the login endpoint",
    "issue": "bursts of login attempts exhaust the limiter",
    "intent": "cap bursts at twenty requests per second per API key",
}
OTHER = {
    "focus": "migrate the billing export to parquet files",
    "issue": "nightly invoices spreadsheet grows too large",
    "intent": "write monthly partitions to object storage",
}
THIRD = {
    "focus": "translate the onboarding guide into german",
    "issue": "new customers in vienna cannot read the setup chapter",
    "intent": "ship a localized handbook before the fair",
}


def _config(**mesh):
    return parse_config(
        {
            "identity": {"name": "rev", "role": "reviewer"},
            "mesh": {"group": GROUP, **mesh},
            "model": {"adapter": "offline"},
        }
    )


def _store_with_history(tmp_path: Path, author: NodeIdentity, now: int) -> CMBStore:
    """Six CMBs about one topic: the peer's memory."""
    store = CMBStore(tmp_path / "cmbs.db", group_commit=False)
    for i in range(6):
        texts = {k: f"{v} (take {i})" for k, v in TOPIC.items()}
        store.put(mint(texts, identity=author, group=GROUP, created_at=now - 1000 + i), source=author.name)
    return store


async def test_a_directed_cmb_on_another_topic_is_delivered_and_svaf_only_judges_memory(tmp_path):
    me, op = NodeIdentity.generate("rev"), NodeIdentity.generate("operator-x")
    now = int(time.time() * 1000)
    store = _store_with_history(tmp_path, op, now)
    config = _config()

    broadcast = mint(OTHER, identity=op, group=GROUP, created_at=now)
    store.put(broadcast, source=op.name)
    gated = await admission(store, config, broadcast.key, node_id=me.node_id)
    assert not gated.admitted and gated.decision == "rejected" and not gated.directed

    directed = mint(THIRD, identity=op, group=GROUP, created_at=now, to=me.node_id)
    store.put(directed, source=op.name)
    verdict = await admission(store, config, directed.key, node_id=me.node_id)
    assert verdict.admitted and verdict.directed
    assert verdict.decision == "rejected"  # SVAF's memory verdict, recorded beside the delivery
    assert verdict.remixed is False
    assert "directed" in verdict.reason and "not kept" in verdict.reason


async def test_a_directed_cmb_svaf_admits_is_remixed_and_one_to_another_peer_is_gated(tmp_path):
    me, op, other = (NodeIdentity.generate(n) for n in ("rev", "operator-x", "writer"))
    now = int(time.time() * 1000)
    store = _store_with_history(tmp_path, op, now)
    config = _config()
    on_topic = mint(
        {**TOPIC, "commitment": "review the limiter today"},
        identity=op,
        group=GROUP,
        created_at=now,
        to=me.node_id,
    )
    store.put(on_topic, source=op.name)
    verdict = await admission(store, config, on_topic.key, node_id=me.node_id)
    assert verdict.admitted and verdict.directed and verdict.remixed is True
    assert verdict.decision in ("aligned", "guarded")

    elsewhere = mint(OTHER, identity=op, group=GROUP, created_at=now, to=other.node_id)
    store.put(elsewhere, source=op.name)
    verdict = await admission(store, config, elsewhere.key, node_id=me.node_id)
    assert not verdict.admitted and not verdict.directed


async def test_memory_older_than_retention_stops_anchoring(tmp_path):
    op = NodeIdentity.generate("operator-x")
    now = int(time.time() * 1000)
    store = _store_with_history(tmp_path, op, now)
    fresh = mint(OTHER, identity=op, group=GROUP, created_at=now)
    store.put(fresh, source=op.name)
    # the six anchors were stored just now: within any retention, they reject the other topic
    assert not (await admission(store, _config(), fresh.key)).admitted
    # a new topic arriving 8 days after them, with a 7-day memory: the old topic no longer anchors
    store.flush()
    store._db.execute(
        "UPDATE cmbs SET received_at = received_at - ? WHERE key != ?", (8 * 86_400_000, fresh.key)
    )
    store.anchors.clear()
    later = await admission(store, _config(memory_days=7), fresh.key)
    assert later.admitted and later.decision == "aligned"
    kept = await admission(store, _config(memory_days=30), fresh.key)
    assert not kept.admitted


def test_role_presets_set_freshness_and_memory_and_schema_shows_them():
    from xmesh_agent.config import json_schema

    config = _config()
    assert config.mesh.freshness_seconds == 7200 and config.mesh.memory_days == 7
    override = _config(freshness_seconds=600, memory_days=1)
    assert override.mesh.freshness_seconds == 600 and override.mesh.memory_days == 1
    mesh = json_schema()["$defs"]["MeshConfig"]["properties"]
    assert "freshness_seconds" in mesh and "memory_days" in mesh
