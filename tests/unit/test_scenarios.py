"""Every scenario and peer file loads, each peer's α weights match its role, and reruns get fresh seeds."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xmesh_agent.cli.app import app
from xmesh_agent.config import ConfigError, load_config
from xmesh_agent.durations import parse_duration
from xmesh_agent.roles import preset_weights
from xmesh_agent.scenario import DEFAULT_SCENARIO, SCENARIOS_DIR, load_scenario, resolve

PEER_FILES = sorted((SCENARIOS_DIR / "peers").rglob("*.toml"))
SCENARIO_FILES = sorted(SCENARIOS_DIR.glob("*.toml"))
ROLES = ["writer", "reviewer", "test-writer", "auditor", "security-reviewer", "doc-writer", "spec-drafter"]


def test_every_role_has_a_peer_for_every_vendor():
    for vendor_dir, adapter in (
        ("", "offline"),
        ("openai", "openai"),
        ("anthropic", "anthropic"),
        ("ollama", "ollama"),
        ("mistral", "mistral"),
    ):
        for role in ROLES:
            path = SCENARIOS_DIR / "peers" / vendor_dir / f"{role}.toml"
            cfg = load_config(path)
            assert cfg.identity.role == role and cfg.model.adapter == adapter, path


@pytest.mark.parametrize("path", PEER_FILES, ids=lambda p: str(p.relative_to(SCENARIOS_DIR)))
def test_peer_weights_match_role_and_demo_budget(path):
    cfg = load_config(path)
    raw = tomllib.loads(path.read_text())
    assert "role_weights" in raw, "weights are written out, so a reader sees them"
    assert cfg.weights == preset_weights(cfg.identity.role or ""), (
        f"{path}: weights differ from the role preset"
    )
    assert cfg.budget.max_cost_usd_per_run == 2.0 and cfg.budget.max_wakes_per_minute == 10


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=lambda p: p.stem)
def test_scenario_loads_with_distinct_peers(path):
    spec, configs = load_scenario(path)
    assert spec.scenario.name == path.stem
    names = [c.name for c in configs]
    assert len(set(names)) == len(names), "peer names must be unique on the mesh"
    assert any(spec.seed.get(f) for f in ("focus", "intent", "issue"))
    if spec.scenario.duration:
        assert 0 < parse_duration(spec.scenario.duration) <= 3600


def test_named_scenarios_and_trio_is_the_default():
    assert DEFAULT_SCENARIO == "trio"
    roles = {
        name: sorted(c.identity.role or "" for c in load_scenario(resolve(name))[1])
        for name in ("trio", "pair", "security", "spec-docs", "mixed-vendor")
    }
    assert roles["trio"] == ["reviewer", "test-writer", "writer"]
    assert roles["security"] == ["reviewer", "security-reviewer", "test-writer", "writer"]
    assert roles["spec-docs"] == ["doc-writer", "spec-drafter"]
    assert roles["mixed-vendor"] == roles["trio"]
    adapters = {c.model.adapter for c in load_scenario(resolve("mixed-vendor"))[1]}
    assert adapters == {"anthropic", "openai", "ollama"}
    assert resolve(None).stem == "trio"


def test_soak_tasks_round_robin():
    spec, _ = load_scenario(resolve("trio"))
    assert spec.tasks, "the trio has further tasks for soak mode"
    cycle = len(spec.tasks) + 1
    seeds = [spec.task(i)["focus"] for i in range(cycle + 2)]
    assert seeds[0] == spec.seed["focus"] and seeds[1] == spec.tasks[0]["focus"]
    assert seeds[cycle] == seeds[0] and seeds[cycle + 1] == seeds[1]


def test_unknown_scenario_is_a_clear_error():
    with pytest.raises(ConfigError, match="known: .*trio"):
        resolve("no-such-scenario")


def test_demo_cli_usage_errors_exit_2():
    runner = CliRunner()
    assert runner.invoke(app, ["demo", "no-such-scenario"]).exit_code == 2
    assert runner.invoke(app, ["demo", "--chaos", "10s"]).exit_code == 2
    assert runner.invoke(app, ["demo", "--model", "gpt"]).exit_code == 2
    assert runner.invoke(app, ["demo", "--duration", "soon"]).exit_code == 2


def _demo(scenario: Path) -> subprocess.CompletedProcess[str]:
    cli = str(Path(sys.executable).parent / "xmesh-agent")
    return subprocess.run([cli, "demo", str(scenario)], capture_output=True, text=True, timeout=60)


def test_a_scenario_file_reports_every_problem_with_its_toml_path(tmp_path):
    """As `demo <file>` meets it: an unknown key in [seed] is refused, and no problem hides another."""
    bad = tmp_path / "bad.toml"
    bad.write_text(
        "[scenario]\n"
        'name = "bad"\n'
        f'peers = ["{SCENARIOS_DIR / "peers" / "reviewer.toml"}"]\n'
        'duration = "5 minutes"\n'
        'colour = "red"\n'
        "[seed]\n"
        'focus = "rate limiter"\n'
        'focsu = "typo"\n'
        "[[tasks]]\n"
        "focus = 3\n"
    )
    result = _demo(bad)
    assert result.returncode == 2, result.stderr
    problems = [line for line in result.stderr.splitlines() if line.startswith(f"{bad}: ")]
    paths = sorted(line.split(": ")[1] for line in problems)
    assert paths == ["scenario.colour", "scenario.duration", "seed.focsu", "tasks.0.focus"], result.stderr
    assert "unknown key" in next(line for line in problems if "seed.focsu" in line)
    assert "Traceback" not in result.stderr and "4 problem(s)" in result.stderr


def test_every_bad_peer_file_of_a_scenario_is_reported(tmp_path):
    for name in ("a", "b"):
        (tmp_path / f"{name}.toml").write_text(f'[identity]\nname = "{name}"\n[mesh]\ngroup = "g"\n')
    scenario = tmp_path / "two.toml"
    scenario.write_text('[scenario]\nname = "two"\npeers = ["a.toml", "b.toml"]\n[seed]\nfocus = "x"\n')
    result = _demo(scenario)
    assert result.returncode == 2, result.stderr
    assert "scenario.peers.0 (a.toml): [model]: missing required section" in result.stderr
    assert "scenario.peers.1 (b.toml): [model]: missing required section" in result.stderr
