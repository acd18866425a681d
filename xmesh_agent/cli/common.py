"""What every command shares: loading config with readable errors, exit codes, output helpers."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer

from xmesh_agent.config import AgentConfig, ConfigError, load_config

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
skip_finalization = False
"""Set by commands that opened a Temporal client: `main` then exits without interpreter finalization."""


def fail(message: str, code: int = EXIT_FAIL) -> NoReturn:
    typer.echo(f"xmesh-agent: {message}", err=True)
    raise typer.Exit(code)


def load_or_exit(path: Path) -> AgentConfig:
    """Load agent.toml or print one line per problem and exit 2 (a user mistake is never a traceback)."""
    try:
        return load_config(path)
    except ConfigError as exc:
        config_problems(exc, "`xmesh-agent schema` lists every key.")


def config_problems(exc: ConfigError, hint: str) -> NoReturn:
    """One line per problem (each with its file and TOML path), a count with `hint`, exit 2."""
    for line in str(exc).splitlines():
        typer.echo(line, err=True)
    typer.echo(f"{len(exc.problems)} problem(s) in {exc.source}; {hint}", err=True)
    raise typer.Exit(EXIT_USAGE)


def print_json(data: Any) -> None:
    """Every read command's --json: keys snake_case at every depth (xmesh_agent.jsonkeys)."""
    from xmesh_agent.jsonkeys import snake_keys

    json.dump(snake_keys(data), sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


ConfigOption = typer.Option(
    ...,
    "--config",
    "-c",
    help="Path to the peer's agent.toml (create one with `xmesh-agent init <peer> --role <role>`).",
    exists=False,
)
TemporalOption = typer.Option(
    None,
    "--temporal-address",
    envvar="TEMPORAL_ADDRESS",
    help="host:port of a Temporal frontend. Unset: the embedded dev server under ~/.xmesh is used "
    "(started on demand, shared by all peers on this machine).",
)
