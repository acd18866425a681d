"""Validators of names, keys and versions refuse a trailing newline.

Python's `$` also matches just before a final newline, so `re.match(r"^...$", "name\n")` succeeds:
each check below once let such a value through. They all match the whole string now.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from xmesh_agent.mmp.dialects.stock_keys import is_stock_key
from xmesh_agent.mmp.discovery.mdns import instance_label, room_type_problem
from xmesh_agent.mmp.handshake import valid_group
from xmesh_agent.mmp.session import Dialect, dialect_of
from xmesh_agent.workers.inspect import InspectError, _quoted


def _quote_ok(value: str) -> bool:
    try:
        _quoted("peer", value)
        return True
    except InspectError:
        return False


CHECKS: list[tuple[str, Callable[[str], bool], str]] = [
    ("handshake group", valid_group, "team"),
    ("stock key", is_stock_key, "cmb-" + "ab" * 32),
    ("mDNS service type", lambda g: room_type_problem(g) is None, "team"),
    ("mDNS instance label", lambda n: instance_label(n) == n, "node-1"),
    ("visibility query value", _quote_ok, "reviewer-01"),
    (
        "pre-1.0 version",
        lambda v: (
            dialect_of({"type": "handshake", "version": v, "room": "x"}) == Dialect.STOCK
            and dialect_of({"type": "handshake", "version": v, "group": "x"}) == Dialect.SYM05
        ),
        "0.12.1",
    ),
]


@pytest.mark.parametrize(("what", "check", "good"), CHECKS, ids=[c[0] for c in CHECKS])
def test_a_trailing_newline_is_refused(what: str, check: Callable[[str], bool], good: str) -> None:
    assert check(good), what
    assert not check(good + "\n"), what
