"""The control socket layer on its own: a home too long for a Unix socket path, stale sockets, liveness."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from xmesh_agent.config import parse_config
from xmesh_agent.logs import PeerLog
from xmesh_agent.paths import UnsafeDirectory
from xmesh_agent.workers.control import (
    ControlServer,
    PeerAlreadyRunning,
    call,
    control_path,
    is_live,
    running_peers,
)


def bare_peer(name: str) -> SimpleNamespace:
    """The parts of a Peer the socket layer touches (no node, no Temporal: those are integration tests)."""
    cfg = parse_config({"identity": {"name": name}, "mesh": {}, "model": {"adapter": "offline"}})
    return SimpleNamespace(config=cfg, events=PeerLog(name, Path(os.environ["XMESH_HOME"]) / f"{name}.log"))


async def test_long_home_gets_a_short_socket_behind_a_symlink(tmp_path: Path, monkeypatch) -> None:
    home = tmp_path / ("deep-" * 20) / "home"
    monkeypatch.setenv("XMESH_HOME", str(home))
    path = control_path("long-1")
    assert len(str(path)) > 108
    server = ControlServer(bare_peer("long-1"))  # type: ignore[arg-type]
    await server.start()
    try:
        assert path.is_symlink() and is_live(path) and running_peers() == ["long-1"]
        target = Path(os.readlink(path))
        assert target.stat().st_mode & 0o777 == 0o600
        reply = await asyncio.to_thread(call, "long-1", "no-such-command")
        assert reply["ok"] is False and "unknown command" in reply["error"]
        second = ControlServer(bare_peer("long-1"))  # type: ignore[arg-type]
        with pytest.raises(PeerAlreadyRunning):
            await second.start()
        assert is_live(path)
    finally:
        await server.close()
    assert not path.exists() and not path.is_symlink() and not target.exists()
    assert running_peers() == []


async def test_stale_socket_is_replaced_and_a_plain_file_too(tmp_path: Path) -> None:
    path = control_path("stale-1")
    path.parent.mkdir(parents=True)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    assert not is_live(path)
    server = ControlServer(bare_peer("stale-1"))  # type: ignore[arg-type]
    await server.start()
    assert is_live(path)
    await server.close()
    path.write_text("junk")
    server = ControlServer(bare_peer("stale-1"))  # type: ignore[arg-type]
    await server.start()
    assert is_live(path)
    await server.close()


@pytest.fixture
def long_home(tmp_path: Path, monkeypatch) -> Path:
    """A home too long for a Unix socket path, and a private temp root in place of the shared /tmp."""
    monkeypatch.setenv("XMESH_HOME", str(tmp_path / ("deep-" * 20) / "home"))
    tmp_root = tmp_path / "t"
    tmp_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_root))
    return tmp_root / f"xmesh-{os.getuid()}"


async def test_the_fallback_directory_is_created_private(long_home: Path) -> None:
    old = os.umask(0)
    try:
        server = ControlServer(bare_peer("priv-1"))  # type: ignore[arg-type]
        await server.start()
    finally:
        os.umask(old)
    try:
        st = long_home.lstat()
        assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid()
    finally:
        await server.close()


@pytest.mark.skipif(os.getuid() != 0, reason="handing a directory to another uid needs root")
async def test_a_fallback_directory_owned_by_another_uid_is_refused(long_home: Path) -> None:
    # issue 22: another local user pre-creates /tmp/xmesh-<uid> and swaps the socket in it
    long_home.mkdir(mode=0o700)
    os.chown(long_home, 65534, 65534)
    server = ControlServer(bare_peer("priv-2"))  # type: ignore[arg-type]
    with pytest.raises(UnsafeDirectory, match="owner uid 65534"):
        await server.start()
    assert list(long_home.iterdir()) == [] and not control_path("priv-2").is_symlink()


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o701])
async def test_a_fallback_directory_open_to_others_is_refused(long_home: Path, mode: int) -> None:
    long_home.mkdir()
    long_home.chmod(mode)
    server = ControlServer(bare_peer("priv-3"))  # type: ignore[arg-type]
    with pytest.raises(UnsafeDirectory, match=f"mode {mode:o}"):
        await server.start()
    assert list(long_home.iterdir()) == []


async def test_a_fallback_directory_that_is_a_symlink_is_refused(long_home: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    long_home.symlink_to(elsewhere)
    with pytest.raises(UnsafeDirectory, match="not a directory"):
        await ControlServer(bare_peer("priv-4")).start()  # type: ignore[arg-type]


async def test_a_client_refuses_a_socket_whose_directory_changed_hands(long_home: Path) -> None:
    server = ControlServer(bare_peer("priv-5"))  # type: ignore[arg-type]
    await server.start()
    try:
        assert (await asyncio.to_thread(call, "priv-5", "no-such-command"))["ok"] is False
        long_home.chmod(0o777)  # as if the directory had been swapped for one others can write
        with pytest.raises(UnsafeDirectory):
            await asyncio.to_thread(call, "priv-5", "status")
        assert not is_live(control_path("priv-5"))
    finally:
        long_home.chmod(0o700)
        await server.close()


def test_the_cli_says_why_in_one_line(long_home: Path) -> None:
    long_home.mkdir()
    long_home.chmod(0o777)
    path = control_path("priv-6")
    path.parent.mkdir(parents=True)
    path.symlink_to(long_home / "x.sock")
    done = subprocess.run(
        [sys.executable, "-m", "xmesh_agent.cli.app", "status", "priv-6"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, TMPDIR=str(long_home.parent)),
    )
    assert done.returncode == 1 and "not private" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


class LaggingVisibility:
    """Temporal's visibility store is eventually consistent: right after a wake closes, a list query
    for Running wakes may still return it. The wake itself has ended (its result is final)."""

    def __init__(self, ended_wake: str) -> None:
        self.ended_wake = ended_wake

    def get_workflow_handle_for(self, _run, wake: str) -> SimpleNamespace:
        async def result() -> SimpleNamespace:
            return SimpleNamespace(outcome="emitted")

        async def query(_q) -> str:
            raise RuntimeError("workflow is closed")

        return SimpleNamespace(id=wake, result=result, query=query)

    async def list_workflows(self, _query: str):
        yield SimpleNamespace(id=self.ended_wake)


async def test_a_wake_listed_as_running_after_it_ended_is_counted_once(tmp_path: Path) -> None:
    """The bounded run's summary once said 3 wakes for 2 model calls: the drain at the cost cap listed
    the second wake as Running after its watcher had counted it, and counted it again."""
    peer = bare_peer("lagging")
    peer.client = LaggingVisibility("wake-lagging-k2")
    peer.stop_listening = lambda: None
    server = ControlServer(peer)
    await server.start()
    try:
        peer.events.event("wake-started", {"wakeId": "wake-lagging-k2"})
        await asyncio.wait_for(asyncio.gather(*server._watchers.values()), 5)
        assert server.seen == {"emitted": 1} and server.in_flight() == []
        assert await server.drain(timeout=5) == []
        assert server.seen == {"emitted": 1}
    finally:
        await server.close()
