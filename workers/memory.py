"""A peer that runs for weeks keeps its memory flat: at most two malloc arenas (glibc only).

glibc gives every thread that allocates an arena of its own, up to 8 per core; a peer has ~30 threads,
most of them the Temporal core's, and each arena keeps the free space its peak left behind. Fed 10,000
wakes, a peer's anonymous memory outside the main heap grew ~3-4 MB per 1,000 wakes with the default;
with two arenas it stopped growing after the first 2,000 (benchmarks/long_run.py). Threads then share
arenas (a little lock contention on allocation). `MALLOC_ARENA_MAX` in the environment still decides.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_ARENA_MAX = -8
PEER_ARENAS = 2


def limit_malloc_arenas(arenas: int = PEER_ARENAS) -> bool:
    """Cap glibc's malloc arenas for threads started from now on; False where it does not apply."""
    if not sys.platform.startswith("linux") or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(M_ARENA_MAX, arenas) == 1
