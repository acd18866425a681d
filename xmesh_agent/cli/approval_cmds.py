"""`approve`, `deny`: the operator's hand on wakes held at an approval gate, and how a held wake reads."""

from __future__ import annotations

import typer

from xmesh_agent.cli.common import EXIT_USAGE, TemporalOption, fail, print_json
from xmesh_agent.wake.approval import held_lines, inbox_lines

WakeRef = typer.Argument(
    None,
    help="The held wake: its workflow id, or a unique prefix of it or of its trigger key (cmb1-3f2a, 3f2a).",
    show_default=False,
)
PeerOption = typer.Option(None, "--peer", "-p", help="The wake this peer holds (with --all: every one).")
AllOption = typer.Option(False, "--all", help="Decide every held wake that fits, not only a single one.")
ByOption = typer.Option("operator", "--by", help="Who decides (signed and recorded in the wake's history).")


def approve(
    wake: str | None = WakeRef,
    peer: str | None = PeerOption,
    every: bool = AllOption,
    by: str = ByOption,
    as_json: bool = typer.Option(False, "--json", help="Print what was decided as JSON."),
    temporal_address: str | None = TemporalOption,
) -> None:
    """Let a wake held at an approval gate emit its reply.

    Gates with action "approve" (or approval_gates = "approve") hold a wake until its peer's operator
    decides. The decision is signed with the peer's key (~/.xmesh/keys/<peer>.key): only a user who can
    read it decides; any other decision is refused by the wake. `xmesh-agent wakes --stage
    awaiting-approval` lists the held wakes with the replies they hold.

    Examples: `xmesh-agent approve --peer writer-01`, `xmesh-agent approve wake-writer-01-cmb1-3f2a`,
    `xmesh-agent approve --peer writer-01 --all --by alice`.
    """
    _decide(wake, peer, every, True, by, "", as_json, temporal_address)


def deny(
    wake: str | None = WakeRef,
    reason: str = typer.Option(..., "--reason", "-r", help="Why (recorded as the wake's outcome reason)."),
    peer: str | None = PeerOption,
    every: bool = AllOption,
    by: str = ByOption,
    as_json: bool = typer.Option(False, "--json", help="Print what was decided as JSON."),
    temporal_address: str | None = TemporalOption,
) -> None:
    """Stop a wake held at an approval gate: it ends `denied` and emits nothing.

    Named like `approve` names it (id, unique prefix, or --peer [--all]); signed with the peer's key.

    Example: `xmesh-agent deny --peer writer-01 --reason "no deploys on Fridays"`.
    """
    _decide(wake, peer, every, False, by, reason, as_json, temporal_address)


def _decide(
    ref: str | None,
    peer: str | None,
    every: bool,
    approved: bool,
    by: str,
    reason: str,
    as_json: bool,
    temporal_address: str | None,
) -> None:
    from xmesh_agent.cli.wakes_cmds import _run
    from xmesh_agent.workers.approvals import Ambiguous, decide, resolve
    from xmesh_agent.workers.inspect import InspectError

    if not ref and not peer:
        fail("name the held wake (its id or a unique prefix) or its peer (--peer NAME)", EXIT_USAGE)

    async def go(client):  # noqa: ANN001, ANN202 - temporalio Client; [(wake, answer or error)]
        try:
            wakes = await resolve(client, ref, peer, every)
        except Ambiguous as exc:
            typer.echo("\n".join(inbox_lines([w.as_json() for w in exc.candidates])), err=True)
            fail(str(exc), EXIT_USAGE)
        done = []
        for wake in wakes:
            try:
                done.append((wake, await decide(client, wake, approved=approved, by=by, reason=reason), ""))
            except InspectError as exc:
                done.append((wake, "", str(exc)))
        return done

    done = _run(temporal_address, go)
    if as_json:
        print_json(
            [{**w.as_json(), "decision": answer or None, "error": error or None} for w, answer, error in done]
        )
    else:
        for wake, answer, error in done:
            if error:
                typer.echo(f"xmesh-agent: {error}", err=True)
                continue
            typer.echo(f"{wake.workflow_id}: {answer}")
            if wake.held and approved:
                typer.echo("\n".join(held_lines(wake.as_json(), header="the reply it releases")))
    if any(error for _, _, error in done):
        raise typer.Exit(1)
