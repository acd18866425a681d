"""Talking to a running mesh as a person: `publish` a directive, `recall` what peers hold, `show` one CMB.

Thin: the work is in xmesh_agent.operator (publishing) and xmesh_agent.recall / lookup (reading stores).
Imports are deferred into the commands so `xmesh-agent --help` stays quick.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from xmesh_agent.cli.common import EXIT_USAGE, fail, print_json

FIELD_HELP = "CAT7 field text (the JSON argument is the other way to give fields)."


def _parents_of(values: list[str]) -> list[str]:
    return [p for v in values for p in v.replace(",", " ").split() if p]


def resolve_parents(values: list[str]) -> list:
    """Parent keys as typed (prefixes, stock keys) -> the CMBs local stores hold, or full keys."""
    from xmesh_agent.lookup import KeyLookupError, close_all, held_everywhere, open_readers, resolve_key

    readers = open_readers()
    try:
        out: list = []
        for text in _parents_of(values):
            full = text.strip()
            if len(full) == 69 and full.startswith("cmb1-") and not any(r.get(full) for r in readers):
                out.append(full)  # a full key this machine does not hold: its key alone is the lineage
                continue
            try:
                key = resolve_key(text, readers)
            except KeyLookupError as exc:
                fail(str(exc), EXIT_USAGE)
            out.append(held_everywhere(key, readers)[0].cmb)
        return out
    finally:
        close_all(readers)


def publish(
    directive: str | None = typer.Argument(
        None,
        help='The directive as the JSON object `sym publish` takes, e.g. \'{"focus": "...", "intent": '
        '"..."}\' (a field may be {"text", "valence", "arousal"}); `-` reads it from stdin.',
        show_default=False,
    ),
    focus: str | None = typer.Option(None, "--focus", help=FIELD_HELP),
    issue: str | None = typer.Option(None, "--issue", help=FIELD_HELP),
    intent: str | None = typer.Option(None, "--intent", help=FIELD_HELP),
    motivation: str | None = typer.Option(None, "--motivation", help=FIELD_HELP),
    commitment: str | None = typer.Option(None, "--commitment", help=FIELD_HELP),
    perspective: str | None = typer.Option(None, "--perspective", help=FIELD_HELP + ' Default "operator".'),
    mood: str | None = typer.Option(None, "--mood", help=FIELD_HELP),
    group: str | None = typer.Option(
        None, "--group", "-g", help="Mesh group to publish into (default: the config's, else `default`)."
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="A peer's agent.toml: publish into its group over its transports (registry, mDNS, static "
        "peers, relay).",
    ),
    to: str | None = typer.Option(
        None,
        "--to",
        help="Direct it to one peer (name or node id): it wakes that peer whatever SVAF says (§9.2.2).",
    ),
    parents: list[str] = typer.Option(
        [],
        "--parents",
        "--parent",
        help="Keys this directive answers (repeat, or comma-separated); unique prefixes and stock cmb- "
        "keys work.",
    ),
    wait: float = typer.Option(
        3.0,
        "--wait",
        help="Seconds to wait for the group's peers at most; it delivers as soon as the known ones are "
        "connected.",
    ),
    name: str | None = typer.Option(None, "--name", help="Operator node name (default operator-<user>)."),
    as_json: bool = typer.Option(False, "--json", help='Print {"key": ..., "delivered_to": [...]}.'),
) -> None:
    """Publish an operator directive (MMP §14.10): a signed CAT7 CMB into a running mesh.

    It joins the group as an operator node with its own persistent key (~/.xmesh/keys/operator-<user>),
    finds the group's peers (this machine's registry, or the transports of --config), delivers, and
    prints the key and who received it. A broadcast is weighed by every peer's SVAF like any CMB and
    may be rejected; with --to it wakes that peer unconditionally. Exits 1 when nobody was reached,
    2 on bad input.

    Examples:

      xmesh-agent publish --focus "rate-limit the public API" --intent "implement it" --group team

      xmesh-agent publish '{"focus": "review PR 42", "mood": {"text": "urgent", "arousal": 0.8}}' --to reviewer-01

      echo '{"issue": "flaky test"}' | xmesh-agent publish - --config writer.toml --json
    """
    import asyncio

    from xmesh_agent.operator import (
        DirectiveError,
        NotDelivered,
        Target,
        directive_from_fields,
        directive_from_text,
    )
    from xmesh_agent.operator import publish as publish_directive

    flags = {
        "focus": focus,
        "issue": issue,
        "intent": intent,
        "motivation": motivation,
        "commitment": commitment,
        "perspective": perspective,
        "mood": mood,
    }
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        if directive is not None:
            if given:
                fail("give the fields either as the JSON argument or as flags, not both", EXIT_USAGE)
            parsed = directive_from_text(sys.stdin.read() if directive == "-" else directive)
        elif given:
            parsed = directive_from_fields(given)
        else:
            fail("nothing to publish: give fields (--focus ...) or a JSON object (see --help)", EXIT_USAGE)
    except DirectiveError as exc:
        fail(str(exc), EXIT_USAGE)
    if config is not None:
        from xmesh_agent.cli.common import load_or_exit

        target = Target.from_config(load_or_exit(config))
        if group:
            target.group = group
    else:
        target = Target(group=group or "default")
    parent_cmbs = resolve_parents(parents) if parents else []
    try:
        result = asyncio.run(
            publish_directive(parsed, target, to=to, parents=parent_cmbs, wait=wait, name=name)
        )
    except DirectiveError as exc:
        fail(str(exc), EXIT_USAGE)
    except NotDelivered as exc:
        fail(str(exc))
    if as_json:
        print_json(result.to_json())
        return
    where = (
        f"to {result.delivered_to[0]} (directed)" if result.to else f"to {len(result.delivered_to)} peer(s)"
    )
    typer.echo(f"published {result.key} {where}: {', '.join(result.delivered_to)}")
