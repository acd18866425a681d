"""`demo`: run a scenario's peers on the embedded Temporal and watch them work."""

from __future__ import annotations

import asyncio
import os
import re

import typer

from xmesh_agent.cli.common import EXIT_FAIL, EXIT_OK, TemporalOption, fail
from xmesh_agent.config import ConfigError

_KEY_VARS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match:
        raise typer.BadParameter("use a number with s, m or h, e.g. 90s, 10m, 1h")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"s": 1, "m": 60, "h": 3600}[unit]


def demo(
    scenario: str = typer.Argument("pair", help="Scenario name (scenarios/<name>.toml) or path."),
    model: str = typer.Option(
        None,
        "--model",
        help="offline | openai | anthropic | ollama. Default: the scenario's own adapter, or offline "
        "when its API key is not set.",
    ),
    duration: str = typer.Option(
        "5m", "--duration", help="Stop after this long at the latest (90s, 10m, 1h)."
    ),
    temporal_address: str | None = TemporalOption,
) -> None:
    """Run a demo mesh: the scenario's peers as separate processes, one seed task, live progress.

    Each wake is a Temporal workflow you can open in the Web UI. With no API key set, the peers
    use the offline adapter (deterministic, no network, no cost) and the demo says so.
    """
    from workers.client import external_target
    from workers.demo import lineage_lines, run_demo
    from xmesh_agent.scenario import load_scenario, resolve, with_overrides

    seconds = parse_duration(duration)
    if model and model not in ("offline", "openai", "anthropic", "ollama"):
        fail("--model must be offline, openai, anthropic or ollama", 2)
    try:
        spec, configs = load_scenario(resolve(scenario))
    except ConfigError as exc:
        fail(str(exc), 2)
    adapted = []
    for cfg in configs:
        adapter = model
        needed = _KEY_VARS.get(model or cfg.model.adapter)
        if needed and not os.environ.get(needed) and not cfg.model.api_key:
            typer.echo(f"{cfg.name}: {needed} is not set, using the offline adapter instead", err=True)
            adapter = "offline"
        adapted.append(with_overrides(cfg, group=spec.scenario.group, adapter=adapter))  # type: ignore[arg-type]
    typer.echo(f"demo {spec.scenario.name}: {spec.scenario.description}")
    try:
        report = asyncio.run(
            run_demo(spec, adapted, target=external_target(temporal_address), duration=seconds)
        )
    except (RuntimeError, OSError) as exc:
        fail(str(exc))
    typer.echo("")
    typer.echo("lineage of what the peers said:")
    for line in lineage_lines(report.cmbs, report.seed_key):
        typer.echo(f"  {line}")
    counts = ", ".join(f"{k}={v}" for k, v in sorted(report.by_outcome().items()))
    typer.echo(f"\n{len(report.outcomes)} wakes: {counts}")
    typer.echo("browse them: `xmesh-agent server` then open its Web UI, or `xmesh-agent wakes`")
    if report.timed_out:
        typer.echo("stopped at --duration before the mesh went quiet", err=True)
    raise typer.Exit(EXIT_OK if report.outcomes else EXIT_FAIL)
