"""A LAN made of network namespaces: one namespace holds a bridge (the switch), each host is a
namespace joined to it by a veth pair (the cable), with its own address in 10.231.7.0/24.

Everything lives inside namespaces this module creates; the machine's own interfaces and routes
are never touched. `Lan.close` kills what runs in those namespaces and deletes them, and runs even
when a test fails (the fixture calls it in `finally`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SUBNET = "10.231.7"
PREFIX_LEN = 24


class LanUnavailable(Exception):
    """Network namespaces cannot be made here (not root, no `ip`, no netns support)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


def why_unavailable() -> str | None:
    """None when this machine can build a Lan, else the one-line reason it cannot."""
    if os.geteuid() != 0:
        return "multi-host tests need root (ip netns)"
    if shutil.which("ip") is None:
        return "multi-host tests need iproute2 (`ip`)"
    probe = f"xmh-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except subprocess.CalledProcessError as exc:
        return f"cannot create a network namespace: {exc.stderr.strip()}"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


@dataclass
class Host:
    """One machine of the LAN: a namespace, an address, a home of its own."""

    lan: Lan
    index: int
    workdir: Path
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def ns(self) -> str:
        return f"{self.lan.prefix}-h{self.index}"

    @property
    def ip(self) -> str:
        return f"{SUBNET}.{10 + self.index}"

    @property
    def switch_port(self) -> str:
        """The bridge-side end of this host's cable (in the bridge namespace)."""
        return f"{self.lan.tag}p{self.index}"

    @property
    def home(self) -> Path:
        return self.workdir / "xmesh-home"

    @property
    def loopback(self) -> Path:
        return self.workdir / "sym-loopback"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a process on this host: its own home and same-host registry."""
        keep = ("OPENAI_", "ANTHROPIC_", "MISTRAL_", "OLLAMA_", "TEMPORAL_", "XMESH_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(keep)}
        env.update(
            XMESH_HOME=str(self.home),
            XMESH_SYM_LOOPBACK_DIR=str(self.loopback),
            PYTHONUNBUFFERED="1",
            **extra,
        )
        return env

    def exec_argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def spawn(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start `argv` inside this host (`ip netns exec` execs into it: the pid is the program's)."""
        out = open(log, "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            self.exec_argv(argv),
            env=env or self.env(),
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
        )
        out.close()
        self.procs.append(proc)
        return proc

    def run(
        self, argv: list[str], env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.exec_argv(argv),
            env=env or self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.workdir,
        )

    def cut(self) -> None:
        """Pull the cable at the switch: the host's interface loses carrier, its sockets stay open."""
        _ip("-n", self.lan.bridge_ns, "link", "set", self.switch_port, "down")

    def restore(self) -> None:
        _ip("-n", self.lan.bridge_ns, "link", "set", self.switch_port, "up")

    def wait_link_up(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while "LOWER_UP" not in _ip("-n", self.ns, "link", "show", "eth0").stdout:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.ns}: eth0 has no carrier after {timeout}s")
            time.sleep(0.05)


class Lan:
    """A bridge namespace and N host namespaces. `multicast=False`: no host can send multicast (no
    multicast flag, no route) and the switch floods none, so DNS-SD cannot work."""

    def __init__(self, workdir: Path, tag: str | None = None):
        self.tag = tag or f"x{os.getpid() % 100000}"
        self.prefix = f"xmh-{self.tag}"
        self.workdir = workdir
        self.hosts: list[Host] = []
        self._created: list[str] = []

    @property
    def bridge_ns(self) -> str:
        return f"{self.prefix}-br"

    def _add_ns(self, name: str) -> None:
        _ip("netns", "del", name, check=False)  # a leftover of a crashed run with the same pid
        _ip("netns", "add", name)
        self._created.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def open(self, n_hosts: int, multicast: bool = True) -> Lan:
        self._add_ns(self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        if not multicast:
            # A switch that forwards no multicast: DNS-SD cannot cross it.
            _ip("-n", self.bridge_ns, "link", "set", "br0", "type", "bridge", "mcast_flood", "0", check=False)
        _ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        for i in range(1, n_hosts + 1):
            self.add_host(i, multicast)
        return self

    def add_host(self, index: int, multicast: bool = True) -> Host:
        host = Host(self, index, self.workdir / f"h{index}")
        host.workdir.mkdir(parents=True, exist_ok=True)
        self._add_ns(host.ns)
        _ip("link", "add", host.switch_port, "netns", self.bridge_ns, "type", "veth", "peer", "name",
            "eth0", "netns", host.ns)  # fmt: skip
        _ip("-n", self.bridge_ns, "link", "set", host.switch_port, "master", "br0")
        if not multicast:
            _ip("-n", self.bridge_ns, "link", "set", host.switch_port, "type", "bridge_slave",
                "mcast_flood", "off", check=False)  # fmt: skip
        _ip("-n", self.bridge_ns, "link", "set", host.switch_port, "up")
        _ip("-n", host.ns, "addr", "add", f"{host.ip}/{PREFIX_LEN}", "dev", "eth0")
        _ip("-n", host.ns, "link", "set", "eth0", "multicast", "on" if multicast else "off", "up")
        if multicast:
            # Multicast (DNS-SD) leaves by eth0; there is no default route, nothing leaves the LAN.
            _ip("-n", host.ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
        self.hosts.append(host)
        return host

    def close(self) -> None:
        """Kill everything left in our namespaces (peers, their Temporal servers), then delete them."""
        for host in self.hosts:
            for proc in host.procs:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGKILL)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(5)
        for name in reversed(self._created):
            for pid in _ip("netns", "pids", name, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for name in reversed(self._created):
            _ip("netns", "del", name, check=False)
        self._created.clear()
