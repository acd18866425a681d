"""`server`: the embedded Temporal dev server (start in the foreground, status, stop)."""

from __future__ import annotations

import typer

from xmesh_agent.cli.common import EXIT_OK, fail, print_json

app = typer.Typer(
    help="The embedded Temporal dev server that peers share on this machine (SQLite under ~/.xmesh).",
    invoke_without_command=True,
    no_args_is_help=False,
)


@app.callback()
def server(ctx: typer.Context) -> None:
    """Run the embedded Temporal server in the foreground (Ctrl-C stops it).

    Peers start it on demand anyway; run it yourself to watch its log, or to keep it up between
    peer runs. Subcommands: `status`, `stop`.
    """
    if ctx.invoked_subcommand is not None:
        return
    from xmesh_agent.workers.devserver import ServerError, run_foreground

    try:
        raise typer.Exit(run_foreground())
    except ServerError as exc:
        fail(str(exc))


@app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="{running, pid, address, ui_url, db_file, log_file}."),
) -> None:
    """Say whether the embedded server runs, where, and where its Web UI is."""
    from dataclasses import asdict

    from xmesh_agent.workers.devserver import running_server

    info = running_server()
    if as_json:
        print_json({"running": info is not None, **(asdict(info) if info else {})})
        raise typer.Exit(EXIT_OK)
    if info is None:
        typer.echo("embedded Temporal: not running (a peer starts it on demand)")
        raise typer.Exit(EXIT_OK)
    typer.echo(f"embedded Temporal: running, pid {info.pid}, address {info.address}")
    typer.echo(f"Web UI: {info.ui_url}")
    typer.echo(f"data: {info.db_file}")


@app.command()
def stop() -> None:
    """Stop the embedded server (running peers lose Temporal until it is started again)."""
    from xmesh_agent.workers.devserver import stop as stop_server

    typer.echo("stopped" if stop_server() else "embedded Temporal was not running")
