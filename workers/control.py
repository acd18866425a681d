"""The control plane of a running peer: a Unix socket that `xmesh-agent status/cost/trace/peers/stop` talk to.

~/.xmesh/peers/<name>/control.sock (0600), newline-delimited JSON: a request {"cmd": "status", ...} gets
one reply line, {"ok": true, ...} or {"ok": false, "error": "..."}. Commands are looked up in one fixed
dict, so a name like "__class__" or "constructor" is just an unknown command.

The socket doubles as the peer's liveness lock: a socket that accepts a connection means the peer is
running (a second peer of the same name refuses to start); one that refuses is left over from a dead
process and is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowFailureError

from xmesh_agent import paths
from xmesh_agent.recent import Recent
from xmesh_agent.wake.payloads import Outcome
from xmesh_agent.workers.controlled_peer import ControlledPeer
from xmesh_agent.workflows.wake import WakeWorkflow

MAX_REQUEST = 64 * 1024
DRAIN_TIMEOUT = 30.0
SUN_PATH_MAX = 100
"""Unix socket paths are limited (~108 bytes); a longer home gets its socket in /tmp behind a symlink."""
ENDED_KEPT = 1024
"""Ended wakes remembered so a late duplicate sighting (a lagging Running listing, seconds behind) is not
counted twice. ~250 bytes each, filled by the 1,024th wake: a larger memory keeps filling for hours."""


class PeerAlreadyRunning(RuntimeError):
    """A live peer of this name already serves its control socket."""


class PeerNotRunning(RuntimeError):
    """No live peer of this name answers on its control socket."""


def control_path(peer: str) -> Path:
    return paths.peer_dir(peer) / "control.sock"


def _connect_address(path: Path) -> str:
    """The address to bind/connect: the path itself, or its symlink target when the path is too long."""
    if path.is_symlink():
        target = os.readlink(path)
        with contextlib.suppress(FileNotFoundError):  # gone: nothing listens there, connect says so
            paths.private_dir(Path(target).parent, create=False)
        return target
    return str(path)


def _short_address(path: Path) -> str:
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    base = paths.private_dir(Path(tempfile.gettempdir()) / f"xmesh-{os.getuid()}")
    return str(base / f"{digest}.sock")


def is_live(path: Path, timeout: float = 1.0) -> bool:
    """True when something accepts connections on the control socket at `path`."""
    if not path.exists() and not path.is_symlink():
        return False
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(_connect_address(path))
        return True
    except (OSError, paths.UnsafeDirectory):
        return False
    finally:
        sock.close()


def ensure_not_running(peer: str) -> None:
    """Raise PeerAlreadyRunning when a live peer of this name answers on its control socket."""
    path = control_path(peer)
    if is_live(path):
        info = _read_status(path.parent / "peer.json")
        pid = f" (pid {info['pid']})" if "pid" in info else ""
        raise PeerAlreadyRunning(
            f"peer {peer} is already running{pid}; stop it with `xmesh-agent stop {peer}` or pick another name"
        )


def running_peers() -> list[str]:
    """Names of the local peers whose control socket answers."""
    root = paths.xmesh_home() / "peers"
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if is_live(d / "control.sock"))


def call(peer: str, cmd: str, timeout: float = 10.0, **args: Any) -> dict[str, Any]:
    """Send one command to a running peer and return its reply (raises PeerNotRunning)."""
    path = control_path(peer)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(_connect_address(path))
        except OSError:
            raise PeerNotRunning(peer) from None
        sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        return {"ok": False, "error": f"{peer} did not answer within {timeout:g}s"}
    finally:
        sock.close()
    try:
        reply = json.loads(data)
    except ValueError:
        return {"ok": False, "error": f"{peer} closed the control connection without a reply"}
    return reply if isinstance(reply, dict) else {"ok": False, "error": "malformed reply"}


Handler = Callable[["ControlServer", dict[str, Any]], Awaitable[dict[str, Any]]]
"""One control command: (server, request) -> the reply's fields; the peer wires them in (control_cmds)."""


class ControlServer:
    """Serves one peer's control socket and keeps the little state the read commands show."""

    def __init__(
        self,
        peer: ControlledPeer,
        handlers: Mapping[str, Handler] | None = None,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self.peer = peer
        self.handlers: Mapping[str, Handler] = handlers or {}
        self.on_stop = on_stop
        self.path = control_path(peer.config.name)
        self.state = "starting"
        self.started_monotonic = time.monotonic()
        self.seen: Counter[str] = Counter()
        self.stop_reason: str | None = None
        """Why this run is stopping: signal, stop command, duration, cost cap (the first one given)."""
        self._watchers: dict[str, asyncio.Task] = {}
        self._ended: dict[str, None] = Recent(ENDED_KEPT)
        """Wakes whose outcome is counted, newest last (bounded): a wake is counted once."""
        self._server: asyncio.base_events.Server | None = None
        self._address: str | None = None
        self._drain_task: asyncio.Task | None = None

    @property
    def serving(self) -> bool:
        return self._server is not None

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the socket; refuse if a live peer of this name holds it, replace it if stale."""
        path = self.path
        ensure_not_running(self.peer.config.name)
        with contextlib.suppress(FileNotFoundError):
            stale = _connect_address(path) if path.is_symlink() else None
            path.unlink()
            if stale:
                Path(stale).unlink(missing_ok=True)
        paths.ensure_dir(path.parent)
        address = str(path)
        if len(address) > SUN_PATH_MAX:
            address = _short_address(path)
            Path(address).unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, address, limit=MAX_REQUEST)
        os.chmod(address, 0o600)
        if address != str(path):
            os.symlink(address, path)
        self._address = address
        self.state = "running"
        self.started_monotonic = time.monotonic()
        self.peer.events.listeners.append(self._on_event)

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2.0)
        self._server = None
        for task in self._watchers.values():
            task.cancel()
        await asyncio.gather(*self._watchers.values(), return_exceptions=True)
        self._watchers.clear()
        with contextlib.suppress(ValueError):
            self.peer.events.listeners.remove(self._on_event)
        self.path.unlink(missing_ok=True)
        if self._address and self._address != str(self.path):
            Path(self._address).unlink(missing_ok=True)

    # -- the wire -------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await self._reply(writer, {"ok": False, "error": f"request over {MAX_REQUEST} bytes"})
                    return
                if not line:
                    return
                await self._reply(writer, await self.handle(line))
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, reply: dict[str, Any]) -> None:
        writer.write(json.dumps(reply, default=str).encode() + b"\n")
        await writer.drain()

    async def handle(self, line: bytes) -> dict[str, Any]:
        """One request line -> one reply; bad input is an error reply, never an exception."""
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "request is not JSON"}
        if not isinstance(request, dict):
            return {"ok": False, "error": 'request must be a JSON object like {"cmd": "status"}'}
        cmd = request.get("cmd")
        handler = self.handlers.get(cmd) if isinstance(cmd, str) else None
        if handler is None:
            known = ", ".join(self.handlers)
            return {"ok": False, "error": f"unknown command {str(cmd)[:40]!r}; known: {known}"}
        try:
            return {"ok": True, **await handler(self, request)}
        except LookupError as exc:
            return {"ok": False, "error": str(exc.args[0]) if exc.args else "not found"}
        except Exception as exc:  # a control command must never take the peer down
            return {"ok": False, "error": f"{cmd} failed: {type(exc).__name__}: {exc}"}

    # -- wake tracking --------------------------------------------------------------------------

    def _on_event(self, evt: str, data: dict[str, Any]) -> None:
        wake = data.get("wakeId")
        if evt == "wake-started" and isinstance(wake, str) and wake not in self._watchers:
            self._watch(wake)

    def _watch(self, wake: str) -> None:
        """Count the wake's outcome when it ends; the entry goes with it (a week of wakes holds none)."""
        if wake in self._ended:
            return
        task = asyncio.get_running_loop().create_task(self._await_wake(wake))
        self._watchers[wake] = task
        task.add_done_callback(
            lambda t: self._watchers.pop(wake, None) if self._watchers.get(wake) is t else None
        )

    async def _await_wake(self, wake: str) -> None:
        handle = self.peer.client.get_workflow_handle_for(WakeWorkflow.run, wake)
        try:
            result = await handle.result()
            outcome = str(result.outcome)
        except WorkflowFailureError:
            outcome = Outcome.FAILED.value
        except Exception:
            outcome = "unknown"
        if wake in self._ended:
            return
        self._ended[wake] = None
        self.seen[outcome] += 1

    def in_flight(self) -> list[str]:
        return [w for w, t in self._watchers.items() if not t.done()]

    async def drain(self, timeout: float = DRAIN_TIMEOUT) -> list[str]:
        """Stop starting wakes (the spool keeps new CMBs), wait for in-flight ones; return leftovers.

        A wake parked awaiting approval is not waited for: it survives the restart in Temporal.
        """
        self.state = "draining"
        self.peer.stop_listening()
        # Visibility lags: a wake that just ended (its watcher gone) may still be listed as Running;
        # _watch skips the ones already counted.
        with contextlib.suppress(Exception):
            query = f"{peer_query(self.peer)} AND ExecutionStatus = 'Running'"
            async for wf in self.peer.client.list_workflows(query):
                if wf.id not in self._watchers:
                    self._watch(wf.id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            waiting = [
                t for w, t in list(self._watchers.items()) if not t.done() and not await self._parked(w)
            ]
            if not waiting:
                return []
            await asyncio.wait(waiting, timeout=0.5)
        return self.in_flight()

    async def _parked(self, wake: str) -> bool:
        handle = self.peer.client.get_workflow_handle_for(WakeWorkflow.run, wake)
        try:
            return await asyncio.wait_for(handle.query(WakeWorkflow.stage), 2.0) == "awaiting-approval"
        except Exception:
            return False

    def begin_stop(self, reason: str = "stop command") -> bool:
        """Drain, then stop, in the background. False when a stop is already under way."""
        if self._drain_task is not None:
            return False
        self.stop_reason = reason
        self._drain_task = asyncio.get_running_loop().create_task(self._stop_after_drain(reason))
        return True

    async def _stop_after_drain(self, reason: str) -> None:
        left = await self.drain()
        self.peer.events.event("stopping", {"reason": reason, "leftInFlight": left})
        if self.on_stop is not None:
            self.on_stop()


def _read_status(path: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            return data
    return {}


def peer_query(peer: ControlledPeer) -> str:
    return f"XmPeer = '{peer.config.name}' AND XmGroup = '{peer.config.group}'"
