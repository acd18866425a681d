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
)
from xmesh_agent.config import AgentConfig
from xmesh_agent.roles import preset_weights


def run(
    config: Path = ConfigOption,
    temporal_address: str | None = TemporalOption,
    duration: float | None = typer.Option(
        None, "--duration", min=0.1, help="Stop gracefully after this many seconds (in-flight wakes finish)."
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
    from xmesh_agent.workers.bounds import RunBounds
    from xmesh_agent.workers.client import external_target
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
    if cfg.model.adapter == "offline":
        typer.echo(
            f"{cfg.name}: using the OFFLINE model adapter (deterministic, no network, no cost)", err=True
        )
    try:
        bounds = RunBounds(duration, max_cost, summary, str(config))
        code = asyncio.run(run_peer(cfg, target, bounds=bounds))
    except (ServerError, PeerAlreadyRunning, TelemetryError) as exc:
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
    from xmesh_agent.workers.client import external_target
    from xmesh_agent.workers.devserver import ServerError, port_open, running_server, temporal_binary

    checks: list[tuple[str, bool, str]] = [
        ("load config", True, f"peer={cfg.name} group={cfg.group} adapter={cfg.model.adapter}")
    ]
    checks += check_adapter(cfg.model)
    checks += _fallback_checks(cfg)
    from xmesh_agent.workers import telemetry

    checks += telemetry.check(cfg.observability)
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
        host, _, port = target.address.rpartition(":")
        ok = port.isdigit() and port_open(int(port), host or "127.0.0.1")
        checks.append(("temporal", ok, f"{target.address} {'reachable' if ok else 'not reachable'}"))
    return checks


def dry_run(
    config: Path = ConfigOption,
    temporal_address: str | None = TemporalOption,
) -> None:
    """Check a peer's config, model adapter and Temporal without joining the mesh or calling a model.

    Prints one line per check and PASS/FAIL; exits 0 when every check passes, 1 otherwise.
    """
    typer.echo("dry-run: no mesh join, no model call, no CMB emission")
    typer.echo(f"config: {config}")
    cfg = load_or_exit(config)
    checks = _checks(cfg, temporal_address)
    for name, ok, detail in checks:
        typer.echo(f"  {'ok  ' if ok else 'FAIL'} | {name} — {detail}")
    passed = sum(ok for _, ok, _ in checks)
    verdict = "PASS" if passed == len(checks) else "FAIL"
    typer.echo(f"{verdict} — {passed}/{len(checks)} checks passed")
    if verdict == "PASS":
        typer.echo(f"start it with: xmesh-agent run --config {config}")
    raise typer.Exit(EXIT_OK if verdict == "PASS" else EXIT_FAIL)
