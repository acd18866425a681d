"""Response routing: broadcast, targeted with fallback, auto by mesh size."""

from __future__ import annotations

import pytest

from xmesh_agent.safety.routing import choose_route


def test_broadcast_always_broadcasts() -> None:
    assert choose_route("broadcast", "alice", ["alice", "bob", "carol"]) == ("broadcast", None)


def test_targeted_goes_to_a_connected_originator_else_falls_back() -> None:
    assert choose_route("targeted", "alice", ["alice"]) == ("targeted", "alice")
    assert choose_route("targeted", "alice", ["bob"]) == ("broadcast", None)
    assert choose_route("targeted", None, ["bob"]) == ("broadcast", None)
    assert choose_route("targeted", "Alice", ["alice"]) == ("broadcast", None), "names match exactly"


def test_auto_broadcasts_up_to_two_peers_and_targets_beyond() -> None:
    assert choose_route("auto", "alice", []) == ("broadcast", None)
    assert choose_route("auto", "alice", ["alice", "bob"]) == ("broadcast", None)
    assert choose_route("auto", "alice", ["alice", "bob", "carol"]) == ("targeted", "alice")
    assert choose_route("auto", "dave", ["alice", "bob", "carol"]) == ("broadcast", None)
    assert choose_route("auto", "alice", ["alice", "alice", "bob"]) == ("broadcast", None), "distinct peers"


def test_route_unpacks_and_bad_mode_is_a_clear_error() -> None:
    kind, to = choose_route("targeted", "bob", iter(["bob", ""]))
    assert (kind, to) == ("targeted", "bob")
    with pytest.raises(ValueError, match="routing mode"):
        choose_route("multicast", "bob", ["bob"])  # type: ignore[arg-type]
