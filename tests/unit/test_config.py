"""agent.toml: defaults, role presets, and one clear line per problem (never a traceback)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xmesh_agent.cli.app import app
from xmesh_agent.clock import now_ms
from xmesh_agent.config import ConfigError, load_config, mesh_reach, parse_config, to_toml

MINIMAL = '[identity]\nname = "rev-01"\nrole = "reviewer"\n[mesh]\n[model]\nadapter = "offline"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_minimal_config_takes_the_original_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL))
    assert (cfg.context.k_lineage, cfg.context.n_own, cfg.context.n_group) == (3, 5, 10)
    assert cfg.context.max_context_tokens == 8000
    b = cfg.budget
    assert (b.max_wakes_per_minute, b.max_wakes_per_hour, b.max_wakes_per_day) == (10, 100, 1000)
    assert (b.max_cost_usd_per_hour, b.max_cost_usd_per_day, b.max_cost_usd_per_run) == (1.0, 10.0, 5.0)
    assert cfg.safety.cycle_depth == 5 and cfg.safety.approval_gates == "default"
    assert cfg.routing.response_routing == "broadcast"
    assert cfg.model.max_tokens_per_call == 1024
    assert (cfg.logging.max_file_size, cfg.logging.keep) == (5 * 1024 * 1024, 5)
    assert cfg.group == "default"
    # no [role_weights]: the reviewer preset
    assert cfg.weights["issue"] == 2.5 and cfg.weights["commitment"] == 2.0


def test_unknown_role_without_weights_is_generic(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL.replace('"reviewer"', '"juggler"')))
    assert set(cfg.weights.values()) == {1.0}


BROKEN = """
[identity]
name = "rev-01"
[mesh]
grup = "typo"
[budget]
max_wakes_per_minute = "ten"
max_wakes_per_hour = 0
"""


def test_broken_config_gives_one_line_per_problem_with_its_path(tmp_path: Path) -> None:
    path = write(tmp_path, BROKEN)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [
        "mesh.grup: unknown key (check the spelling; `xmesh-agent schema` lists every key)",
        "[model]: missing required section",
        "budget.max_wakes_per_minute: Input should be a valid integer, unable to parse string as an integer"
        " (got 'ten')",
        "budget.max_wakes_per_hour: Input should be greater than or equal to 1 (got 0)",
    ]


def test_cli_reports_config_errors_and_exits_2_without_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, BROKEN)
    for command in ("run", "dry-run"):
        result = CliRunner().invoke(app, [command, "--config", str(path)])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        lines = result.stderr.splitlines()
        assert (
            f"{path}: mesh.grup: unknown key (check the spelling; `xmesh-agent schema` lists every key)"
            in lines
        )
        assert f"{path}: [model]: missing required section" in lines
        assert lines[-1] == f"4 problem(s) in {path}; `xmesh-agent schema` lists every key."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[identity\nname=", "not valid TOML"),
        ("", "[identity]: missing required section"),
        (MINIMAL + "[model.extra]\n", "model.extra: unknown key"),
        (MINIMAL.replace('"offline"', '"gpt"'), "model.adapter: Input should be 'anthropic', 'openai',"),
        (MINIMAL + "[mesh.x]\n", "mesh.x: unknown key"),
        (
            MINIMAL.replace("[mesh]", '[mesh]\ngroup = "Bad Group!"'),
            "mesh.group: String should match pattern",
        ),
        (
            MINIMAL + '[[safety.gates]]\nname = "x"\npattern = "("\n',
            "pattern is not a valid regular expression",
        ),
    ],
)
def test_each_kind_of_mistake_is_named(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_missing_file_suggests_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert "xmesh-agent init" in info.value.problems[0]


def test_toml_writer_round_trips(tmp_path: Path) -> None:
    text = MINIMAL + '[[safety.gates]]\nname = "no-prod"\npattern = "prod"\naction = "approve"\n'
    cfg = load_config(write(tmp_path, text))
    again = parse_config(tomllib.loads(to_toml(cfg)))
    assert again == cfg


def test_schema_command_prints_the_json_schema() -> None:
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert set(schema["required"]) == {"identity", "mesh", "model"}
    assert "BudgetConfig" in schema["$defs"]
    assert schema["$defs"]["BudgetConfig"]["properties"]["max_wakes_per_minute"]["minimum"] == 1


def test_store_retention_drops_old_cmbs_only(tmp_path: Path) -> None:
    from xmesh_agent.identity import NodeIdentity
    from xmesh_agent.mmp.cmb import mint
    from xmesh_agent.mmp.store import CMBStore

    cfg = load_config(write(tmp_path, MINIMAL.replace("[mesh]", "[mesh]\nretention_days = 1")))
    store = CMBStore(tmp_path / "cmbs.db", retention_days=cfg.mesh.retention_days)
    author = NodeIdentity.generate("a")
    old = mint({"focus": "old"}, identity=author, group="g", created_at=1)
    store.put(old, source="a")
    store.flush()
    day = 86_400_000
    now = now_ms()
    assert store.prune(now_ms=now + day - 60_000) == 0
    assert store.prune(now_ms=now + day + 60_000) == 1
    assert not store.has(old.key)
    store.close()


def test_a_config_silent_about_the_mesh_is_on_the_lan_as_the_original_runtime(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.mesh.host == "0.0.0.0" and cfg.mesh.discovery == ["registry", "mdns"]
    reach = mesh_reach(cfg.mesh)
    assert "all interfaces" in reach and "DNS-SD on the LAN" in reach and 'host = "127.0.0.1"' in reach
    local = load_config(
        write(tmp_path, MINIMAL.replace("[mesh]", '[mesh]\nhost = "127.0.0.1"\ndiscovery = ["registry"]'))
    )
    assert (
        mesh_reach(local.mesh)
        == "listens on 127.0.0.1 (this machine only), a free port; discovery: same-host registry"
    )


def test_dry_run_says_where_the_peer_listens_and_how_to_keep_it_local(tmp_path):
    result = CliRunner().invoke(app, ["dry-run", "--config", str(write(tmp_path, MINIMAL))])
    (line,) = [row for row in result.output.splitlines() if "| mesh —" in row]
    assert "listens on 0.0.0.0 (all interfaces)" in line and '[mesh] host = "127.0.0.1"' in line
