"""Which of our `cmb1-` keys a foreign dialect's block key stands for, and back.

A stock or sym 0.5 peer names blocks by its own key; we store them under ours. Parents arriving
in their terms are mapped to ours, and parents we send are mapped to theirs. Bounded: past
`MAX_ALIASES` entries the oldest are forgotten (lineage to a block that old falls back to recomputed
keys), so a peer that runs for weeks keeps mapping the blocks it hears now.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from xmesh_agent.recent import Recent

MAX_ALIASES = 10_000


class AliasMap(Mapping[str, str]):
    """Their key -> our key, read as a Mapping by the codecs."""

    def __init__(self, limit: int = MAX_ALIASES):
        self._ours: dict[str, str] = Recent(limit)

    def learn(self, aliases: Mapping[str, str]) -> None:
        for theirs, ours in aliases.items():
            self._ours[theirs] = ours

    def theirs(self) -> dict[str, str]:
        """Our key -> their key."""
        return {ours: theirs for theirs, ours in self._ours.items()}

    def __getitem__(self, key: str) -> str:
        return self._ours[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ours)

    def __len__(self) -> int:
        return len(self._ours)
