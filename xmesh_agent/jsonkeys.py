"""One key style for every JSON a user or a script reads (`--json`, `run --summary`): snake_case."""

from __future__ import annotations

import re
from typing import Any

_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
SNAKE = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)*$")


def snake(key: str) -> str:
    """`uptimeSeconds` -> `uptime_seconds`, `budget-exceeded` -> `budget_exceeded`, `hour_usd` stays."""
    return _HUMP.sub("_", key).replace("-", "_").replace(" ", "_").lower()


def snake_keys(data: Any) -> Any:
    """The same data with every mapping key, at every depth, in snake_case (values untouched)."""
    if isinstance(data, dict):
        return {snake(str(k)) if isinstance(k, str) else k: snake_keys(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [snake_keys(v) for v in data]
    return data
