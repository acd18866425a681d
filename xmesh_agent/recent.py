"""A mapping that keeps only its most recently written entries: the one bounded memory for caches a
peer fills for as long as it runs (verified keys, dialect aliases, ended wakes)."""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Recent(OrderedDict[K, V]):
    """At most `limit` entries; writing one makes it the newest, and past the limit the oldest go."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)
