"""The control socket layer on its own: a home too long for a Unix socket path, stale sockets, liveness."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from xmesh_agent.config import parse_config
from xmesh_agent.logs import PeerLog
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
