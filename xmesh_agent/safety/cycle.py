"""Cycle detection: would this peer be answering (a descendant of) itself?

Two agents that each wake on the other's output can ping-pong forever. Before emitting, the wake walks
the proposal's lineage breadth-first, nearest first, up to `depth` hops; if any ancestor was authored by
this peer, the emission is suspect and suppressed. A proposal carrying a real commitment is exempt: a
commitment is progress (someone promised something), not an echo.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

from pydantic import BaseModel

NEUTRAL = "neutral"


class CMBLike(Protocol):
    """What the walk needs of a CMB: its key, author and lineage (xmesh_agent.mmp.cmb.CMB fits)."""

    key: str
    created_by: str

    @property
    def parents(self) -> list[str]: ...


Resolver = Callable[[str], "CMBLike | None"]


class Verdict(BaseModel):
    suspect: bool
    reason: Literal["self-ancestor", "commitment-exception", "clean"]
    hit_key: str | None = None
    hit_depth: int | None = None


def _text(value: Any) -> str:
    """A field as text, whether given as a string or as a CMB field object / dict with `text`."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        value = value.get("text", "")
        return value if isinstance(value, str) else ""
    text = getattr(value, "text", "")
    return text if isinstance(text, str) else ""


def has_commitment(fields: Mapping[str, Any]) -> bool:
    text = _text(fields.get("commitment", "")).strip()
    return bool(text) and text.lower() != NEUTRAL


def _next_keys(cmb: Any) -> list[str]:
    """The keys one hop further back: direct parents, or the ancestor list when parents are absent."""
    try:
        keys = list(getattr(cmb, "parents", None) or getattr(cmb, "ancestors", None) or [])
    except TypeError:
        return []
    return [k for k in keys if isinstance(k, str) and k]


def detect_cycle(
    proposed_fields: Mapping[str, Any],
    ancestors: Sequence[str | CMBLike],
    self_name: str,
    depth: int,
    resolver: Resolver | None = None,
) -> Verdict:
    """Suspect when an ancestor within `depth` hops was authored by `self_name`.

    `ancestors` are the proposal's depth-1 lineage (normally the CMB that woke us), given as CMBs or
    as keys for `resolver`; deeper levels follow each CMB's parents through `resolver`. Keys that do
    not resolve, or that the resolver fails on, are skipped. `hit_depth` is 1 for a direct parent.
    """
    if has_commitment(proposed_fields):
        return Verdict(suspect=False, reason="commitment-exception")
    if not ancestors or depth < 1:
        return Verdict(suspect=False, reason="clean")

    def resolve(item: str | CMBLike) -> CMBLike | None:
        if not isinstance(item, str):
            return item
        if resolver is None:
            return None
        try:
            return resolver(item)
        except Exception:  # a broken store entry must not crash the wake; the key is skipped
            return None

    seen: set[str] = set()
    frontier: list[str | CMBLike] = list(ancestors)
    for level in range(1, depth + 1):
        following: list[str | CMBLike] = []
        for item in frontier:
            key = item if isinstance(item, str) else getattr(item, "key", None)
            if isinstance(key, str):
                if key in seen:
                    continue
                seen.add(key)
            cmb = resolve(item)
            if cmb is None:
                continue
            if getattr(cmb, "created_by", None) == self_name:
                return Verdict(suspect=True, reason="self-ancestor", hit_key=key, hit_depth=level)
            following.extend(_next_keys(cmb))
        frontier = following
        if not frontier:
            break
    return Verdict(suspect=False, reason="clean")
