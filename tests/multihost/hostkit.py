"""Real `xmesh-agent` processes on the hosts of a Lan: peers, seeders, CLI calls, and what they logged."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.multihost.lan import Host

PYTHON = sys.executable
SEEDER = str(Path(__file__).with_name("seeder.py"))
REPO = Path(__file__).resolve().parents[2]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2) -> Any:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(interval)


def agent_toml(name: str, role: str, group: str, **sections: dict[str, Any]) -> str:
    """A minimal agent.toml, silent about everything not given (as the original runtime's configs are)."""
    body: dict[str, dict[str, Any]] = {
        "identity": {"name": name, "role": role},
        "mesh": {"group": group},
        "model": {"adapter": "offline"},
    }
    for section, values in sections.items():
        body.setdefault(section, {}).update(values)
    lines = []
    for section, values in body.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        lines.append("")
    return "\n".join(lines)


def cli(
    host: Host, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """`xmesh-agent <args>` run inside `host`."""
    return host.run([PYTHON, "-m", "xmesh_agent.cli.app", *args], env=env, timeout=timeout)


def cli_json(host: Host, *args: str, env: dict[str, str] | None = None) -> Any:
    """`xmesh-agent <args> --json` inside `host`, parsed.

    The Temporal SDK's runtime sometimes aborts the interpreter at exit (PyGILState_Release, or a
    SIGSEGV) after the command has printed its whole answer; that crash is not what these tests
    check, so such a run is asked again (at most three times)."""
    for _ in range(3):
        done = cli(host, *args, env=env)
        crashed_at_exit = done.returncode < 0 or "PyGILState_Release" in done.stderr
        if done.returncode == 0 or not crashed_at_exit:
            break
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    return json.loads(done.stdout)


class HostPeer:
    """`xmesh-agent run --config <name>.toml` inside a host, with the host's home."""

    def __init__(self, host: Host, name: str, toml: str, env: dict[str, str] | None = None):
        self.host = host
        self.name = name
        self.env = env
        self.config = host.workdir / f"{name}.toml"
        self.config.write_text(toml)
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    @property
    def dir(self) -> Path:
        return self.host.home / "peers" / self.name

    @property
    def stdout_log(self) -> Path:
        return self.host.workdir / f"{self.name}.{self.runs}.out"

    def start(self) -> HostPeer:
        self.runs += 1
        argv = [PYTHON, "-m", "xmesh_agent.cli.app", "run", "--config", str(self.config)]
        self.proc = self.host.spawn(argv, self.stdout_log, env=self.env)
        return self

    def status(self) -> dict | None:
        try:
            data = json.loads((self.dir / "peer.json").read_text())
        except (OSError, ValueError):
            return None
        return data if self.proc is not None and data.get("pid") == self.proc.pid else None

    def wait_up(self, timeout: float = 60) -> HostPeer:
        assert self.proc is not None
        wait_until(lambda: self.status() or self.proc.poll() is not None, timeout, f"{self.name} up")
        assert self.proc.poll() is None, f"{self.name} exited {self.proc.returncode}:\n{self.output()}"
        return self

    def output(self) -> str:
        return self.stdout_log.read_text(errors="replace")[-4000:] if self.stdout_log.exists() else ""

    def events(self, evt: str | None = None) -> list[dict]:
        """The peer's structured log (peer.log), optionally only one event type."""
        out = []
        path = self.dir / "peer.log"
        if not path.exists():
            return out
        for line in path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if evt is None or rec.get("evt") == evt:
                out.append(rec)
        return out

    def connected_to(self) -> set[str]:
        """Mesh peers connected now, from the peer's connect/disconnect events (in order)."""
        now: set[str] = set()
        for rec in self.events():
            name = (rec.get("data") or {}).get("name")
            if rec["evt"] == "peer-connected":
                now.add(name)
            elif rec["evt"] == "peer-disconnected":
                now.discard(name)
        return now

    def mesh_view(self) -> dict[str, dict]:
        """`xmesh-agent peers <name> --json` asked inside the host: mesh peer name -> {transport, address}."""
        return {
            p["name"]: p for p in cli_json(self.host, "peers", self.name, "--json", env=self.env)["peers"]
        }

    def woken_by(self) -> Counter:
        """cmb_key -> how many wakes this peer started for it (must never exceed 1)."""
        return Counter(r["data"]["cmb_key"] for r in self.events("wake-started"))

    def wake_authors(self) -> set[str]:
        return {r["data"].get("author") for r in self.events("wake-started")}

    def wakes(self, *extra: str) -> list[dict]:
        """This peer's wakes from Temporal visibility (`xmesh-agent wakes --json`), as seen from its host."""
        return cli_json(
            self.host, "wakes", "--peer", self.name, "--json", "--limit", "1000", *extra, env=self.env
        )

    def stop(self, timeout: float = 45) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


def seeder(host: Host, name: str, group: str, focus: str, *args: str) -> tuple[subprocess.Popen, Path]:
    """Start a seeding node in `host` (see seeder.py); returns the process and its JSON-lines output."""
    out = host.workdir / f"{name}.jsonl"
    argv = [PYTHON, SEEDER, "--name", name, "--group", group, "--focus", focus, "--out", str(out), *args]
    env = host.env(PYTHONPATH=str(REPO))
    return host.spawn(argv, host.workdir / f"{name}.out", env=env), out


def published(out: Path) -> list[dict]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
