"""Multi-host fixtures: hosts are network namespaces on a bridge (see lan.py). Root only.

`make_lan(n, multicast=True)` gives a Lan of n hosts (10.231.7.11, .12, ...), each with its own
XMESH_HOME and same-host registry; everything it started and every namespace go at teardown,
whether the test passed or not.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.multihost.lan import Lan, why_unavailable

_REASON: list[str | None] = []


def _unavailable() -> str | None:
    if not _REASON:
        _REASON.append(why_unavailable())
    return _REASON[0]


@pytest.fixture
def make_lan(tmp_path: Path) -> Iterator[Callable[..., Lan]]:
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    lans: list[Lan] = []

    def make(n_hosts: int, multicast: bool = True) -> Lan:
        lan = Lan(tmp_path / f"lan{len(lans)}", tag=f"m{os.getpid() % 100000}{chr(97 + len(lans))}")
        lans.append(lan)
        return lan.open(n_hosts, multicast=multicast)

    try:
        yield make
    finally:
        for lan in lans:
            lan.close()
