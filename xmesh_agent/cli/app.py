"""The `xmesh-agent` command: every subcommand lives in its own module and is registered here."""

from __future__ import annotations

import json
import os
import sys

import typer

from xmesh_agent import __version__
from xmesh_agent.cli import (
    approval_cmds,
    common,
    demo_cmd,
    identity_cmds,
    logs_cmd,
    mcp_cmd,
    mesh_cmds,
    ops_cmds,
    peer_cmds,
    relay_cmd,
    server_cmds,
    setup_cmds,
    tail_cmd,
    wakes_cmds,
    watch_cmd,
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


START = "Start peers"
OPERATE = "Operate running peers"
WAKES = "Wakes: list, replay, approve"
SETUP = "Set up: config, keys, trust, this machine"

app.command("demo", rich_help_panel=START)(demo_cmd.demo)
app.command("run", rich_help_panel=START)(peer_cmds.run)
app.command("dry-run", rich_help_panel=START)(peer_cmds.dry_run)
app.add_typer(server_cmds.app, name="server", rich_help_panel=START)
app.command("relay", rich_help_panel=START)(relay_cmd.relay)

for _name in ("status", "peers", "cost", "trace"):
    app.command(_name, rich_help_panel=OPERATE)(getattr(ops_cmds, _name))
app.command("logs", rich_help_panel=OPERATE)(logs_cmd.logs)
app.command("stop", rich_help_panel=OPERATE)(ops_cmds.stop)
app.command("watch", rich_help_panel=OPERATE)(watch_cmd.watch)

TALK = "Talk to a running mesh"
app.command("publish", rich_help_panel=TALK)(mesh_cmds.publish)
app.command("recall", rich_help_panel=TALK)(mesh_cmds.recall)
app.command("show", rich_help_panel=TALK)(mesh_cmds.show)
app.command("tail", rich_help_panel=TALK)(tail_cmd.tail)
app.command("mcp", rich_help_panel=TALK)(mcp_cmd.mcp)

app.add_typer(wakes_cmds.wakes_app, name="wakes", rich_help_panel=WAKES)
app.command("replay", rich_help_panel=WAKES)(wakes_cmds.replay)
app.command("approve", rich_help_panel=WAKES)(approval_cmds.approve)
app.command("deny", rich_help_panel=WAKES)(approval_cmds.deny)


@app.command(rich_help_panel=SETUP)
def schema() -> None:
    """Print the JSON Schema of agent.toml (every section, key, default and bound)."""
    from xmesh_agent.config import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))


app.command("init", rich_help_panel=SETUP)(setup_cmds.init)
app.command("keygen", rich_help_panel=SETUP)(identity_cmds.keygen)
app.command("fingerprint", rich_help_panel=SETUP)(identity_cmds.fingerprint)
app.add_typer(identity_cmds.trust_app, name="trust", rich_help_panel=SETUP)
app.command("doctor", rich_help_panel=SETUP)(setup_cmds.doctor)
app.command("migrate", rich_help_panel=SETUP)(setup_cmds.migrate)


def main() -> None:
    try:
        app()
    except SystemExit as exc:
        if not common.skip_finalization:
            raise
        # temporalio's Rust client threads can call into Python while a short-lived process finalizes
        # and abort it (SIGABRT after the command succeeded: sdk-python issue 300); skip finalization.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exc.code if isinstance(exc.code, int) else 1)


if __name__ == "__main__":
    main()
