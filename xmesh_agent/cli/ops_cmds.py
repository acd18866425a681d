"""Operating a peer: `stop`, `status`, `cost`, `trace`, `peers` (`logs` is logs_cmd.py).

A running peer answers on its control socket (~/.xmesh/peers/<name>/control.sock), from the live
process: its mesh view, its budget windows, its cost ledger, its store. A stopped one is read from the
files it left (`workers/on_disk.py`): `status`, `cost` and `trace` still answer, saying it is stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import typer

from xmesh_agent.cli.common import fail, print_json
from xmesh_agent.cli.peer_views import STATUS_HEADER, _usd, render_stopped, status_row, table

JsonOption = typer.Option(False, "--json", help="Print the raw JSON reply instead of a table.")


def _not_running(peer: str) -> str:
    from xmesh_agent.workers.control import running_peers

    running = running_peers()
    if running:
        return f"peer {peer} is not running; running peers: {', '.join(running)}"
    return (
        f"peer {peer} is not running, and no peer is running on this machine; "
        "start one with `xmesh-agent run --config <peer>.toml`"
    )


def _never_ran(peer: str) -> str:
    from xmesh_agent.workers import on_disk
    from xmesh_agent.workers.control import running_peers

    known, running = on_disk.local_peers(), set(running_peers())
    if not known:
        return (
            f"no peer named {peer} on this machine, and no peer is running or has run here; "
            "start one with `xmesh-agent run --config <peer>.toml`"
        )
    here = ", ".join(f"{n} ({'running' if n in running else 'stopped'})" for n in known)
    return f"no peer named {peer} on this machine; peers here: {here}"


def _read(peer: str, cmd: str, **args: Any) -> dict[str, Any]:
    """A read command: the running peer's answer, else what the stopped peer left on disk."""
    from xmesh_agent.workers import on_disk

    def from_disk() -> dict[str, Any]:
        try:
            return {"ok": True, **on_disk.read(cmd, peer, **args)}
        except on_disk.NoSuchPeer:
            fail(_never_ran(peer))
        except LookupError as exc:
            fail(f"{peer}: {exc.args[0] if exc.args else 'not found'}")

    return _ask(peer, cmd, when_stopped=from_disk, **args)


def _all_peers() -> list[str]:
    from xmesh_agent.workers import on_disk
    from xmesh_agent.workers.control import running_peers

    names = sorted(set(on_disk.local_peers()) | set(running_peers()))
    if not names:
        fail("no peer has run on this machine yet; start one with `xmesh-agent run --config <peer>.toml`")
    return names


def _ask(
    peer: str, cmd: str, when_stopped: Callable[[], dict[str, Any]] | None = None, **args: Any
) -> dict[str, Any]:
    """One control request; an error reply becomes a message and exit 1, and so does a peer that is not
    running unless `when_stopped` answers for it."""
    from xmesh_agent.paths import UnsafeDirectory
    from xmesh_agent.workers.control import PeerNotRunning, call

    try:
        reply = call(peer, cmd, **args)
    except PeerNotRunning:
        if when_stopped is None:
            fail(_not_running(peer))
        return when_stopped()
    except UnsafeDirectory as exc:
        fail(f"{peer}: refusing its control socket: {exc}")
    if not reply.get("ok"):
        fail(f"{peer}: {reply.get('error', 'request failed')}")
    return reply


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _peer_rows(peers: list[dict[str, Any]]) -> list[list[Any]]:
    return [[p["name"], p["nodeId"], p["transport"], p.get("address", "")] for p in peers]


def stop(peer: str = typer.Argument(..., help="Name of the running peer.")) -> None:
    """Stop a running peer gracefully.

    The peer stops starting wakes at once (CMBs that still arrive are spooled and woken on the next
    start), lets in-flight wakes finish and emit, leaves the mesh and exits 0. A wake parked awaiting
    approval stays parked in Temporal and resumes when the peer runs again.

    Example: xmesh-agent stop reviewer-01
    """
    reply = _ask(peer, "stop")
    typer.echo(f"{peer}: stop accepted; draining {reply.get('inFlight', 0)} in-flight wake(s), then exiting")


def status(
    peer: str | None = typer.Argument(None, help="A peer's name; omit for every peer of this machine."),
    as_json: bool = JsonOption,
) -> None:
    """Show a peer at a glance: mesh, budget, breaker, cost and wakes; a stopped one from its files.

    Use it to see why a peer is quiet (budget window full? breaker open? no mesh peers?) or what it
    has cost so far. Without a name: one line per peer of this machine, running or stopped.

    Example: xmesh-agent status reviewer-01 --json   |   xmesh-agent status
    """
    if peer is None:
        views = [_read(name, "status", brief=True) for name in _all_peers()]
        if as_json:
            print_json(views)
            return
        typer.echo(table([status_row(v) for v in views], STATUS_HEADER))
        return
    r = _read(peer, "status")
    if as_json:
        print_json(r)
        return
    if r["state"] == "stopped":
        typer.echo(render_stopped(r))
        return
    b, limits = r["budget"]["counts"], r["budget"]["limits"]
    c, brk, wakes = r["cost"], r["breaker"], r["wakes"]
    typer.echo(
        table(
            [
                ["peer", f"{r['peer']} ({r['state']}, pid {r['pid']}, up {_duration(r['uptimeSeconds'])})"],
                ["node", f"{r['nodeId']} on port {r['port']}, group {r['group']}"],
                ["model", f"{r['model']['adapter']} / {r['model']['name']}"],
                [
                    "wake budget",
                    f"minute {b['minute']}/{limits['minute']}  hour {b['hour']}/{limits['hour']}"
                    f"  day {b['day']}/{limits['day']}",
                ],
                ["breaker", f"{brk['state']} ({brk['consecutive_failures']} consecutive failures)"],
                *(
                    [f"fallback {i}", f"{f['model']}: breaker {f['breaker']['state']}"]
                    for i, f in enumerate(r.get("fallback") or [], start=1)
                ),
                [
                    "cost",
                    f"run {_usd(c['run_usd'])}  lifetime {_usd(c['lifetime_usd'])}  "
                    f"({c['calls']} calls, {c['unknown_calls']} of unknown price)",
                ],
                [
                    "wakes",
                    _outcomes(wakes.get("seenThisRun") or {})
                    + f"  (in flight {wakes['inFlight']}{_held_count(r.get('awaiting_approval'))})",
                ],
                [
                    "wakes ever",
                    "temporal not reachable"
                    if wakes.get("visibility") is None
                    else _outcomes(wakes["visibility"]),
                ],
                ["log", r.get("log", "")],
            ]
        )
    )
    typer.echo("")
    if r["peers"]:
        typer.echo(table(_peer_rows(r["peers"]), ["MESH PEER", "NODE ID", "TRANSPORT", "ADDRESS"]))
    else:
        typer.echo("no mesh peers connected")
    held = r.get("awaiting_approval")
    if held:
        from xmesh_agent.wake.approval import inbox_lines

        typer.echo(
            f"\n{len(held)} wake(s) await your approval (approve all: xmesh-agent approve --peer {peer} --all):"
        )
        typer.echo("\n".join(inbox_lines(held)))


def _held_count(held: list | None) -> str:
    if held is None:
        return ", approvals unknown: temporal not reachable"
    return f", {len(held)} awaiting approval" if held else ""


def _outcomes(counts: dict[str, int]) -> str:
    return "  ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def cost(
    peer: str | None = typer.Argument(None, help="A peer's name; omit for every peer of this machine."),
    as_json: bool = JsonOption,
) -> None:
    """Show what a peer's model calls cost: this hour, today, this run and ever, against its caps.

    A wake is refused once any cap is reached. Calls whose price is unknown are counted, never
    treated as free. A stopped peer answers from its ledger ("run" is then its last run); without a
    name every peer of this machine answers, one line each.

    Example: xmesh-agent cost reviewer-01   |   xmesh-agent cost --json
    """
    if peer is None:
        views = [_read(name, "cost") for name in _all_peers()]
        if as_json:
            print_json(views)
            return
        rows = [
            [
                v["peer"],
                v.get("state", "running"),
                _usd(v["hour_usd"]),
                _usd(v["day_usd"]),
                _usd(v["run_usd"]),
                _usd(v["lifetime_usd"]),
                v["calls"],
            ]
            for v in views
        ]
        typer.echo(table(rows, ["PEER", "STATE", "LAST HOUR", "LAST DAY", "RUN", "LIFETIME", "CALLS"]))
        return
    r = _read(peer, "cost")
    if as_json:
        print_json(r)
        return
    if r.get("state") == "stopped":
        typer.echo(f'{peer} is stopped; its ledger on disk says ("this run" is its last run):\n')
    caps = r["caps"]
    rows = [
        ["last hour", _usd(r["hour_usd"]), _usd(caps["hour_usd"])],
        ["last day", _usd(r["day_usd"]), _usd(caps["day_usd"])],
        ["this run", _usd(r["run_usd"]), _usd(caps["run_usd"])],
        ["lifetime", _usd(r["lifetime_usd"]), "-"],
    ]
    typer.echo(table(rows, ["WINDOW", "SPENT", "CAP"]))
    typer.echo(
        f"\ncalls: {r['run_calls']} this run, {r['calls']} ever; "
        f"unknown price: {r['run_unknown_calls']} this run, {r['unknown_calls']} ever"
    )


def trace(
    peer: str = typer.Argument(..., help="The peer whose store to read (running or stopped)."),
    key: str = typer.Argument(
        ..., help="The CMB key to trace back: full, a unique prefix (cmb1-3f2a9c…), or a stock cmb- key."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Show where a CMB came from: its parents, their parents, ... as an indented tree (depth <= 20).

    Parents this peer never received are shown as (missing). Each line shows the CMB's focus, or
    the field that carries its text when focus is neutral. Use it to follow a reply back to the
    seed that started a conversation. A stopped peer's store is read from disk.

    Example: xmesh-agent trace reviewer-01 cmb1-3f2a9c01
    """
    r = _read(peer, "trace", key=_full_key(peer, key))
    if as_json:
        print_json(r)
        return
    typer.echo("\n".join(render_tree(r)))


def _full_key(peer: str, key: str) -> str:
    """A prefix or stock key as the full key the peer's store holds (read-only); exit 2 when it is
    malformed or names several. A key the store does not hold goes as typed (the peer says so)."""
    from xmesh_agent.cli.common import EXIT_USAGE
    from xmesh_agent.lookup import KeyLookupError, open_reader, resolve_key, store_path

    if not store_path(peer).is_file():
        return key
    try:
        with open_reader(peer) as reader:
            return resolve_key(key, [reader])
    except KeyLookupError as exc:
        if str(exc).startswith("no CMB with key"):
            return key
        fail(str(exc), EXIT_USAGE)


def render_tree(reply: dict[str, Any]) -> list[str]:
    """The lineage as lines, the CMB first and each parent indented under its child."""
    nodes = {n["key"]: n for n in reply["nodes"]}
    lines: list[str] = []
    shown: set[str] = set()

    def walk(key: str, indent: int) -> None:
        node = nodes.get(key)
        pad = "  " * indent + ("└─ " if indent else "")
        if node is None:
            lines.append(f"{pad}{key}  (beyond depth {reply['max_depth']})")
            return
        if node["missing"]:
            lines.append(f"{pad}{key}  (missing: not in this peer's store)")
            return
        when = datetime.fromtimestamp(node["created_at"] / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        if key in shown:
            lines.append(f"{pad}{key}  (shown above)")
            return
        shown.add(key)
        lines.append(f"{pad}{key}  {node['created_by']}  {when}  {node['summary']}")
        for parent in node["parents"]:
            walk(parent, indent + 1)

    walk(reply["root"], 0)
    return lines


def peers(
    peer: str | None = typer.Argument(None, help="A running peer; omit to ask every running local peer."),
    as_json: bool = JsonOption,
) -> None:
    """Show who is on the mesh, as a running peer sees it (name, node id, transport).

    Without a name every running local peer answers, so you can compare their views.

    Example: xmesh-agent peers   |   xmesh-agent peers reviewer-01 --json
    """
    from xmesh_agent.workers.control import running_peers

    names = [peer] if peer else running_peers()
    if not names:
        fail("no peer is running on this machine; start one with `xmesh-agent run --config <peer>.toml`")
    views = [_ask(name, "peers") for name in names]
    if as_json:
        print_json(views if peer is None else views[0])
        return
    rows = [[v["peer"], *row] for v in views for row in _peer_rows(v["peers"])]
    lonely = [v["peer"] for v in views if not v["peers"]]
    if rows:
        typer.echo(table(rows, ["SEEN BY", "MESH PEER", "NODE ID", "TRANSPORT", "ADDRESS"]))
    for name in lonely:
        typer.echo(f"{name}: no mesh peers connected")
