"""`tail`: the conversation of a group as it happens, one block per CMB, until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from xmesh_agent.cli.common import EXIT_OK, EXIT_USAGE, fail, load_or_exit
from xmesh_agent.clock import now_ms

if TYPE_CHECKING:
    from xmesh_agent.conversation import Said, StoreFollower, Woke

POLL_SECONDS = 0.1
SEEN_KEYS = 100_000


class Printer:
    """Writes blocks (or JSON lines) to stdout; remembers recent keys so a wake line is only shown
    for a CMB this tail showed."""

    def __init__(self, as_json: bool):
        from xmesh_agent.conversation import render_said, render_woke

        self.render_said, self.render_woke = render_said, render_woke
        self.as_json = as_json
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.printed = 0

    def said(self, items: list[Said], outcomes: dict[str, list[Woke]] | None = None) -> None:
        out = []
        for item in items:
            if item.cmb.key in self.seen:
                continue
            self.seen[item.cmb.key] = None
            if len(self.seen) > SEEN_KEYS:
                self.seen.popitem(last=False)
            woke = (outcomes or {}).get(item.cmb.key, [])
            if self.as_json:
                out.append(json.dumps(item.as_json(), ensure_ascii=False))
                out += [json.dumps(w.as_json(), ensure_ascii=False) for w in woke]
            else:
                out.append(self.render_said(item, woke) + "\n")
        self._write(out)
        self.printed += len(out)

    def woke(self, items: list[Woke]) -> None:
        shown = [w for w in items if w.cmb_key in self.seen]
        if self.as_json:
            self._write([json.dumps(w.as_json(), ensure_ascii=False) for w in shown])
        else:
            self._write([f"  {self.render_woke(w)}" for w in shown])

    @staticmethod
    def _write(lines: list[str]) -> None:
        if lines:
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()


def tail(
    group: str | None = typer.Option(
        None, "--group", "-g", help="Join this group as an observer node (same-host discovery)."
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="Join the group of this peer's agent.toml with its transports (registry, mDNS, static peers, relay).",
    ),
    peer: str | None = typer.Option(
        None,
        "--peer",
        "-p",
        help="Follow what this local peer stores (its store on disk; running or not) and how its wakes end.",
    ),
    lines: int = typer.Option(
        10, "--lines", "-n", min=0, help="Print this many recent CMBs first (0: only new ones)."
    ),
    since: str | None = typer.Option(
        None, "--since", "-s", help="Print the CMBs stored since then first: 30m, 1h, 2d or a date."
    ),
    name: str | None = typer.Option(
        None,
        "--name",
        help="The observer node's name (default observer-<user>; its key lives in the xmesh home).",
    ),
    follow: bool = typer.Option(True, "--follow/--no-follow", help="Keep printing new CMBs until Ctrl-C."),
    as_json: bool = typer.Option(
        False,
        "--json",
        help='JSON lines: {"kind": "cmb", key, author, created_at, to, parents, fields} and '
        '{"kind": "wake", peer, cmb, outcome, reply} for local peers.',
    ),
) -> None:
    """Print a group's conversation as it happens: who said what to whom, the parent it answers, and how each local peer's wake on it ended.

    As an observer node: `xmesh-agent tail --group demo`, or `--config reviewer.toml` for the group and transports of that peer. The observer joins with an identity of its own and never answers.

    Attached to a local peer: `xmesh-agent tail --peer reviewer-01` follows its store on disk.

    `-n 50` or `--since 1h` prints history first (the observer's own store, or the peer's); `--json` prints JSON lines for scripts. Ctrl-C stops it.
    """
    from xmesh_agent.observer import Join, ObserverError, default_name

    if peer is not None and (group is not None or config is not None):
        fail("--peer follows a local peer's store; do not also give --group or --config", EXIT_USAGE)
    since_ms = _since_ms(since)
    history = None if since_ms is not None else lines
    if peer is not None:
        code = _run(_follow_peer(peer, history, since_ms, follow, Printer(as_json)))
        raise typer.Exit(code)
    mesh = load_or_exit(config).mesh if config is not None else None
    try:
        join = Join.of(group, mesh, name or default_name("observer"), chosen=name is not None).claim()
    except ObserverError as exc:
        fail(str(exc), EXIT_USAGE)
    raise typer.Exit(_run(_observe(join, history, since_ms, follow, Printer(as_json))))


def _since_ms(since: str | None) -> int | None:
    if since is None:
        return None
    from xmesh_agent.workers.inspect import InspectError, parse_since

    try:
        return int(parse_since(since).timestamp() * 1000)
    except InspectError as exc:
        fail(str(exc), EXIT_USAGE)


def _run(coro) -> int:  # noqa: ANN001 - a coroutine returning an exit code
    """Run until done or Ctrl-C/SIGTERM (exit 0, no traceback); a closed stdout ends it quietly too."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        work = asyncio.ensure_future(coro)
        waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait([work, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
            return EXIT_OK
        return work.result()

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            sys.stdout = open("/dev/null", "w")  # noqa: SIM115 - so the interpreter's final flush is quiet
        return EXIT_OK


async def _follow_peer(
    peer: str, lines: int | None, since_ms: int | None, follow: bool, printer: Printer
) -> int:
    from xmesh_agent import paths
    from xmesh_agent.conversation import OutcomeFollower, StoreFollower

    path = paths.peer_dir(peer) / "cmbs.db"
    if not path.exists():
        from xmesh_agent.lookup import local_peers

        known = local_peers()
        hint = f"; local peers: {', '.join(known)}" if known else "; no peer has run under this xmesh home"
        fail(f"peer {peer} has no store at {path}{hint}")
    store = StoreFollower(path)
    outcomes = OutcomeFollower(peers=[peer], history=True)
    try:
        outcomes.poll()
        printer.said(_history(store, lines, since_ms), outcomes.known)
        outcomes.history = False
        if follow:
            from xmesh_agent.workers.control import control_path, is_live

            idle = (
                ""
                if is_live(control_path(peer))
                else f" ({peer} is not running: nothing new until it starts)"
            )
            typer.echo(f"tail: following {peer}'s store{idle}; Ctrl-C stops", err=True)
        while follow:
            printer.said(await asyncio.to_thread(store.poll))
            printer.woke(outcomes.poll())
            await asyncio.sleep(POLL_SECONDS)
    finally:
        store.close()
    return EXIT_OK


def _history(
    store: StoreFollower, lines: int | None, since_ms: int | None, group: str | None = None
) -> list[Said]:
    if since_ms is not None:
        return store.recent(since_ms=since_ms, group=group)
    if lines:
        return store.recent(limit=lines, group=group)
    store.skip_to_end()
    return []


async def _observe(join, lines: int | None, since_ms: int | None, follow: bool, printer: Printer) -> int:  # noqa: ANN001
    from xmesh_agent.conversation import OutcomeFollower, Said, StoreFollower
    from xmesh_agent.observer import ObserverNode, observer_dir

    outcomes = OutcomeFollower(group=join.group, history=True)
    outcomes.poll()
    db = observer_dir(join.name) / "cmbs.db"
    if db.exists():
        past = StoreFollower(db)
        try:
            printer.said(_history(past, lines, since_ms, join.group), outcomes.known)
        finally:
            past.close()
    if not follow:
        return EXIT_OK
    heard: asyncio.Queue[Said] = asyncio.Queue()

    async def on_cmb(cmb, sender) -> None:  # noqa: ANN001
        heard.put_nowait(Said(cmb, now_ms(), sender.name))

    async with ObserverNode(join, on_cmb) as observer:
        typer.echo(f"tail: {observer.identity.name} joined group {join.group}; Ctrl-C stops", err=True)
        next_poll = 0.0
        while True:
            batch = []
            with contextlib.suppress(TimeoutError):
                batch.append(await asyncio.wait_for(heard.get(), POLL_SECONDS))
            while not heard.empty():
                batch.append(heard.get_nowait())
            printer.said(batch)
            if time.monotonic() >= next_poll:
                printer.woke(outcomes.poll())
                next_poll = time.monotonic() + POLL_SECONDS
