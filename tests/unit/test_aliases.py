"""AliasMap stays bounded and keeps the newest mappings: a peer that runs for weeks still maps what it hears."""

from __future__ import annotations

from xmesh_agent.mmp.dialects.aliases import AliasMap


def test_past_its_limit_the_oldest_aliases_go_and_new_ones_are_learnt() -> None:
    aliases = AliasMap(limit=3)
    for i in range(5):
        aliases.learn({f"theirs-{i}": f"cmb1-{i}"})
    assert dict(aliases) == {"theirs-2": "cmb1-2", "theirs-3": "cmb1-3", "theirs-4": "cmb1-4"}
    assert aliases.theirs()["cmb1-4"] == "theirs-4"


def test_an_alias_heard_again_is_kept_as_the_newest() -> None:
    aliases = AliasMap(limit=2)
    aliases.learn({"a": "cmb1-a", "b": "cmb1-b"})
    aliases.learn({"a": "cmb1-a"})
    aliases.learn({"c": "cmb1-c"})
    assert set(aliases) == {"a", "c"}
