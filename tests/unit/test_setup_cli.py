"""init / doctor / migrate through the real CLI, on the per-test home (real files, real sockets)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from typer.testing import CliRunner

from xmesh_agent import paths
from xmesh_agent.cli.app import app
from xmesh_agent.config import load_config
from xmesh_agent.identity import b64url_encode, key_paths, keyprint, load_identity
from xmesh_agent.mmp import trust
from xmesh_agent.roles import preset_weights

runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env=env)


@pytest.mark.parametrize(
    "role",
    ["writer", "reviewer", "test-writer", "auditor", "security-reviewer", "doc-writer", "spec-drafter"],
)
def test_init_round_trips_through_load_config_with_the_role_preset(tmp_path: Path, role: str):
    out = tmp_path / f"{role}.toml"
    result = invoke(
        "init", f"{role}-01", "--role", role, "--group", "team", "--adapter", "openai", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    cfg = load_config(out)
    assert cfg.name == f"{role}-01" and cfg.identity.role == role and cfg.group == "team"
    assert cfg.weights == preset_weights(role)
    assert cfg.model.adapter == "openai" and cfg.model.model_name == "gpt-4o-mini"
    assert (
        cfg.budget.max_cost_usd_per_run,
        cfg.budget.max_cost_usd_per_hour,
        cfg.budget.max_cost_usd_per_day,
    ) == (
        5.0,
        2.5,
        10.0,
    )
    # and a key, whose keyprint init printed
    identity = load_identity(f"{role}-01")
    assert identity is not None and identity.keyprint in result.output
    assert "dry-run --config" in result.output and "run --config" in result.output


def test_init_cost_cap_model_and_unknown_role(tmp_path: Path):
    out = tmp_path / "p.toml"
    result = invoke(
        "init", "odd-01", "--role", "astronaut", "--adapter", "ollama", "--model", "qwen2.5:7b",
        "--cost-cap", "3", "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "astronaut" in result.stderr and "generic" in result.stderr
    cfg = load_config(out)
    assert cfg.identity.role == "astronaut"
    assert cfg.weights == preset_weights("generic")
    assert cfg.model.model_name == "qwen2.5:7b"
    assert (
        cfg.budget.max_cost_usd_per_run,
        cfg.budget.max_cost_usd_per_hour,
        cfg.budget.max_cost_usd_per_day,
    ) == (
        3.0,
        1.5,
        6.0,
    )
    assert "export" not in result.output  # ollama needs no key


def test_init_refuses_overwrite_unless_forced_and_keeps_the_key(tmp_path: Path):
    out = tmp_path / "r.toml"
    assert invoke("init", "r-01", "--role", "reviewer", "--out", str(out)).exit_code == 0
    first_key = load_identity("r-01").public_key
    out.write_text("# my edits\n" + out.read_text())
    again = invoke("init", "r-01", "--role", "writer", "--out", str(out))
    assert again.exit_code == 1 and "exists" in again.output
    assert out.read_text().startswith("# my edits")
    forced = invoke("init", "r-01", "--role", "writer", "--out", str(out), "--force")
    assert forced.exit_code == 0
    assert load_config(out).identity.role == "writer"
    assert load_identity("r-01").public_key == first_key  # an existing key is reused, never replaced


def test_init_default_out_is_peer_toml_in_the_working_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    assert invoke("init", "here-01", "--adapter", "offline").exit_code == 0
    assert load_config(tmp_path / "here-01.toml").model.adapter == "offline"


@pytest.mark.parametrize(
    "args",
    [
        ["init", "x-01", "--adapter", "gpt5"],
        ["init", "x-01", "--cost-cap", "0"],
        ["init", "x-01", "--cost-cap", "nan"],
        ["init", "x-01", "--cost-cap", "-1"],
        ["init", "bad name"],
        ["init", "x-01", "--group", "Upper Case"],
        ["init"],
    ],
)
def test_init_usage_errors_exit_2(tmp_path: Path, args: list[str]):
    result = invoke(*args, "--out", str(tmp_path / "x.toml"))
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "x.toml").exists()


def test_doctor_healthy_sections_and_env_presence_only(tmp_path: Path):
    assert invoke("keygen", "doc-01").exit_code == 0
    secret = "sk-test-do-not-print-0123456789"
    mistral = "mistral-secret-0123"
    env = {"OPENAI_API_KEY": secret, "MISTRAL_API_KEY": mistral, "OLLAMA_HOST": f"127.0.0.1:{_closed_port()}"}
    result = invoke("doctor", env=env)
    assert result.exit_code == 0, result.output
    for section in (
        "runtime",
        "temporal",
        "identity keys",
        "trusted keys",
        "environment",
        "ollama",
        "running peers",
    ):
        assert f"\n{section}\n" in result.output
    assert f"OPENAI_API_KEY: set ({len(secret)} chars)" in result.output
    assert f"MISTRAL_API_KEY: set ({len(mistral)} chars)" in result.output
    assert secret not in result.output and mistral not in result.output
    assert "ANTHROPIC_API_KEY: not set" in result.output
    assert "doc-01 keyprint=" in result.output and "mode=600" in result.output
    assert "not reachable" in result.output
    assert result.output.rstrip().endswith("HEALTHY")


def test_doctor_counts_loose_key_modes_and_stale_peers():
    assert invoke("keygen", "loose-01").exit_code == 0
    key_file, _ = key_paths("loose-01")
    key_file.chmod(0o644)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    status = paths.ensure_dir(paths.peer_dir("ghost-01")) / "peer.json"
    status.write_text(json.dumps({"peer": "ghost-01", "pid": dead.pid, "group": "g"}))
    alive = paths.ensure_dir(paths.peer_dir("live-01")) / "peer.json"
    alive.write_text(json.dumps({"peer": "live-01", "pid": os.getpid(), "group": "g", "port": 1}))
    result = invoke("doctor")
    assert result.exit_code == 1
    assert "2 issue(s)" in result.output
    assert f"chmod 600 {key_file}" in result.output
    assert f"rm {status}" in result.output
    assert "live-01: ALIVE" in result.output


def test_doctor_reaches_a_local_ollama():
    class Tags(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = json.dumps({"models": [{"name": "llama3.2:3b"}]}).encode()
            self.send_response(200 if self.path == "/api/tags" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), Tags)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = invoke("doctor", env={"OLLAMA_HOST": f"http://127.0.0.1:{server.server_port}"})
    finally:
        server.shutdown()
        server.server_close()
    assert "reachable, 1 model(s)" in result.output


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def legacy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    old = tmp_path / "home" / ".xmesh-agent"
    monkeypatch.setattr(paths, "LEGACY_HOME", old)
    return old


def _legacy_tree(old: Path) -> SigningKey:
    """A runtime dir as the original runtime left it: PKCS#8 DER key, its meta, a trust pin, state."""
    seed = SigningKey.generate()
    (old / "keys").mkdir(parents=True)
    der = bytes.fromhex("302e020100300506032b657004220420") + bytes(seed)
    (old / "keys" / "old-01.key").write_bytes(der)
    (old / "keys" / "old-01.json").write_text(
        json.dumps({"peer": "old-01", "createdAt": "2025-01-01T00:00:00Z"})
    )
    pin_dir = old / "trusted-keys" / "team"
    pin_dir.mkdir(parents=True)
    pub = b64url_encode(bytes(seed.verify_key))
    (pin_dir / "friend-01.json").write_text(json.dumps({"peer": "friend-01", "publicKeyBase64Url": pub}))
    (old / "state").mkdir()
    (old / "state" / "old-01.json").write_text("{}")
    return seed


def test_migrate_nothing_and_already_migrated(legacy: Path):
    result = invoke("migrate")
    assert result.exit_code == 0 and "nothing to do" in result.output
    paths.ensure_dir(paths.xmesh_home())
    result = invoke("migrate", "--apply")
    assert result.exit_code == 0 and "already on" in result.output


def test_migrate_dry_run_then_apply_converts_keys_and_pins(legacy: Path):
    seed = _legacy_tree(legacy)
    plan = invoke("migrate")
    assert plan.exit_code == 0, plan.output
    assert "keys=1 trustedKeys=1 state=1 sockets=0" in plan.output and "dry run" in plan.output
    assert legacy.exists() and not paths.xmesh_home().exists()

    applied = invoke("migrate", "--apply")
    assert applied.exit_code == 0, applied.output
    assert "migrate: ok" in applied.output
    assert not legacy.exists()
    identity = load_identity("old-01")
    assert identity is not None and identity.public_key == bytes(seed.verify_key)
    assert stat.S_IMODE(key_paths("old-01")[0].stat().st_mode) == 0o600
    assert trust.get("team", "friend-01") == bytes(seed.verify_key)
    assert keyprint(bytes(seed.verify_key)) in applied.output


def test_migrate_conflict_and_sockets_refuse(legacy: Path):
    _legacy_tree(legacy)
    (legacy / "old-01.sock").write_text("")
    refused = invoke("migrate", "--apply")
    assert refused.exit_code == 1 and "socket" in refused.output
    assert legacy.exists()
    paths.ensure_dir(paths.xmesh_home())
    conflict = invoke("migrate")
    assert conflict.exit_code == 1
    assert "conflict" in conflict.stderr and "mv" in conflict.stderr
    assert legacy.exists()


def _running_peer_status(name: str, temporal: dict) -> None:
    """A peer.json as a live peer writes it (this test process stands in for the peer's pid)."""
    status = paths.ensure_dir(paths.peer_dir(name)) / "peer.json"
    status.write_text(json.dumps({"peer": name, "group": "g", "pid": os.getpid(), "temporal": temporal}))


def test_doctor_flags_a_running_peer_that_lost_its_temporal():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    _running_peer_status("lost-embedded", {"address": dead, "embedded": True, "lostSince": 1})
    _running_peer_status("lost-external", {"address": dead, "embedded": False, "lostSince": None})
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 1
    assert (
        f"peer lost-embedded has lost Temporal at {dead}: the embedded server is not running" in result.output
    )
    assert f"peer lost-external has lost Temporal at {dead}: nothing listens there" in result.output


def test_server_refuses_an_ip_that_is_not_an_address():
    result = runner.invoke(app, ["server", "--ip", "my-laptop"])
    assert result.exit_code == 2
    assert "--ip must be an IP address" in result.output and "Traceback" not in result.output


def test_server_stop_when_nothing_runs_says_so():
    result = runner.invoke(app, ["server", "stop"])
    assert result.exit_code == 0 and "was not running" in result.output
