"""One reading of a duration for every option and file that takes one (`300`, `90s`, `5m`, `1h`)."""

from __future__ import annotations

import re

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
