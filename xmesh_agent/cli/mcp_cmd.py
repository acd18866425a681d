"""`mcp`: serve the mesh to an MCP client (Claude Code, Cursor, ...) over stdio."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import typer

from xmesh_agent.cli.common import EXIT_OK, EXIT_USAGE, TemporalOption, fail, load_or_exit


def mcp(
    group: str | None = typer.Option(
        None, "--group", "-g", help="The mesh group to join (same-host discovery)."
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="Join the group of this peer's agent.toml with its transports (registry, mDNS, static peers, relay).",
    ),
    name: str | None = typer.Option(
        None,
        "--name",
        help="This node's name on the mesh (default mcp-<user>; its key lives in the xmesh home).",
    ),
    operator: bool = typer.Option(
        False,
        "--operator",
        help="Also offer approve/deny of wakes held at an approval gate (the assistant then decides for you).",
    ),
    temporal_address: str | None = TemporalOption,
) -> None:
    """Be a node of a mesh group for an MCP client: tools publish, receive, recall, peers, wakes (and approve/deny with --operator).

    The client starts this command itself and talks MCP on its stdin/stdout; logs go to stderr.

    Claude Code: `claude mcp add xmesh -- xmesh-agent mcp --group demo`. Cursor and other clients: docs/mcp.md.
    """
    from xmesh_agent.cli.mcp_server import run_stdio
    from xmesh_agent.cli.mcp_session import MeshSession
    from xmesh_agent.observer import Join, ObserverError, default_name

    mesh = load_or_exit(config).mesh if config is not None else None
    try:
        join = Join.of(group, mesh, name or default_name("mcp"), chosen=name is not None).claim()
    except ObserverError as exc:
        fail(str(exc), EXIT_USAGE)
    try:
        import mcp as _sdk  # noqa: F401 - only to say clearly when it is missing
    except ImportError:
        fail("the MCP SDK is missing: pip install 'mcp>=1.20,<2'")
    if sys.stdin.isatty():
        typer.echo(
            f"xmesh-agent mcp: {join.name} in group {join.group}, speaking MCP on stdin/stdout: an MCP "
            "client starts this command (docs/mcp.md). Ctrl-C stops.",
            err=True,
        )
    with contextlib.suppress(KeyboardInterrupt):
        run_stdio(MeshSession(join), operator=operator, temporal_address=temporal_address)
    raise typer.Exit(EXIT_OK)
