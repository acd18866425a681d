"""The GitHub Action (action.yml), run the way a runner runs a composite action.

Each `run:` step of action.yml is rendered (`${{ inputs.* }}` with the given values or the defaults,
`${{ github.action_path }}` = this checkout) and run with the runner's bash flags and its files
(GITHUB_OUTPUT, GITHUB_STEP_SUMMARY, RUNNER_TEMP); the outputs are read back through the action's
`outputs:` mapping. Two steps are the runner's business and are not run here: `actions/setup-python`
(a `uses:` step) and the pip install (this venv already has the package). The peer talks to the
session's Temporal server (TEMPORAL_ADDRESS, as a job pointing at a cluster would), gets its triggers
from a real mesh node in the test, and its model is the loopback OpenAI fake, priced as gpt-4o-mini.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.envelope_kit import ONE_CALL_USD, Observer, group_name, trigger
from tests.integration.peer_kit import eventually
from tests.json_kit import non_snake_keys

ROOT = Path(__file__).resolve().parents[2]
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
EXPR = re.compile(r"\$\{\{\s*([^}]+?)\s*\}\}")
RUNNER_BASH = ["bash", "--noprofile", "--norc", "-eo", "pipefail"]

pytestmark = pytest.mark.slow


def render(text: str, inputs: dict[str, str], steps: dict[str, dict[str, str]]) -> str:
    def value(match: re.Match) -> str:
        expr = match.group(1)
        if expr.startswith("inputs."):
            name = expr.removeprefix("inputs.")
            assert name in ACTION["inputs"], f"action.yml uses an undeclared input {name!r}"
            return inputs.get(name, ACTION["inputs"][name].get("default", ""))
        if expr == "github.action_path":
            return str(ROOT)
        if expr.startswith("steps."):
            _, step, _, name = expr.split(".", 3)
            return steps.get(step, {}).get(name, "")
        raise AssertionError(f"the test runner does not know the expression {expr!r}")

    return EXPR.sub(value, text)


def parse_outputs(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines() if path.exists() else []
    return dict(line.split("=", 1) for line in lines if "=" in line)


def run_action(inputs: dict[str, str], workdir: Path, env: dict[str, str]) -> tuple[int, dict[str, str], str]:
    """Run the composite's steps in order; (exit code of the last step run, action outputs, output text)."""
    steps: dict[str, dict[str, str]] = {}
    text, code = "", 0
    for i, step in enumerate(ACTION["runs"]["steps"]):
        if "uses" in step or step["name"] == "Install xmesh-agent":
            continue
        assert step["shell"] == "bash"
        script = workdir / f"step-{i}.sh"
        script.write_text(render(step["run"], inputs, steps))
        out = workdir / f"output-{i}"
        out.touch()
        step_env = {**env, **{k: render(str(v), inputs, steps) for k, v in step.get("env", {}).items()}}
        step_env.update(GITHUB_OUTPUT=str(out))
        proc = subprocess.run(
            [*RUNNER_BASH, str(script)],
            cwd=workdir,
            env=step_env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        text += proc.stdout + proc.stderr
        code = proc.returncode
        if "id" in step:
            steps[step["id"]] = parse_outputs(out)
        if code != 0:
            break
    outputs = {name: render(spec["value"], inputs, steps) for name, spec in ACTION["outputs"].items()}
    return code, outputs, text


def runner_env(tmp_path: Path, temporal: str, fake_url: str) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "TEMPORAL_"))}
    (tmp_path / "runner-temp").mkdir(exist_ok=True)
    return {
        **keep,
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "GITHUB_ACTIONS": "true",
        "GITHUB_RUN_ID": "4242",
        "GITHUB_WORKSPACE": str(tmp_path),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "step-summary.md"),
        "RUNNER_TEMP": str(tmp_path / "runner-temp"),
        "XMESH_HOME": os.environ["XMESH_HOME"],
        "XMESH_SYM_LOOPBACK_DIR": os.environ["XMESH_SYM_LOOPBACK_DIR"],
        "TEMPORAL_ADDRESS": temporal,
        "OPENAI_BASE_URL": fake_url,
        "PYTHONUNBUFFERED": "1",
    }


def test_action_yml_is_a_composite_whose_outputs_the_script_writes() -> None:
    assert ACTION["runs"]["using"] == "composite"
    script = (ROOT / "action" / "run-peer.sh").read_text()
    for name, spec in ACTION["outputs"].items():
        assert spec["value"] == f"${{{{ steps.run.outputs.{name} }}}}"
        assert f"{name}=" in script, f"run-peer.sh never writes the {name} output"
    used = set(re.findall(r"inputs\.([a-z0-9-]+)", (ROOT / "action.yml").read_text()))
    assert used == set(ACTION["inputs"]), "every input is used, and only declared ones"
    assert subprocess.run(["bash", "-n", str(ROOT / "action" / "run-peer.sh")]).returncode == 0


async def test_scaffolded_peer_stops_at_its_cost_cap_and_reports_the_run_total(
    temporal_env, fake, tmp_path: Path
) -> None:
    """Two wakes of $0.000036 each against a $0.00005 cap: both emit, then the run stops by itself, and
    cost-usd is their sum (the original runtime reported the last call's cost)."""
    group = group_name()
    temporal = temporal_env.client.service_client.config.target_host
    env = runner_env(tmp_path, temporal, fake.base_url)
    inputs = {
        "adapter": "openai",
        "model": "gpt-4o-mini",
        "group": group,
        "peer-name": "ci-reviewer",
        "duration-seconds": "40",
        "cost-cap-usd": "0.00005",
    }
    fake.script(
        *[fake.tool_call({"focus": f"rate limiter review {i}", "issue": "burst too high"}) for i in (1, 2)]
    )
    observer = await Observer(tmp_path, group, name="ci-seed").start()
    try:
        run = asyncio.create_task(asyncio.to_thread(run_action, inputs, tmp_path, env))

        async def peer_up() -> bool:
            if run.done():  # the action ended before its peer was seen: show why
                raise AssertionError(run.result()[2])
            return any(p.name == "ci-reviewer" for p in observer.node.peers())

        await eventually(peer_up, timeout=60)
        for i in range(2):
            await observer.node.publish(trigger(observer.identity, group, i))
            await eventually(lambda n=i: len(observer.from_author("ci-reviewer")) > n, timeout=60)
        code, outputs, text = await asyncio.wait_for(run, timeout=120)
    finally:
        await observer.stop()
    assert code == 0, text
    assert outputs["cmbs-emitted"] == "2" and outputs["wakes"] == "2", text
    assert float(outputs["cost-usd"]) == pytest.approx(2 * ONE_CALL_USD)
    assert outputs["cost-usd"] == "0.000072"
    assert outputs["stop-reason"] == "cost cap"
    config = Path(outputs["config-path"])
    assert config == tmp_path / "runner-temp" / "xmesh-agent-4242" / "ci-reviewer.toml" and config.exists()
    # scaffolded with hour = the cap (a CI run is shorter than an hour); --max-cost held the run to it
    assert "max_cost_usd_per_hour = 5e-05" in config.read_text()
    # a runner's peers meet on the runner (registry) or through a relay, never by DNS-SD on its LAN
    assert 'host = "127.0.0.1"\ndiscovery = ["registry"]' in config.read_text()
    assert "listens on 127.0.0.1 (this machine only)" in text
    summary = (tmp_path / "step-summary.md").read_text()
    assert "| CMBs emitted | 2 |" in summary and "stopped by | cost cap" in summary
    assert "PASS" in text  # the dry-run gate ran
    run_summary = json.loads((config.parent / "summary.json").read_text())
    assert run_summary["cmbs_emitted"] == 2 and run_summary["stop_reason"] == "cost cap"
    assert non_snake_keys(run_summary) == []


async def test_given_config_runs_until_the_deadline(temporal_env, fake, tmp_path: Path) -> None:
    group = group_name()
    config = tmp_path / "peer.toml"
    config.write_text(
        f'[identity]\nname = "ci-given"\nrole = "reviewer"\n[mesh]\ngroup = "{group}"\nhost = "127.0.0.1"\n'
        'discovery = ["registry"]\n'
        '[model]\nadapter = "offline"\n'
    )
    env = runner_env(tmp_path, temporal_env.client.service_client.config.target_host, fake.base_url)
    code, outputs, text = await asyncio.to_thread(
        run_action, {"config": "peer.toml", "duration-seconds": "3"}, tmp_path, env
    )
    assert code == 0, text
    assert outputs == {
        "config-path": "peer.toml",
        "cmbs-emitted": "0",
        "wakes": "0",
        "cost-usd": "0.000000",
        "stop-reason": "duration",
    }


@pytest.mark.parametrize(
    "inputs, error",
    [
        ({"config": "missing.toml"}, "::error::config file not found: missing.toml"),
        (
            {"duration-seconds": "5m"},
            "::error::duration-seconds must be a positive number of seconds (got '5m')",
        ),
        ({"cost-cap-usd": "0"}, "::error::cost-cap-usd must be a positive number of USD (got '0')"),
    ],
)
def test_bad_inputs_fail_the_step_with_an_annotation(tmp_path: Path, inputs: dict, error: str) -> None:
    env = runner_env(tmp_path, "127.0.0.1:1", "http://127.0.0.1:1/v1")
    code, outputs, text = run_action(inputs, tmp_path, env)
    assert code != 0 and error in text, text
