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
        resolve_parents,
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
    try:
        parent_cmbs = resolve_parents([p for v in parents for p in v.replace(",", " ").split()])
        result = asyncio.run(
            publish_directive(parsed, target, to=to, parents=parent_cmbs, wait=wait, name=name)
        )
    except DirectiveError as exc:
        fail(str(exc), EXIT_USAGE)
    except NotDelivered as exc:
        fail(str(exc))
    if result.repeated:
        typer.echo(
            "xmesh-agent: note: these texts were published before (same key): peers that hold them "
            "will not wake again; change a field to ask anew",
            err=True,
        )
    if as_json:
        print_json(result.to_json())
        return
    where = (
        f"to {result.delivered_to[0]} (directed)" if result.to else f"to {len(result.delivered_to)} peer(s)"
    )
    typer.echo(f"published {result.key} {where}: {', '.join(result.delivered_to)}")


def _readers_or_fail(peer: str | None) -> list:
    from xmesh_agent.lookup import KeyLookupError, open_readers

    try:
        readers = open_readers(peer)
    except KeyLookupError as exc:
        fail(str(exc))
    if not readers:
        fail("no peer has a store on this machine yet (start one: xmesh-agent run --config <peer>.toml)")
    return readers


def recall(
    query: str = typer.Argument(
        "", help="What to look for; empty lists the newest CMBs.", show_default=False
    ),
    peer: str | None = typer.Option(
        None, "--peer", "-p", help="Search this peer's store only (default: every peer on this machine)."
    ),
    group: str | None = typer.Option(None, "--group", "-g", help="Only CMBs of this mesh group."),
    author: str | None = typer.Option(None, "--author", help="Only CMBs by this author (peer name)."),
    since: str | None = typer.Option(
        None, "--since", help="Only CMBs created since: a span (30m, 1h, 2d, 1w) or an ISO date."
    ),
    parents: str | None = typer.Option(
        None,
        "--parents",
        "--parent",
        help="Only the CMBs that answer this key (a unique prefix or a stock cmb- key works).",
    ),
    limit: int = typer.Option(10, "--limit", "-n", min=1, max=1000, help="How many hits at most."),
    as_json: bool = typer.Option(
        False, "--json", help="Print a JSON list of hits: key, author, created_at, parents, fields, ..."
    ),
) -> None:
    """Search what peers hold, running or stopped, ranked by the peer's own encoder.

    Reads each peer's store on disk (read-only: a running peer is not disturbed). Full-text
    candidates are ranked by the peer's SVAF field encoder and α weights, so the best hit is what
    that peer would find closest. Without --peer every peer of this machine is searched and a CMB
    several of them hold is shown once, naming them all. Every hit shows key, author, time,
    parents and the seven CAT7 fields.

    Examples:

      xmesh-agent recall "rate limiter"

      xmesh-agent recall --peer reviewer-01 --since 2h --author writer-01 --json

      xmesh-agent recall --parents cmb1-3f2a9c01   (the answers to one CMB)

      xmesh-agent recall            (the newest CMBs of every local peer)
    """
    from xmesh_agent.lookup import KeyLookupError, close_all, resolve_key
    from xmesh_agent.recall import Query, RecallError, parse_since
    from xmesh_agent.recall import recall as run_recall

    try:
        since_ms = parse_since(since) if since else None
    except RecallError as exc:
        fail(str(exc), EXIT_USAGE)
    readers = _readers_or_fail(peer)
    try:
        parent = None
        if parents:
            try:
                parent = resolve_key(parents, readers)
            except KeyLookupError as exc:
                fail(str(exc), EXIT_USAGE)
        hits = run_recall(readers, Query(query, group, author, since_ms, limit, parent=parent))
    finally:
        close_all(readers)
    if as_json:
        print_json([h.to_json() for h in hits])
        return
    if not hits:
        typer.echo("no CMB matches" + (f" {query!r}" if query else ""))
        return
    for hit in hits:
        typer.echo("\n".join(_hit_lines(hit)) + "\n")


def _hit_lines(hit) -> list[str]:  # noqa: ANN001 - xmesh_agent.recall.Hit
    from xmesh_agent.mmp.cmb import CAT7
    from xmesh_agent.recall import when

    cmb = hit.cmb
    score = "" if hit.score is None else f"  score {hit.score:.2f}"
    lines = [f"{cmb.key}  {cmb.created_by}  {when(cmb.created_at)}{score}  (held by {', '.join(hit.peers)})"]
    if cmb.parents:
        lines.append(f"  parents     {', '.join(cmb.parents)}")
    lines += [f"  {f:<11} {cmb.text(f)}" for f in CAT7]
    return lines


def show(
    key: str = typer.Argument(
        ..., help="A CMB key: full, a unique prefix (cmb1-3f2a9c…), or a stock node's cmb- key."
    ),
    peer: str | None = typer.Option(
        None, "--peer", "-p", help="Look in this peer's store only (default: every peer on this machine)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the CMB and what is known of it as JSON."),
) -> None:
    """Show one CMB in full: fields, mood, lineage, signature and trust state, who stored it.

    Works on running and stopped peers (their stores are read on disk). An ambiguous prefix lists
    the candidates and exits 2.

    Example: xmesh-agent show cmb1-3f2a9c01
    """
    from xmesh_agent.lookup import KeyLookupError, close_all, describe, held_everywhere, resolve_key

    readers = _readers_or_fail(peer)
    try:
        try:
            full = resolve_key(key, readers)
        except KeyLookupError as exc:
            fail(str(exc), EXIT_USAGE if "ambiguous" in str(exc) or "not a CMB key" in str(exc) else 1)
        held = held_everywhere(full, readers)
    finally:
        close_all(readers)
    data = describe(held)
    if as_json:
        print_json(data)
        return
    typer.echo("\n".join(_show_lines(data)))


def _show_lines(d: dict) -> list[str]:
    from xmesh_agent.mmp.cmb import CAT7
    from xmesh_agent.recall import when

    lines = [d["key"], f"  stock key   {d['stock_key']}", f"  author      {d['author']}"]
    lines.append(f"  created     {when(d['created_at'])} UTC, group {d['group']}")
    lines.append(f"  to          {d['to'] + ' (directed)' if d['to'] else 'the group (broadcast)'}")
    for f in CAT7:
        lines.append(f"  {f:<11} {d['fields'][f]}")
    mood = d["mood"]
    if mood and (mood["valence"] is not None or mood["arousal"] is not None):
        lines.append(f"  affect      valence {mood['valence']}, arousal {mood['arousal']}")
    lines.append(f"  parents     {', '.join(d['parents']) or 'none (a root CMB)'}")
    if d["ancestors"]:
        lines.append(f"  ancestors   {len(d['ancestors'])}: {', '.join(d['ancestors'])}")
    s = d["signature"]
    if not s["signed"]:
        inbound = any(h["from"] != "own" for h in d["held_by"])
        state = (
            "none in our form (a stock or legacy record: its own signature is checked on arrival, not kept)"
            if inbound
            else "unsigned"
        )
    elif s["verified"] is None:
        state = f"{s['alg']} signature; no key for {d['author']} on this machine to check it"
    elif s["verified"]:
        state = f"{s['alg']} signature verifies ({s['key']})"
    else:
        state = f"{s['alg']} signature does NOT verify with the {s['key']}"
    lines.append(f"  signature   {state}")
    inbound = [h["peer"] for h in d["held_by"] if h["from"] != "own"]
    if inbound:
        lines.append(
            f"  trust       accepted by the inbound checks of {', '.join(inbound)} "
            "(§18.3.1: signature when signed, content key, audience, pinned key)"
        )
    for h in d["held_by"]:
        origin = "its own" if h["from"] == "own" else f"from {h['from']}"
        lines.append(f"  stored by   {h['peer']} ({origin}, {when(h['received_at'])} UTC)")
    return lines
