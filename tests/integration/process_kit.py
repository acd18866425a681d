"""Real processes for the durability tests: a Temporal dev server and `xmesh-agent run` peers as children.

Both are started with their own environment (XMESH_HOME, loopback registry, TEMPORAL_ADDRESS), so a
test can SIGKILL a peer mid-call or stop the server and bring it back on the same SQLite file and port.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from xmesh_agent.config import AgentConfig, to_toml
from xmesh_agent.workflows.search import dev_server_flags

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A port free now, below the kernel's ephemeral range: a child binds it a second later, and a port
    from that range may meanwhile become the local end of some outgoing connection."""
    for _ in range(200):
        port = random.randrange(20_000, 32_000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout}s")
        time.sleep(interval)


class DevServerProcess:
    """`temporal server start-dev` on a fixed port and SQLite file, so a restart finds its history."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.db = workdir / "temporal.db"
        self.proc: subprocess.Popen | None = None
        self.started = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> DevServerProcess:
        cmd = [
            str(VENV_BIN / "temporal"),
            "server",
            "start-dev",
            "--headless",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--db-filename",
            str(self.db),
            "--log-level",
            "error",
            *dev_server_flags(),
        ]
        log_path = self.workdir / "server.log"
        port_arg = cmd.index("--port") + 1
        for _attempt in range(3):
            seen = log_path.stat().st_size if log_path.exists() else 0
            log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
            cmd[port_arg] = str(self.port)
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
            wait_until(lambda: port_open(self.port) or self.proc.poll() is not None, 60, "dev server port")
            if self.proc.poll() is None:
                self.started = True
                return self
            said = log_path.read_bytes()[seen:].decode(errors="replace")
            if "address already in use" not in said:
                break
            # another process took the port between our pick and the server's bind
            if self.started:
                time.sleep(1.0)  # a restart keeps its address: wait for the port to come free
            else:
                self.port = free_port()
        raise AssertionError(log_path.read_text(errors="replace")[-2000:])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        wait_until(lambda: not port_open(self.port), 10, "dev server port closed")


class PeerProcess:
    """`python -m xmesh_agent.cli.app run --config <toml>` with its own XMESH_HOME."""

    def __init__(self, config: AgentConfig, workdir: Path, env: dict[str, str]):
        self.config = config
        self.workdir = workdir
        self.env = env
        self.toml = workdir / f"{config.name}.toml"
        self.toml.write_text(to_toml(config))
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    @property
    def home(self) -> Path:
        return Path(self.env["XMESH_HOME"]) / "peers" / self.config.name

    def status(self) -> dict | None:
        try:
            data = json.loads((self.home / "peer.json").read_text())
        except (OSError, ValueError):
            return None
        return data if self.proc and data.get("pid") == self.proc.pid else None

    def start(self, wait: bool = True) -> PeerProcess:
        """Launch; with `wait`, return once the peer wrote its peer.json (it is up)."""
        self.runs += 1
        log = open(self.workdir / f"{self.config.name}.{self.runs}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "xmesh_agent.cli.app", "run", "--config", str(self.toml)],
            env=self.env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            cwd=Path(__file__).resolve().parents[2],
        )
        if not wait:
            return self
        wait_until(lambda: self.status() is not None or self.proc.poll() is not None, 40, "peer.json")
        assert self.proc.poll() is None, self.log()
        return self

    def log(self) -> str:
        return (self.workdir / f"{self.config.name}.{self.runs}.log").read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, no cleanup; whatever was in flight is lost with the process."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 40) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


def child_env(home: Path, loopback: Path, temporal: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "TEMPORAL_"))}
    env.update(
        XMESH_HOME=str(home),
        XMESH_SYM_LOOPBACK_DIR=str(loopback),
        TEMPORAL_ADDRESS=temporal,
        PYTHONUNBUFFERED="1",
    )
    return env
