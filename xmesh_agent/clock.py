"""Wall-clock time in the units the wire uses.

MMP timestamps, store arrival times and ledgers all count milliseconds since the Unix epoch;
this is the one place that reads the clock for them (workflows never call it).
"""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the Unix epoch, as MMP's `createdAt` and `timestamp` carry them."""
    return time.time_ns() // 1_000_000
