"""A wrong Temporal address, as a user meets it: `run` and `wakes` fail within seconds with one line that
names the address and what answered there (an HTTP server, or nothing at all)."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.process_kit import free_port

CLI = str(Path(sys.executable).parent / "xmesh-agent")
BOUND_SECONDS = 15  # the SDK alone retried for 31 s before printing a raw status


@pytest.fixture
def http_port() -> Iterator[int]:
    """A plain HTTP/1 server on loopback, like Temporal's Web UI port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "addr-peer.toml"
    path.write_text(
        '[identity]\nname = "addr-peer"\n[mesh]\ngroup = "addr-test"\n[model]\nadapter = "offline"\n'
    )
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, timeout=BOUND_SECONDS, env=dict(os.environ)
    )


def _one_line_naming(stderr: str, address: str) -> str:
    lines = [line for line in stderr.splitlines() if address in line]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and "Status {" not in stderr, stderr
    return lines[0]


@pytest.mark.parametrize("command", ["run", "wakes"])
def test_an_http_server_at_the_address_is_named_as_such(command: str, http_port: int, tmp_path: Path) -> None:
    address = f"127.0.0.1:{http_port}"
    args = ["run", "--config", str(_config(tmp_path))] if command == "run" else ["wakes"]
    result = _cli(*args, "--temporal-address", address)
    assert result.returncode == 1, result.stderr
    line = _one_line_naming(result.stderr, address)
    assert "HTTP server (not gRPC)" in line


@pytest.mark.parametrize("command", ["run", "wakes"])
def test_a_closed_port_is_named_as_nothing_listening(command: str, tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    args = ["run", "--config", str(_config(tmp_path))] if command == "run" else ["wakes"]
    result = _cli(*args, "--temporal-address", address)
    assert result.returncode == 1, result.stderr
    line = _one_line_naming(result.stderr, address)
    assert "nothing is listening" in line


def test_a_port_that_never_answers_is_named_as_a_timeout() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)  # the kernel completes the TCP handshake; nobody ever reads or writes
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        result = _cli("wakes", "--temporal-address", address)
    assert result.returncode == 1, result.stderr
    assert "timeout" in _one_line_naming(result.stderr, address)


def test_dry_run_and_doctor_name_what_answers_at_the_address(http_port: int, tmp_path: Path) -> None:
    address = f"127.0.0.1:{http_port}"
    dry = _cli("dry-run", "--config", str(_config(tmp_path)), "--temporal-address", address, "--json")
    assert dry.returncode == 1, dry.stderr
    (row,) = [c for c in json.loads(dry.stdout)["checks"] if c["name"] == "temporal"]
    assert not row["ok"] and address in row["detail"] and "HTTP server (not gRPC)" in row["detail"]
    doctor = subprocess.run(
        [CLI, "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=BOUND_SECONDS,
        env=dict(os.environ, TEMPORAL_ADDRESS=address),
    )
    assert doctor.returncode == 1
    issues = json.loads(doctor.stdout)["issues"]
    assert any(address in i and "HTTP server (not gRPC)" in i for i in issues), issues
