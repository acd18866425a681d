"""The production stack as files: docker-compose.yml, .env and the Dockerfile, checked without Docker.

`docker compose config` runs too, but only when a Docker engine answers on this machine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from xmesh_agent.config import parse_config
from xmesh_agent.roles import preset_weights
from xmesh_agent.workflows import search

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
PEERS = ("writer", "reviewer", "test-writer")


def _dotenv() -> dict[str, str]:
    out = {}
    for line in (ROOT / ".env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


ENV = _dotenv()


def _interpolate(text: str) -> str:
    """Compose-style ${VAR} / ${VAR:-default} from .env (no shell)."""

    def sub(m: re.Match) -> str:
        name, _, default = m.group(1).partition(":-")
        return ENV.get(name, default)

    return re.sub(r"(?<!\$)\$\{([^}]+)\}", sub, text)


def _seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+)(s|m)", text)
    assert m, text
    return int(m.group(1)) * (60 if m.group(2) == "m" else 1)


def test_services_present():
    expected = {
        "postgresql",
        "temporal",
        "temporal-setup",
        "temporal-ui",
        "temporal-admin-tools",
        "relay",
        *PEERS,
    }
    assert expected <= set(SERVICES)


def test_images_pinned_in_env():
    for name, svc in SERVICES.items():
        image = _interpolate(svc["image"])
        assert svc["image"].startswith("${"), f"{name}: the tag lives in .env"
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image} is not pinned"
    assert _interpolate(SERVICES["temporal"]["image"]).startswith("temporalio/auto-setup:")
    assert _interpolate(SERVICES["temporal-ui"]["image"]).startswith("temporalio/ui:")
    assert _interpolate(SERVICES["temporal-setup"]["image"]).startswith("temporalio/admin-tools:")
    assert _interpolate(SERVICES["postgresql"]["image"]).startswith("postgres:")


def test_temporal_on_postgres_with_health_and_ordering():
    temporal = SERVICES["temporal"]
    assert temporal["environment"]["DB"].startswith("postgres")
    assert temporal["environment"]["POSTGRES_SEEDS"] == "postgresql"
    assert temporal["depends_on"]["postgresql"]["condition"] == "service_healthy"
    assert "7233:7233" in temporal["ports"]
    for name in ("postgresql", "temporal", "relay", *PEERS):
        assert "healthcheck" in SERVICES[name], name
    assert SERVICES["temporal-ui"]["depends_on"]["temporal"]["condition"] == "service_healthy"
    assert _interpolate(SERVICES["temporal-ui"]["ports"][0]).endswith(":8080")
    assert SERVICES["temporal-ui"]["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"


def test_setup_job_registers_every_search_attribute_with_its_type():
    job = SERVICES["temporal-setup"]
    assert job["depends_on"]["temporal"]["condition"] == "service_healthy"
    script = "\n".join(job["command"])
    assert "namespace create" in script and "search-attribute create" in script
    types = {"KEYWORD": "Keyword", "INT": "Int", "DOUBLE": "Double"}
    for key in search.ALL:
        assert f"{key.name}:{types[key.indexed_value_type.name]}" in script, key.name


def test_relay_service_runs_our_relay_command():
    relay = SERVICES["relay"]
    cmd = relay["command"]
    assert cmd[:5] == ["relay", "--host", "0.0.0.0", "--port", "8765"]
    assert cmd[cmd.index("--token") + 1] == "${XMESH_RELAY_TOKEN}" and ENV["XMESH_RELAY_TOKEN"]
    assert _interpolate(relay["ports"][0]) == f"{ENV['XMESH_RELAY_PORT']}:8765"


@pytest.mark.parametrize("name", PEERS)
def test_peer_service(name):
    svc = SERVICES[name]
    env = svc["environment"]
    assert env["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert env["XMESH_RELAY_TOKEN"] == "${XMESH_RELAY_TOKEN}"
    assert svc["depends_on"]["temporal-setup"]["condition"] == "service_completed_successfully"
    assert svc["depends_on"]["relay"]["condition"] == "service_healthy"
    assert _seconds(svc["stop_grace_period"]) >= 30, "at least the worker's graceful shutdown"
    assert f"./scenarios/compose/{name}.toml:/config/agent.toml:ro" in svc["volumes"]
    assert any(v.endswith(":/data") for v in svc["volumes"]), "peer state survives container restarts"
    assert "xmesh-agent run --config" in svc["command"][0]


@pytest.mark.parametrize("name", PEERS)
def test_compose_peer_config_meets_over_the_relay(name, monkeypatch):
    monkeypatch.setenv("XMESH_RELAY_TOKEN", ENV["XMESH_RELAY_TOKEN"])
    monkeypatch.setenv("TEMPORAL_NAMESPACE", ENV["TEMPORAL_NAMESPACE"])
    import tomllib

    text = os.path.expandvars((ROOT / "scenarios" / "compose" / f"{name}.toml").read_text())
    cfg = parse_config(tomllib.loads(text))
    assert cfg.mesh.relay == "ws://relay:8765" and cfg.mesh.relay_token == ENV["XMESH_RELAY_TOKEN"]
    assert cfg.mesh.discovery == [], "mDNS and the loopback registry do not cross the bridge network"
    assert cfg.identity.role == name and cfg.weights == preset_weights(name)
    assert cfg.temporal.namespace == ENV["TEMPORAL_NAMESPACE"]


def test_dockerfile():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"pip install \.", text)
    assert 'ENTRYPOINT ["xmesh-agent"]' in text
    assert ".venv" in (ROOT / ".dockerignore").read_text()


def _docker_engine() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _docker_engine(), reason="no Docker engine answers here")
def test_docker_compose_config_validates():
    result = subprocess.run(
        ["docker", "compose", "config", "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
