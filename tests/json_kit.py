"""Checking the one key style of every JSON a user reads: snake_case at every depth."""

from __future__ import annotations

from typing import Any

from xmesh_agent.jsonkeys import SNAKE


def non_snake_keys(data: Any, where: str = "$") -> list[str]:
    """Paths of every mapping key, at any depth, that is not snake_case."""
    bad: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if not (isinstance(key, str) and SNAKE.match(key)):
                bad.append(f"{where}.{key}")
            bad += non_snake_keys(value, f"{where}.{key}")
    elif isinstance(data, list):
        for i, value in enumerate(data):
            bad += non_snake_keys(value, f"{where}[{i}]")
    return bad
