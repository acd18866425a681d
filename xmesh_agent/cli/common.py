"""What every command shares: loading config with readable errors, exit codes, output helpers."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer

from xmesh_agent.config import AgentConfig, ConfigError, load_config

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|[smh]?)\s*")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str, *, allow_ms: bool = False) -> float:
    """Seconds from `300`, `90s`, `5m`, `1h` (and `2000ms` where `allow_ms`); ValueError otherwise."""
    match = _DURATION.fullmatch(str(text))
    if not match or (match.group(2) == "ms" and not allow_ms):
        units = "ms, s, m or h" if allow_ms else "s, m or h"
        raise ValueError(
            f"{text!r} is not a duration: use a number of seconds or a number with {units}, e.g. 300, 90s, 5m, 1h"
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def fail(message: str, code: int = EXIT_FAIL) -> NoReturn:
    typer.echo(f"xmesh-agent: {message}", err=True)
    raise typer.Exit(code)


def load_or_exit(path: Path) -> AgentConfig:
    """Load agent.toml or print one line per problem and exit 2 (a user mistake is never a traceback)."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            typer.echo(line, err=True)
        typer.echo(
            f"{len(exc.problems)} problem(s) in {path}; `xmesh-agent schema` lists every key.", err=True
        )
        raise typer.Exit(EXIT_USAGE) from None


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
