"""[observability]: its keys validated with named errors, shown by dry-run, and a taken port refused at run."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xmesh_agent.cli.app import app
from xmesh_agent.config import ConfigError, parse_config
from xmesh_agent.observability import PeerMetrics

BASE = '[identity]\nname = "obs-u"\n[mesh]\n[model]\nadapter = "offline"\n'


def observability(**obs):
    data = {"identity": {"name": "o"}, "mesh": {}, "model": {"adapter": "offline"}, "observability": obs}
    return parse_config(data).observability


def test_defaults_are_off() -> None:
    obs = observability()
    assert (obs.metrics, obs.tracing, obs.traces_file) == (None, "off", None)
    assert obs.otlp_endpoint == "http://127.0.0.1:4318/v1/traces"


@pytest.mark.parametrize(
    "obs, expected",
    [
        ({"metrics": "9464"}, 'observability.metrics: must be "host:port"'),
        ({"metrics": "127.0.0.1:70000"}, 'observability.metrics: must be "host:port" with a port 1-65535'),
        ({"tracing": "jaeger"}, "observability.tracing: Input should be 'off', 'otlp' or 'file'"),
        (
            {"otlp_endpoint": "grpc://x:4317"},
            "observability.otlp_endpoint: must be an http:// or https:// URL",
        ),
        ({"prometheus": True}, "observability.prometheus: unknown key"),
    ],
)
def test_each_mistake_is_one_named_line(obs: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        observability(**obs)
    assert len(err.value.problems) == 1 and expected in err.value.problems[0], err.value.problems


def _taken_port() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_dry_run_shows_metrics_and_tracing_and_fails_a_taken_port(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    path.write_text(BASE + f'[observability]\nmetrics = "127.0.0.1:{port}"\ntracing = "otlp"\n')
    out = CliRunner().invoke(app, ["dry-run", "--config", str(path)]).output
    assert f"ok   | metrics — Prometheus endpoint http://127.0.0.1:{port}/metrics" in out
    assert "ok   | tracing — otlp -> http://127.0.0.1:4318/v1/traces" in out
    with _taken_port() as taken:
        port = taken.getsockname()[1]
        path.write_text(BASE + f'[observability]\nmetrics = "127.0.0.1:{port}"\n')
        result = CliRunner().invoke(app, ["dry-run", "--config", str(path)])
    assert result.exit_code == 1
    assert f"FAIL | metrics — cannot listen on 127.0.0.1:{port}" in result.output
    assert "ok   | tracing — off" in result.output


def test_run_refuses_a_taken_metrics_port_with_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    with _taken_port() as taken:
        port = taken.getsockname()[1]
        path.write_text(BASE + f'[observability]\nmetrics = "127.0.0.1:{port}"\n')
        result = CliRunner().invoke(app, ["run", "--config", str(path), "--temporal-address", "127.0.0.1:1"])
    assert result.exit_code == 1, result.output
    assert f"[observability] metrics = '127.0.0.1:{port}': cannot serve metrics there" in result.output
    assert "Traceback" not in result.output


def test_metrics_without_a_meter_are_no_ops() -> None:
    metrics = PeerMetrics()
    assert not metrics.enabled
    metrics.model_call("offline/offline-echo", "ok", 0.1, 1, 2, 0.0)
    metrics.frame_in("cmb")
    metrics.breaker("m", "open")


def test_run_refuses_a_max_cost_that_allows_nothing(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(BASE)
    result = CliRunner().invoke(app, ["run", "--config", str(path), "--max-cost", "0"])
    assert result.exit_code == 2 and "--max-cost must be a positive number of USD" in result.output
