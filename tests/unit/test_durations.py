"""One reading of `--since` for `wakes`, `tail`, `recall` and the MCP tools."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from xmesh_agent.durations import parse_since
from xmesh_agent.recall import RecallError
from xmesh_agent.recall import parse_since as recall_since
from xmesh_agent.workers.inspect import InspectError
from xmesh_agent.workers.inspect import parse_since as wakes_since


def test_every_since_reads_the_same_spans_and_dates() -> None:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    for text, back in (
        ("90s", 90),
        ("30m", 1800),
        ("10min", 600),
        ("1.5h", 5400),
        ("2d", 172800),
        ("1W", 604800),
    ):
        expected = now - timedelta(seconds=back)
        assert parse_since(text, now) == wakes_since(text, now) == expected, text
        assert recall_since(text, now) == int(expected.timestamp() * 1000), text
    assert parse_since("2026-12-01", now) == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_since("2026-12-01T08:00+01:00", now) == datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
    for bad, error in (("yesterday", InspectError), ("5 fortnights", InspectError)):
        with pytest.raises(error, match="90s, 30m, 1h, 2d, 1w"):
            wakes_since(bad, now)
    with pytest.raises(RecallError, match="ISO date"):
        recall_since("yesterday", now)
