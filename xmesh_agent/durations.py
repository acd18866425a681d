"""One reading of a duration for every option and file that takes one (`300`, `90s`, `5m`, `1h`), and
one reading of every `--since` (a span back from now, or a date)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|[smh]?)\s*")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str, *, allow_ms: bool = False) -> float:
    """Seconds from `300`, `90s`, `5m`, `1h` (and `2000ms` where `allow_ms`); ValueError otherwise."""
    match = _DURATION.fullmatch(str(text))
    if not match or (match.group(2) == "ms" and not allow_ms):
        units = "ms, s, m or h" if allow_ms else "s, m or h"
        raise ValueError(
            f"{text!r} is not a duration: use a number of seconds or a number with {units}, e.g. 300, 90s, 5m, 1h"
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


_SPAN_BACK = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*", re.IGNORECASE)
_SPAN_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
SINCE_HELP = "a span back from now (90s, 30m, 1h, 2d, 1w) or an ISO date/time (2026-12-01, 2026-12-01T08:00)"


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """One reading of every `--since`: a span back from `now`, or an ISO date/time (UTC unless it
    says); ValueError naming both forms otherwise."""
    now = now or datetime.now(UTC)
    span = _SPAN_BACK.fullmatch(text)
    if span:
        return now - timedelta(seconds=float(span.group(1)) * _SPAN_SECONDS[span.group(2).lower()])
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r}: give {SINCE_HELP}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
