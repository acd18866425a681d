"""`relay`: run the MMP WebSocket relay, so peers on different hosts or networks can reach each other.

Peers point at it with `[mesh] relay = "ws://host:8765"` and `relay_token = "..."`. Each token is
its own channel; with no token the relay is open to anyone who can reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal

import typer

from xmesh_agent.cli.common import EXIT_OK, EXIT_USAGE, fail

DEFAULT_PORT = 8765


async def _serve(host: str, port: int, tokens: list[str]) -> None:
    """serve_forever until SIGINT/SIGTERM: connections close cleanly instead of dying mid-frame."""
    from xmesh_agent.mmp.relay.server import serve_forever

    loop = asyncio.get_running_loop()
    task = asyncio.create_task(serve_forever(host, port, tokens or None))
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def relay(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0 in a container)."),
    port: int = typer.Option(DEFAULT_PORT, "--port", help="TCP port for ws:// connections."),
    token: list[str] = typer.Option(
        None,
        "--token",
        help="A channel token peers must present (repeatable). Without it, XMESH_RELAY_TOKEN: "
        "tokens separated by commas or newlines. Neither: an open relay.",
    ),
) -> None:
    """Run a WebSocket relay for peers that cannot reach each other directly (other hosts, NAT, Docker)."""
    if not 0 < port < 65536:
        fail("--port must be between 1 and 65535", EXIT_USAGE)
    if not token:
        # not typer's envvar: click splits a list option's variable on whitespace, tearing a token apart
        token = [t.strip() for t in re.split(r"[,\n]", os.environ.get("XMESH_RELAY_TOKEN", ""))]
    tokens = [t for t in token if t.strip()]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    channels = (
        f"{len(tokens)} token channel(s)" if tokens else "OPEN (no token: anyone who reaches it may join)"
    )
    typer.echo(f"relay listening on ws://{host}:{port}, {channels}; Ctrl-C stops it", err=True)
    try:
        asyncio.run(_serve(host, port, tokens))
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    raise typer.Exit(EXIT_OK)
