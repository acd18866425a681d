"""Response routing: answer the whole group, or only the peer whose CMB woke us.

broadcast: always the whole group. targeted: the originator when it is connected, else the group (a
reply to a peer that is gone would be lost). auto: in a mesh of at most two peers a broadcast reaches
the originator anyway, so broadcast; in a larger mesh behave as targeted, to keep the others quiet.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, NamedTuple

RoutingMode = Literal["broadcast", "targeted", "auto"]
AUTO_BROADCAST_MAX_PEERS = 2


class Route(NamedTuple):
    kind: Literal["broadcast", "targeted"]
    to: str | None


BROADCAST = Route("broadcast", None)


def choose_route(
    mode: RoutingMode, originator_name: str | None, connected_peer_names: Iterable[str]
) -> Route:
    """Where an emission goes. `connected_peer_names` are the names of the peers connected right now."""
    if mode not in ("broadcast", "targeted", "auto"):
        raise ValueError(f"unknown routing mode {mode!r} (expected broadcast, targeted or auto)")
    if mode == "broadcast":
        return BROADCAST
    peers = {p for p in connected_peer_names if isinstance(p, str) and p}
    if mode == "auto" and len(peers) <= AUTO_BROADCAST_MAX_PEERS:
        return BROADCAST
    if originator_name and originator_name in peers:
        return Route("targeted", originator_name)
    return BROADCAST
