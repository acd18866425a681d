"""The wheel installs one top-level package, xmesh_agent, with the orchestration folders and the scenarios inside."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("xmesh_agent-*.whl")
    return built


@pytest.mark.slow
def test_wheel_has_one_top_level_import_name(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"xmesh_agent"}
    top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["xmesh_agent"]
    installed = {n for n in names if n.endswith(".py")}
    source = {
        f"xmesh_agent/{p.relative_to(ROOT / 'xmesh_agent').as_posix()}"
        for p in (ROOT / "xmesh_agent").rglob("*.py")
    }
    for top in ("workflows", "activities", "workers", "demo"):
        source |= {f"xmesh_agent/{p.relative_to(ROOT).as_posix()}" for p in (ROOT / top).rglob("*.py")}
    assert source - installed == set(), "modules of the checkout missing from the wheel"
    assert "xmesh_agent/workflows/wake.py" in installed


@pytest.mark.slow
def test_wheel_carries_every_scenario_and_peer(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.relative_to(ROOT).as_posix() for p in (ROOT / "scenarios").rglob("*.toml")}
    assert shipped, "no scenarios in the checkout"
    assert {f"xmesh_agent/{p}" for p in shipped} <= names


@pytest.mark.slow
def test_installed_wheel_imports_and_finds_its_scenarios_outside_the_checkout(wheel: Path, tmp_path: Path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    probe = (
        "import xmesh_agent.workflows.wake as w, xmesh_agent.workers.peer, xmesh_agent.activities.wake\n"
        "from xmesh_agent.scenario import SCENARIOS_DIR, load_scenario, resolve\n"
        "_, peers = load_scenario(resolve('trio'))\n"
        "print(w.__file__); print(SCENARIOS_DIR); print(len(peers))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    module_file, scenarios_dir, peer_count = run.stdout.split()
    assert Path(module_file).is_relative_to(target)
    assert Path(scenarios_dir) == target / "xmesh_agent" / "scenarios"
    assert int(peer_count) == 3
