"""The `xmesh-agent` command: every subcommand lives in its own module and is registered here."""

from __future__ import annotations

import json

import typer

from xmesh_agent import __version__
from xmesh_agent.cli import (
    demo_cmd,
    identity_cmds,
    ops_cmds,
    peer_cmds,
    relay_cmd,
    server_cmds,
    setup_cmds,
    wakes_cmds,
)

app = typer.Typer(
    name="xmesh-agent",
    help="Autonomous LLM peers on a Mesh Memory Protocol mesh; every wake a durable Temporal workflow.\n\n"
    "Start with `xmesh-agent demo`, then `xmesh-agent init <peer> --role reviewer` and "
    "`xmesh-agent run --config <peer>.toml`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"xmesh-agent {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", "-v", callback=_version, is_eager=True, help="Show version."
    ),
) -> None:
    """Autonomous LLM peers on an MMP mesh."""


@app.command()
def schema() -> None:
    """Print the JSON Schema of agent.toml (every section, key, default and bound)."""
    from xmesh_agent.config import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))


app.command("run")(peer_cmds.run)
app.command("dry-run")(peer_cmds.dry_run)
app.command("demo")(demo_cmd.demo)
app.command("relay")(relay_cmd.relay)
app.add_typer(server_cmds.app, name="server")
app.command("init")(setup_cmds.init)
app.command("doctor")(setup_cmds.doctor)
app.command("migrate")(setup_cmds.migrate)
app.command("keygen")(identity_cmds.keygen)
app.command("fingerprint")(identity_cmds.fingerprint)
app.add_typer(identity_cmds.trust_app, name="trust")
app.add_typer(wakes_cmds.wakes_app, name="wakes")
app.command("replay")(wakes_cmds.replay)
app.command("approve")(wakes_cmds.approve)
app.command("deny")(wakes_cmds.deny)

for _name in ("stop", "status", "cost", "trace", "peers", "logs"):
    app.command(_name)(getattr(ops_cmds, _name))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
