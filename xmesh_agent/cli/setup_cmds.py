"""`init`, `doctor`, `migrate`: get a machine and a peer ready, and say what is wrong when it is not."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import typer

from xmesh_agent.cli.common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, fail, print_json
from xmesh_agent.cli.doctor import run_doctor
from xmesh_agent.config import ADAPTERS
from xmesh_agent.models.factory import KEY_ENV


def _q(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _money(value: float) -> str:
    """USD to the micro-dollar: a sub-cent cap (a CI run's) must not round to a cap of $0."""
    return repr(round(value, 6))


def render_agent_toml(
    peer: str,
    role: str,
    group: str,
    adapter: str,
    model: str,
    weights: dict[str, float],
    cost_cap: float,
    known: bool = True,
) -> str:
    """A commented agent.toml; `xmesh-agent schema` documents every key."""
    key_env = KEY_ENV.get(adapter)
    model_hint = {
        "ollama": '# base_url = "http://127.0.0.1:11434"   # or set OLLAMA_HOST',
        "offline": "# the offline adapter is a deterministic stand-in: no network, no cost",
    }.get(adapter, f"# api_key: prefer the {key_env} environment variable over writing it here")
    lines = [
        f"# agent.toml for {peer}, written by `xmesh-agent init`. Every key: `xmesh-agent schema`.",
        f"# role {role}: "
        + ("α weights from the role preset." if known else "generic α weights (unknown role)."),
        "",
        "[identity]",
        f"name = {_q(peer)}",
        f"role = {_q(role)}",
        "",
        "[mesh]",
        f"group = {_q(group)}",
        '# host = "127.0.0.1"                  # keep it on this machine (default: all interfaces, DNS-SD)',
        '# relay = "wss://relay.example.org"   # reach peers beyond this LAN',
        '# relay_token = "…"',
        '# admission = "strict"               # only keys pinned with `xmesh-agent trust add`',
        "",
        "# SVAF α: how much each CAT7 field of an inbound CMB matters to this peer when deciding to wake.",
        "[role_weights]",
        *(f"{field} = {weight!r}" for field, weight in weights.items()),
        "",
        "[model]",
        f"adapter = {_q(adapter)}",
        f"model_name = {_q(model)}",
        "max_tokens_per_call = 1024",
        model_hint,
        "",
        "[context]",
        "k_lineage = 3",
        "n_own = 5",
        "n_group = 10",
        "max_context_tokens = 8000",
        "",
        f"# Cost cap ${cost_cap:.2f}: per run = cap, per hour = cap/2, per day = cap×2.",
        "[budget]",
        "max_wakes_per_minute = 10",
        "max_wakes_per_hour = 100",
        "max_wakes_per_day = 1000",
        f"max_cost_usd_per_hour = {_money(cost_cap / 2)}",
        f"max_cost_usd_per_day = {_money(cost_cap * 2)}",
        f"max_cost_usd_per_run = {_money(cost_cap)}",
        "",
        "[safety]",
        "cycle_depth = 5",
        '# default: risky intents (git push, deploy, …) block; "approve" waits for `xmesh-agent approve`.',
        'approval_gates = "default"',
        "",
        "[routing]",
        "# broadcast: replies go to the whole group; targeted: to the trigger's author; auto: either.",
        'response_routing = "broadcast"',
        "",
        "[attach]",
        'mode = "headless"',
        "",
    ]
    return "\n".join(lines)


def init(
    peer: str = typer.Argument(..., help="The new peer's name, unique on the mesh (e.g. reviewer-01)."),
    role: str = typer.Option(
        "generic",
        "--role",
        "-r",
        help="writer, reviewer, test-writer, auditor, security-reviewer, doc-writer, spec-drafter, generator "
        "or generic: sets the α weights.",
    ),
    group: str = typer.Option("xmesh-default", "--group", "-g", help="Mesh group to join."),
    adapter: str = typer.Option(
        "anthropic", "--adapter", "-a", help="anthropic, openai, mistral, ollama or offline."
    ),
    model: str | None = typer.Option(None, "--model", "-m", help="Model name (default per adapter)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Where to write (default ./<peer>.toml)."),
    cost_cap: float = typer.Option(5.0, "--cost-cap", help="USD per run; per hour = cap/2, per day = cap×2."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Scaffold a peer: a commented agent.toml with the role's α weights and budget, and its key.

    Example: `xmesh-agent init reviewer-01 --role reviewer --adapter anthropic`.

    Then: `xmesh-agent dry-run --config reviewer-01.toml` and `xmesh-agent run --config reviewer-01.toml`.
    """
    import re

    from xmesh_agent.config import DEFAULT_MODELS, GROUP_PATTERN, NAME_PATTERN, ConfigError, parse_config
    from xmesh_agent.identity import load_identity, load_or_create_identity
    from xmesh_agent.roles import known_roles, preset_weights

    if not re.fullmatch(NAME_PATTERN, peer):
        fail(f"invalid peer name {peer!r}: letters, digits, '.', '_' and '-', at most 64", EXIT_USAGE)
    if not re.fullmatch(GROUP_PATTERN, group):
        fail(f"invalid group {group!r}: lower-case letters, digits, '.', '_' and '-'", EXIT_USAGE)
    if adapter not in ADAPTERS:
        fail(f"unknown adapter {adapter!r}: choose one of {', '.join(ADAPTERS)}", EXIT_USAGE)
    if not math.isfinite(cost_cap) or cost_cap <= 0:
        fail(f"--cost-cap must be a positive number of USD (got {cost_cap})", EXIT_USAGE)
    weights = preset_weights(role)
    known = weights is not None
    if weights is None:
        typer.echo(
            f"warning: role {role!r} has no preset ({', '.join(known_roles())}); using generic α weights",
            err=True,
        )
        weights = preset_weights("generic") or {}
    model = model or DEFAULT_MODELS[adapter]
    text = render_agent_toml(peer, role, group, adapter, model, weights, cost_cap, known)
    out = out or Path(f"{peer}.toml")
    import tomllib

    try:
        parse_config(tomllib.loads(text), str(out))
    except (ConfigError, tomllib.TOMLDecodeError) as exc:
        fail(f"refusing to write an invalid config: {exc}", EXIT_USAGE)
    try:
        with open(out, "w" if force else "x", encoding="utf-8") as fh:
            fh.write(text)
    except FileExistsError:
        fail(f"{out} exists; --force overwrites it")
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror}")
    had_key = load_identity(peer) is not None
    identity = load_or_create_identity(peer)
    typer.echo(f"wrote {out}")
    typer.echo(f"  peer:    {peer}")
    typer.echo(f"  role:    {role} " + ("(preset α weights)" if known else "(generic α weights)"))
    typer.echo(f"  group:   {group}")
    typer.echo(f"  model:   {adapter} / {model}")
    typer.echo(f"  budget:  ${cost_cap:.2f} per run, ${cost_cap / 2:.2f}/hour, ${cost_cap * 2:.2f}/day")
    typer.echo(f"  key:     {'existing' if had_key else 'new'} ed25519 key, keyprint {identity.keyprint}")
    typer.echo("next steps:")
    step = 1
    env = KEY_ENV.get(adapter)
    if env and not os.environ.get(env):
        typer.echo(f"  {step}. export {env}=…   (the {adapter} adapter needs it)")
        step += 1
    typer.echo(f"  {step}. xmesh-agent dry-run --config {out}")
    typer.echo(f"  {step + 1}. xmesh-agent run --config {out}")


def doctor(
    as_json: bool = typer.Option(False, "--json", help="The same checks as one JSON object, and the issues."),
) -> None:
    """Check this machine: Python, Temporal, ports, keys, environment, Ollama, running peers.

    Looks at the temporal binary, the embedded server, ports 7233/8233 and private key modes (0600).

    Environment variables are shown as present or not, never their values; Ollama gets 2 s.

    Exit 0 HEALTHY, 1 when issues need attention (each says what to do). Example: `xmesh-agent doctor`.
    """
    report: dict[str, object] = {}
    issues = run_doctor((lambda _line: None) if as_json else typer.echo, report)
    if as_json:
        print_json({"healthy": not issues, **report, "issues": issues})
        raise typer.Exit(EXIT_FAIL if issues else EXIT_OK)
    if not issues:
        typer.echo("HEALTHY")
        raise typer.Exit(EXIT_OK)
    typer.echo(f"{len(issues)} issue(s) to address:")
    for issue in issues:
        typer.echo(f"  - {issue}")
    raise typer.Exit(EXIT_FAIL)


def migrate(
    apply: bool = typer.Option(False, "--apply", help="Move it (without: only show the plan)."),
) -> None:
    """Move a legacy ~/.xmesh-agent runtime directory to ~/.xmesh (or $XMESH_HOME).

    Dry run by default: prints what would move. --apply renames the directory in one step.

    Legacy keys (PKCS#8) and trust pins are then rewritten in this runtime's format.

    Example: `xmesh-agent migrate --apply`.
    """
    from xmesh_agent import paths
    from xmesh_agent.cli.doctor import convert_legacy, legacy_plan

    source, target = paths.LEGACY_HOME, paths.xmesh_home()
    if not source.exists() and not target.exists():
        typer.echo(f"nothing to do: neither {source} nor {target} exists")
        raise typer.Exit(EXIT_OK)
    if not source.exists():
        typer.echo(f"already on {target}; nothing to migrate")
        raise typer.Exit(EXIT_OK)
    if target.exists():
        typer.echo(f"conflict: both {source} and {target} exist; migrate will not merge them.", err=True)
        typer.echo("  1. stop every peer (`xmesh-agent doctor` lists running ones)", err=True)
        typer.echo(
            f"  2. copy what you still need from {source} into {target} (keys/, trusted-keys/)", err=True
        )
        typer.echo(f"  3. move {source} aside (e.g. mv {source} {source}.old) and re-run doctor", err=True)
        raise typer.Exit(EXIT_FAIL)
    plan = legacy_plan(source)
    typer.echo(f"from: {source}")
    typer.echo(f"to:   {target}")
    typer.echo("  " + " ".join(f"{k}={v}" for k, v in plan.items()))
    if not apply:
        typer.echo(
            f"dry run: nothing moved. Apply with `xmesh-agent migrate --apply` (≈ mv {source} {target})"
        )
        raise typer.Exit(EXIT_OK)
    if plan["sockets"]:
        fail(f"{plan['sockets']} control socket(s) in {source}: stop the peers that use it first")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(source, target)
    except OSError as exc:
        fail(f"could not move {source} to {target}: {exc.strerror}; move it by hand (mv)")
    for line in convert_legacy(target):
        typer.echo(f"  {line}")
    typer.echo("migrate: ok")
