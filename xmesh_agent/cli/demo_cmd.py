"""`demo`: run a scenario's peers on the embedded (or a given) Temporal and watch them work.

`xmesh-agent demo` runs the trio; `--soak --duration 2m --chaos 20s` keeps seeding tasks, crashes a
random peer every 20 s and exits 1 unless every wake is accounted for.
"""

from __future__ import annotations

import asyncio
import os

import typer

from xmesh_agent.cli.common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, TemporalOption, config_problems, fail
from xmesh_agent.config import AgentConfig, ConfigError
from xmesh_agent.durations import parse_duration
from xmesh_agent.models.factory import KEY_ENV

MODELS = ("offline", "openai", "anthropic", "mistral", "ollama")
DEFAULT_DURATION = "5m"


def _ollama_up(cfg: AgentConfig) -> bool:
    import httpx

    base = cfg.model.base_url or os.environ.get("OLLAMA_HOST") or "http://127.0.0.1:11434"
    if "://" not in base:
        base = f"http://{base}"
    try:
        return httpx.get(f"{base.rstrip('/')}/api/tags", timeout=1.5).status_code == 200
    except httpx.HTTPError:
        return False


def pick_adapter(cfg: AgentConfig, model: str | None) -> tuple[str | None, str | None]:
    """(adapter override or None, a note when the peer falls back to offline)."""
    wanted = model or cfg.model.adapter
    needed = KEY_ENV.get(wanted)
    if needed and not os.environ.get(needed) and not (cfg.model.api_key and not model):
        return "offline", f"{cfg.name}: {needed} is not set, using the offline adapter instead"
    if wanted == "ollama" and not _ollama_up(cfg):
        return "offline", f"{cfg.name}: no Ollama answers, using the offline adapter instead"
    return model, None


def demo(
    scenario: str = typer.Argument("trio", help="Scenario name (scenarios/<name>.toml) or path."),
    model: str = typer.Option(
        None,
        "--model",
        help="offline | openai | anthropic | mistral | ollama. Default: each peer's own adapter, or offline "
        "when its API key is not set (or no Ollama answers).",
    ),
    duration: str = typer.Option(
        None,
        "--duration",
        help=f"Stop after this long at the latest (90s, 10m, 1h); soak: how long to keep seeding. "
        f"Default: the scenario's, else {DEFAULT_DURATION}.",
    ),
    soak: bool = typer.Option(
        False, "--soak", help="Keep seeding tasks for --duration, then drain and check the accounting."
    ),
    chaos: str = typer.Option(
        None, "--chaos", help="With --soak: SIGKILL and restart a random peer this often (e.g. 20s)."
    ),
    seed_every: str = typer.Option("15s", "--seed-every", help="With --soak: seed a new task this often."),
    keep_server: bool = typer.Option(
        True,
        "--keep-server/--stop-server",
        help="Leave the embedded Temporal server running when the demo ends, to browse the wakes in its "
        "Web UI (`xmesh-agent server stop` stops it). Ctrl-C stops it, unless other peers of this "
        "machine still use it.",
    ),
    temporal_address: str | None = TemporalOption,
) -> None:
    """Run a demo mesh: the scenario's peers as separate processes, a seed task, live progress.

    Each wake is a Temporal workflow you can open in the Web UI. With no API key set, the peers
    use the offline adapter (deterministic, no network, no cost) and the demo says so. Running it
    again resumes the same mesh (state lives under ~/.xmesh) with a fresh seed.
    """
    from xmesh_agent.demo.runner import DemoOptions, lineage_lines, run_demo
    from xmesh_agent.scenario import load_scenario, resolve, with_overrides
    from xmesh_agent.workers.client import external_target

    if model and model not in MODELS:
        fail(f"--model must be one of {', '.join(MODELS)}", EXIT_USAGE)
    if chaos and not soak:
        fail("--chaos needs --soak", EXIT_USAGE)
    try:
        spec, configs = load_scenario(resolve(scenario))
    except ConfigError as exc:
        config_problems(exc, "scenarios/trio.toml shows every key of a scenario.")
    try:
        seconds = parse_duration(duration or spec.scenario.duration or DEFAULT_DURATION)
        chaos_s = parse_duration(chaos) if chaos else None
        seed_s = parse_duration(seed_every)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    if (chaos_s is not None and chaos_s < 1) or seed_s < 1:
        fail("--chaos and --seed-every must be at least 1s", EXIT_USAGE)
    adapted = []
    for cfg in configs:
        adapter, note = pick_adapter(cfg, model)
        if note:
            typer.echo(note, err=True)
        adapted.append(with_overrides(cfg, group=spec.scenario.group, adapter=adapter))  # type: ignore[arg-type]
    mode = " (soak" + (f", chaos every {chaos_s:g}s" if chaos_s else "") + ")" if soak else ""
    typer.echo(f"demo {spec.scenario.name}{mode}: {spec.scenario.description}")
    options = DemoOptions(
        duration=seconds, soak=soak, chaos=chaos_s, seed_every=seed_s, keep_server=keep_server
    )
    target = external_target(temporal_address)
    report = asyncio.run(run_demo(spec, adapted, target=target, options=options, say=_say))
    if report.error:
        fail(report.error)
    if not soak and report.seed_key:
        typer.echo("\nlineage of what the peers said:")
        for line in lineage_lines(report.cmbs, report.seed_key):
            typer.echo(f"  {line}")
    typer.echo(f"\nrun {report.run} of {spec.scenario.name}, group {spec.scenario.group}:")
    for line in report.tally.table():
        typer.echo(f"  {line}")
    if soak:
        typer.echo(f"\nsoak accounting ({len(report.seed_keys)} seeds, {report.kills} peer kills):")
        for check in report.checks:
            typer.echo(check.line())
    if report.ui_url and report.server_kept:
        typer.echo(f"\nbrowse the wakes: {report.ui_url} (filter XmGroup = '{spec.scenario.group}')")
        typer.echo("the embedded Temporal server keeps running for that; `xmesh-agent server stop` stops it")
    elif report.ui_url and report.server_stopped:
        typer.echo("\nthe embedded server stopped; `xmesh-agent server` brings it and its Web UI back")
    elif report.ui_url and target is None:
        typer.echo(
            f"\nthe embedded server keeps running: other peers on this machine still use it "
            f"(`xmesh-agent watch` lists them); its Web UI: {report.ui_url}"
        )
    if report.tally.held:
        peers = sorted({h["peer"] for h in report.tally.held.values()})
        typer.echo(
            f"\n{len(report.tally.held)} wake(s) still await your approval. They stay held in Temporal (until "
            "[safety] approval_timeout_seconds); only a running peer takes a decision, so decide while the "
            "demo runs again, or its peer runs: "
            + ", ".join(f"xmesh-agent approve --peer {p} --all" for p in peers)
        )
    if report.timed_out:
        typer.echo("stopped at --duration before the mesh went quiet", err=True)
    if report.interrupted:
        raise typer.Exit(EXIT_FAIL if soak else EXIT_OK)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_FAIL)


def _say(line: str) -> None:
    typer.echo(line)
