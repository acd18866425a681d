"""The peer caps glibc's malloc arenas (workers/memory.py); the environment's MALLOC_ARENA_MAX wins."""

from __future__ import annotations

import subprocess
import sys

import pytest

from xmesh_agent.workers.memory import limit_malloc_arenas

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")


def test_limit_applies_once_and_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    probe = "from xmesh_agent.workers.memory import limit_malloc_arenas as f; print(f())"
    ours = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert ours.stdout.strip() == "True", ours.stderr
    theirs = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        env={"MALLOC_ARENA_MAX": "4", "PATH": ""},
    )
    assert theirs.stdout.strip() == "False", theirs.stderr
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert limit_malloc_arenas() is False
