"""`run` and `dry-run`: start a peer, or check that it could start."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import typer

from xmesh_agent.cli.common import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_USAGE,
    ConfigOption,
    TemporalOption,
    fail,
    load_or_exit,
    print_json,
)
from xmesh_agent.config import AgentConfig
from xmesh_agent.durations import parse_duration
from xmesh_agent.roles import preset_weights


def run(
    config: Path = ConfigOption,
    temporal_address: str | None = TemporalOption,
    duration: str | None = typer.Option(
        None,
        "--duration",
        help="Stop gracefully after this long: 300 (seconds), 90s, 5m, 1h (in-flight wakes finish).",
    ),
    max_cost: float | None = typer.Option(
        None,
        "--max-cost",
        min=0.0,
        help="USD for this run: lowers [budget] max_cost_usd_per_run to it, and the run stops once spent.",
    ),
    summary: Path | None = typer.Option(
        None, "--summary", help="Write this run's totals as JSON here at exit (wakes, CMBs emitted, USD)."
    ),
) -> None:
    """Run a peer until Ctrl-C or `xmesh-agent stop <peer>` (or --duration / --max-cost).

    The peer joins its mesh group, wakes on every admitted CMB as a durable Temporal workflow
    (visible in the Web UI), and answers on the mesh inside its safety envelope.

    Example (a bounded CI run): `xmesh-agent run --config p.toml --duration 300 --max-cost 1 --summary s.json`.
    """
    try:
        seconds = parse_duration(duration) if duration is not None else None
    except ValueError as exc:
        fail(f"--duration {exc}", EXIT_USAGE)
    if seconds is not None and seconds < 0.1:
        fail(f"--duration must be at least 0.1 s (got {duration})", EXIT_USAGE)
    cfg = load_or_exit(config)
    if max_cost is not None:
        if not max_cost > 0:
            fail(f"--max-cost must be a positive number of USD (got {max_cost:g})", EXIT_USAGE)
        cfg.budget.max_cost_usd_per_run = min(cfg.budget.max_cost_usd_per_run, max_cost)
    from xmesh_agent.models.factory import missing_keys

    for problem in missing_keys(cfg.model):  # before any connection: a peer that cannot call its models
        fail(problem)
    encoder_ok, encoder_detail = _encoder_check(cfg)
    if not encoder_ok:
        fail(f"[mesh] encoder = {cfg.mesh.encoder!r}: {encoder_detail}")
    from xmesh_agent.paths import UnsafeDirectory
    from xmesh_agent.workers.bounds import RunBounds
    from xmesh_agent.workers.client import TemporalUnreachable, external_target
    from xmesh_agent.workers.control import PeerAlreadyRunning
    from xmesh_agent.workers.devserver import ServerError
    from xmesh_agent.workers.peer import run_peer
    from xmesh_agent.workers.telemetry import TelemetryError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    target = external_target(
        temporal_address or cfg.temporal.address,
        cfg.temporal.namespace,
        cfg.temporal.api_key,
        cfg.temporal.tls,
    )
    from xmesh_agent.config import mesh_reach

    typer.echo(f"{cfg.name}: mesh {mesh_reach(cfg.mesh)}", err=True)
    if cfg.model.adapter == "offline":
        typer.echo(
            f"{cfg.name}: using the OFFLINE model adapter (deterministic, no network, no cost)", err=True
        )
    try:
        bounds = RunBounds(seconds, max_cost, summary, str(config))
        code = asyncio.run(run_peer(cfg, target, bounds=bounds))
    except (ServerError, PeerAlreadyRunning, TelemetryError, UnsafeDirectory, TemporalUnreachable) as exc:
        fail(str(exc))
    except RuntimeError as exc:
        if "Failed client connect" not in str(exc):
            raise
        where = target.address if target else "the embedded server"
        fail(f"cannot reach Temporal at {where}: {str(exc).splitlines()[0][:200]}")
    except KeyboardInterrupt:
        code = EXIT_OK
    raise typer.Exit(code)


def _encoder_check(cfg: AgentConfig) -> tuple[bool, str]:
    """Whether the SVAF encoder `[mesh] encoder` names can run here (no model is loaded)."""
    if cfg.mesh.encoder == "lexical":
        from xmesh_agent.mmp.admission.encoder import DEFAULT_ENCODER

        return True, f"lexical ({DEFAULT_ENCODER.kernel_id}, built in)"
    from xmesh_agent.mmp.admission.semantic import semantic_status

    ok, detail = semantic_status()
    return ok, f"semantic: {detail}"


def _fallback_checks(cfg: AgentConfig) -> list[tuple[str, bool, str]]:
    """The chain in one row, then each fallback's own key/price/host checks, named `fallback N ...`."""
    from xmesh_agent.models.factory import check_adapter

    chain = cfg.model.chain()
    if len(chain) == 1:
        return [("model fallback", True, "none (a wake whose model fails ends failed or circuit-open)")]
    checks = [("model fallback", True, " -> ".join(m.label for m in chain))]
    for i, model in enumerate(chain[1:], start=1):
        checks += [(f"fallback {i} {name}", ok, detail) for name, ok, detail in check_adapter(model)]
    return checks


def _checks(cfg: AgentConfig, temporal_address: str | None) -> list[tuple[str, bool, str]]:
    from xmesh_agent.models.factory import check_adapter
    from xmesh_agent.workers.client import external_target, probe_problem
    from xmesh_agent.workers.devserver import ServerError, running_server, temporal_binary

    checks: list[tuple[str, bool, str]] = [
        ("load config", True, f"peer={cfg.name} group={cfg.group} adapter={cfg.model.adapter}")
    ]
    checks += check_adapter(cfg.model)
    checks += _fallback_checks(cfg)
    from xmesh_agent.workers import telemetry

    checks += telemetry.check(cfg.observability)
    from xmesh_agent.config import mesh_reach

    checks.append(("mesh", True, mesh_reach(cfg.mesh)))
    weights = cfg.weights
    checks.append(("SVAF α weights", True, " ".join(f"{k}={v:g}" for k, v in weights.items())))
    checks.append(("SVAF encoder", *_encoder_check(cfg)))
    preset = preset_weights(cfg.identity.role or "")
    if preset and preset != weights:
        off = ", ".join(
            f"{k}={weights[k]:g} (preset {preset[k]:g})" for k in preset if preset[k] != weights[k]
        )
        checks.append(
            ("role sanity", True, f"(warn) weights differ from the {cfg.identity.role} preset: {off}")
        )
    else:
        checks.append(("role sanity", True, f"role {cfg.identity.role}"))
    b = cfg.budget
    checks.append(
        (
            "budget sanity",
            b.max_cost_usd_per_run > 0 or cfg.model.adapter in ("offline", "ollama"),
            f"wakes={b.max_wakes_per_minute}/min cost=${b.max_cost_usd_per_run:g}/run",
        )
    )
    target = external_target(
        temporal_address or cfg.temporal.address, cfg.temporal.namespace, tls=cfg.temporal.tls
    )
    if target is None:
        try:
            binary = temporal_binary()
            info = running_server()
            detail = (
                f"embedded server running at {info.address}"
                if info
                else f"embedded server can start ({binary})"
            )
            checks.append(("temporal", True, detail))
        except ServerError as exc:
            checks.append(("temporal", False, str(exc)))
    else:
        problem = probe_problem(target.address, tls=target.tls or bool(target.api_key))
        checks.append(("temporal", problem is None, problem or f"{target.address} answers gRPC"))
    return checks


def dry_run(
    config: Path = ConfigOption,
    temporal_address: str | None = TemporalOption,
    as_json: bool = typer.Option(False, "--json", help="{config, passed, checks: [{name, ok, detail}]}."),
) -> None:
    """Check a peer's config, model adapter and Temporal without joining the mesh or calling a model.

    Prints one line per check and PASS/FAIL; exits 0 when every check passes, 1 otherwise.
    """
    if not as_json:
        typer.echo("dry-run: no mesh join, no model call, no CMB emission")
        typer.echo(f"config: {config}")
    cfg = load_or_exit(config)
    checks = _checks(cfg, temporal_address)
    if as_json:
        passed_all = all(ok for _, ok, _ in checks)
        rows = [{"name": name, "ok": ok, "detail": detail} for name, ok, detail in checks]
        print_json({"config": str(config), "peer": cfg.name, "passed": passed_all, "checks": rows})
        raise typer.Exit(EXIT_OK if passed_all else EXIT_FAIL)
    for name, ok, detail in checks:
        typer.echo(f"  {'ok  ' if ok else 'FAIL'} | {name} — {detail}")
    passed = sum(ok for _, ok, _ in checks)
    verdict = "PASS" if passed == len(checks) else "FAIL"
    typer.echo(f"{verdict} — {passed}/{len(checks)} checks passed")
    if verdict == "PASS":
        typer.echo(f"start it with: xmesh-agent run --config {config}")
    raise typer.Exit(EXIT_OK if verdict == "PASS" else EXIT_FAIL)
