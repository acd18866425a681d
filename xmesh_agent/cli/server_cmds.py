"""`server`: the embedded Temporal dev server (start in the foreground, status, stop)."""

from __future__ import annotations

import os

import typer

from xmesh_agent.cli.common import EXIT_OK, EXIT_USAGE, fail, print_json

app = typer.Typer(
    help="The embedded Temporal dev server that peers share on this machine (SQLite under ~/.xmesh).",
    invoke_without_command=True,
    no_args_is_help=False,
)


@app.callback()
def server(
    ctx: typer.Context,
    ip: str = typer.Option(
        "127.0.0.1",
        "--ip",
        "--host",
        help="Address to listen on: 127.0.0.1 (this machine only), an address of this host, or 0.0.0.0 "
        "(peers on other hosts then set \\[temporal] address to this host's address and the port).",
    ),
    port: int | None = typer.Option(
        None, "--port", min=1, max=65535, help="Frontend port. Default: the port it used last, else 7233."
    ),
    ui_port: int | None = typer.Option(
        None, "--ui-port", min=1, max=65535, help="Web UI port. Default: the one it used last, else 8233."
    ),
) -> None:
    """Run the embedded Temporal server in the foreground (Ctrl-C stops it).

    Peers start it on demand anyway; run it yourself to watch its log, to keep it up between
    peer runs, or to share it with peers on other hosts (`--ip 0.0.0.0`). Subcommands: `status`, `stop`.
    """
    if ctx.invoked_subcommand is not None:
        return
    import ipaddress

    from xmesh_agent.workers.devserver import ServerError, run_foreground

    try:
        ipaddress.ip_address(ip)
    except ValueError:
        fail(f"--ip must be an IP address such as 127.0.0.1, 0.0.0.0 or 10.0.0.5 (got {ip!r})", EXIT_USAGE)
    try:
        raise typer.Exit(run_foreground(ip, port, ui_port))
    except ServerError as exc:
        fail(str(exc))


def _users() -> list[str]:
    """The running peers that hold a lease on the embedded server, by name (or pid)."""
    import json

    from xmesh_agent import paths
    from xmesh_agent.workers.devserver import lease_holders

    names: dict[int, str] = {}
    root = paths.xmesh_home() / "peers"
    for status in root.glob("*/peer.json") if root.is_dir() else []:
        try:
            data = json.loads(status.read_text())
            names[int(data["pid"])] = str(data["peer"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return [names.get(pid, f"pid {pid}") for pid in lease_holders() if pid != os.getpid()]


@app.command()
def status(
    as_json: bool = typer.Option(
        False, "--json", help="{running, pid, address, ui_url, db_file, log_file, used_by}."
    ),
) -> None:
    """Say whether the embedded server runs, where, and where its Web UI is."""
    from dataclasses import asdict

    from xmesh_agent.workers.devserver import running_server

    info = running_server()
    if as_json:
        print_json({"running": info is not None, **(asdict(info) if info else {}), "used_by": _users()})
        raise typer.Exit(EXIT_OK)
    if info is None:
        typer.echo("embedded Temporal: not running (a peer starts it on demand)")
        raise typer.Exit(EXIT_OK)
    typer.echo(f"embedded Temporal: running, pid {info.pid}, address {info.address}")
    typer.echo(f"Web UI: {info.ui_url}")
    typer.echo(f"data: {info.db_file}")
    users = _users()
    typer.echo(f"used by: {', '.join(users) if users else 'no running peer'}")


@app.command()
def stop() -> None:
    """Stop the embedded server (running peers lose Temporal until it is started again)."""
    from xmesh_agent.workers.devserver import stop as stop_server

    users = _users()
    if not stop_server():
        typer.echo("embedded Temporal was not running")
        return
    if not users:
        typer.echo("stopped (no running peer used it)")
        return
    typer.echo(
        f"stopped; {len(users)} running peer(s) used it: {', '.join(users)}. They wait for it and "
        "reconnect when it is started again (`xmesh-agent server`, or the next peer to start)."
    )
