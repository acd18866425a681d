"""Every agent.toml the original Node runtime ships loads here unchanged and passes dry-run."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.fakes.model_servers import FakeOllamaServer
from xmesh_agent.cli.app import app
from xmesh_agent.config import load_config

ORIGINAL = Path(__file__).resolve().parents[1] / "data" / "original-configs"
CONFIGS = sorted(p for p in ORIGINAL.iterdir() if p.name.endswith((".toml", ".toml.example")))


def test_the_fixtures_are_all_there():
    assert len(CONFIGS) == 16
    assert {tomllib.loads(p.read_text())["model"]["adapter"] for p in CONFIGS} == {
        "anthropic",
        "openai",
        "ollama",
        "mistral",
    }


@pytest.fixture
def ollama():
    models = {tomllib.loads(p.read_text())["model"].get("model_name") for p in CONFIGS}
    with FakeOllamaServer(models=sorted(m for m in models if m)) as srv:
        yield srv


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_original_config_passes_dry_run(
    path: Path, ollama: FakeOllamaServer, monkeypatch: pytest.MonkeyPatch
):
    for env in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "MISTRAL_API_KEY"):
        monkeypatch.setenv(env, "test-key-not-used")
    monkeypatch.setenv("OLLAMA_HOST", ollama.base_url)
    cfg = load_config(path)
    assert cfg.name == tomllib.loads(path.read_text())["identity"]["name"]
    result = CliRunner().invoke(app, ["dry-run", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "FAIL" not in result.output
