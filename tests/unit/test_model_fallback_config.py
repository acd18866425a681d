"""[model] fallback: the three ways to name a model, what a fallback inherits, and the mistakes named."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xmesh_agent.cli.app import app
from xmesh_agent.config import ConfigError, parse_config, to_toml
from xmesh_agent.models.base import PermanentModelError, TransientModelError
from xmesh_agent.models.common import error_from_status


def config(**model):
    return parse_config({"identity": {"name": "p"}, "mesh": {}, "model": {"adapter": "openai", **model}})


def test_strings_and_tables_make_one_chain_with_inherited_endpoint() -> None:
    cfg = config(
        base_url="http://127.0.0.1:1/v1",
        api_key="sk-primary-key",
        fallback=[
            "gpt-4o",
            "anthropic/claude-sonnet-4-6",
            {"adapter": "ollama", "model_name": "llama3.2:3b", "base_url": "http://127.0.0.1:2"},
            "meta-llama/Llama-3.1-8B",
        ],
    )
    chain = cfg.model.chain()
    assert [m.label for m in chain] == [
        "openai/gpt-4o-mini",
        "openai/gpt-4o",
        "anthropic/claude-sonnet-4-6",
        "ollama/llama3.2:3b",
        "openai/meta-llama/Llama-3.1-8B",
    ]
    same, other = chain[1], chain[2]
    assert (same.base_url, same.api_key) == ("http://127.0.0.1:1/v1", "sk-primary-key")
    assert (other.base_url, other.api_key) == (None, None)  # another vendor: its own env key
    assert chain[3].base_url == "http://127.0.0.1:2"
    assert all(m.fallback == [] for m in chain)


@pytest.mark.parametrize(
    "fallback, expected",
    [
        (["gpt-4o-mini"], "model.fallback: fallback[0] 'openai/gpt-4o-mini' is already in the chain"),
        (["gpt-4o", "openai/gpt-4o"], "fallback[1] 'openai/gpt-4o' is already in the chain"),
        ([3], 'fallback[0] must be "adapter/model", "model" or a table (got 3)'),
        ([{"model_name": "x", "tempo": 1}], "model.fallback.0.tempo: unknown key"),
        ([{"adapter": "vertex", "model_name": "x"}], "model.fallback.0.adapter: Input should be"),
        ([""], "model.fallback.0.model_name: String should have at least 1 character"),
        (["a", "b", "c", "d", "e"], "model.fallback: List should have at most 4 items"),
        ("gpt-4o", "model.fallback: Input should be a valid list"),
    ],
)
def test_each_fallback_mistake_is_one_named_line(fallback, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        config(fallback=fallback)
    assert len(err.value.problems) == 1 and expected in err.value.problems[0], err.value.problems


def test_a_chain_round_trips_through_toml() -> None:
    cfg = config(fallback=["gpt-4o", "anthropic/claude-haiku-4-5-20251001"])
    again = parse_config(tomllib.loads(to_toml(cfg)))
    assert [m.label for m in again.model.chain()] == [m.label for m in cfg.model.chain()]


def test_dry_run_shows_the_chain_and_checks_each_fallback_key(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-key")
    path = tmp_path / "p.toml"
    path.write_text(
        '[identity]\nname = "p"\n[mesh]\n[model]\nadapter = "openai"\n'
        'fallback = ["gpt-4o", "anthropic/claude-sonnet-4-6"]\n'
    )
    out = CliRunner().invoke(app, ["dry-run", "--config", str(path)]).output
    assert "model fallback — openai/gpt-4o-mini -> openai/gpt-4o -> anthropic/claude-sonnet-4-6" in out
    assert "ok   | fallback 1 model key" in out
    assert "FAIL | fallback 2 model key — no anthropic API key: export ANTHROPIC_API_KEY" in out


def test_a_used_up_quota_is_permanent_a_rate_limit_is_not() -> None:
    quota = error_from_status(
        "openai", 429, "You exceeded your current quota, check billing.", {"retry-after": "9"}
    )
    assert isinstance(quota, PermanentModelError) and quota.retry_after is None and "quota" in str(quota)
    credit = error_from_status("anthropic", 400, "Your credit balance is too low to access the API")
    assert isinstance(credit, PermanentModelError)
    limit = error_from_status("openai", 429, "Rate limit reached for gpt-4o", {"retry-after": "9"})
    assert isinstance(limit, TransientModelError) and limit.retry_after == 9


def test_run_refuses_a_fallback_without_its_key_before_connecting(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        '[identity]\nname = "p"\n[mesh]\n[model]\nadapter = "openai"\nbase_url = "http://127.0.0.1:9/v1"\n'
        'fallback = ["gpt-4o", "anthropic/claude-sonnet-4-6"]\n'
    )
    result = CliRunner().invoke(app, ["run", "--config", str(path), "--temporal-address", "127.0.0.1:1"])
    assert result.exit_code == 1
    assert "[model] fallback 2 (anthropic/claude-sonnet-4-6): no anthropic API key" in result.output
