"""The durability tests' dev server keeps starting when another process takes its port first (a port
picked free can be taken before the server binds it; CI saw it once)."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.integration.process_kit import DevServerProcess, port_open


def test_a_dev_server_whose_port_was_taken_starts_on_another(tmp_path: Path) -> None:
    squatter = socket.socket()  # bound, not listening: the local end of a connection, say
    squatter.bind(("127.0.0.1", 0))
    taken = squatter.getsockname()[1]
    server = DevServerProcess(tmp_path)
    server.port = taken
    try:
        server.start()
        assert server.port != taken and port_open(server.port)
        assert "address already in use" in (tmp_path / "server.log").read_text()
    finally:
        server.stop()
        squatter.close()
