"""The demo: a scenario's peers as separate processes on one Temporal, a seed task, live progress.

The demo joins the mesh itself as an observer node ("demo-seed", a persistent identity so peers that
pinned its key on an earlier run still trust it): it publishes the seed, sees every CMB the peers
emit, and reads each wake's outcome from Temporal visibility as it closes. A plain run ends when the
mesh goes quiet (the safety envelope ends the conversation); soak mode keeps seeding tasks for
`duration`, SIGKILLs and restarts a random peer every `chaos` seconds, then drains and checks the books.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from temporalio.client import Client

from xmesh_agent import paths
from xmesh_agent.config import AgentConfig
from xmesh_agent.demo.procs import STOP_TIMEOUT, PeerProcs
from xmesh_agent.demo.seeds import PeerView, candidates, choose_seed
from xmesh_agent.demo.soak import Check, account
from xmesh_agent.demo.watch import (
    Tally,
    WakeRow,
    group_query,
    lineage_lines,
    poll_wakes,
    ui_link,
    wake_line,
)
from xmesh_agent.identity import load_or_create_identity
from xmesh_agent.mmp.cmb import CMB
from xmesh_agent.mmp.node import MeshNode
from xmesh_agent.mmp.store import CMBStore
from xmesh_agent.scenario import Scenario
from xmesh_agent.wake.approval import decide_commands, held_lines
from xmesh_agent.wake.steps import ANCHOR_WINDOW
from xmesh_agent.workers import devserver
from xmesh_agent.workers.client import TemporalTarget, connect

__all__ = ["DemoOptions", "DemoReport", "DemoRun", "lineage_lines", "run_demo"]

OBSERVER = "demo-seed"
TICK = 0.5


@dataclass
class DemoOptions:
    duration: float = 300.0
    """Plain run: the latest it may take. Soak: how long it keeps seeding and crashing peers."""
    soak: bool = False
    chaos: float | None = None
    """Soak: seconds between SIGKILL + restart of a random peer (None: no chaos)."""
    seed_every: float = 15.0
    quiet: float = 4.0
    """The mesh is done when no CMB and no wake has closed for this long and none is running."""
    drain: float = 75.0
    summary_every: float = 10.0
    join_timeout: float = 60.0
    keep_server: bool = False
    """Leave the embedded server running after a run that ended by itself, so its Web UI can be browsed."""


@dataclass
class DemoReport:
    run: int = 0
    tally: Tally = field(default_factory=Tally)
    cmbs: list[CMB] = field(default_factory=list)
    seed_keys: list[str] = field(default_factory=list)
    ui_url: str | None = None
    timed_out: bool = False
    interrupted: bool = False
    server_kept: bool = False
    server_stopped: bool = False
    error: str | None = None
    kills: int = 0
    checks: list[Check] = field(default_factory=list)

    @property
    def seed_key(self) -> str:
        return self.seed_keys[0] if self.seed_keys else ""

    @property
    def ok(self) -> bool:
        if self.error or not self.tally.closed:
            return False
        return all(c.ok for c in self.checks)


def _next_run(name: str) -> int:
    """A per-scenario run counter under ~/.xmesh/demo: reruns resume the same mesh with a fresh seed."""
    counter = paths.ensure_dir(paths.xmesh_home() / "demo" / name) / "runs"
    try:
        run = int(counter.read_text().strip() or 0) + 1
    except (OSError, ValueError):
        run = 1
    counter.write_text(f"{run}\n")
    return run


class DemoRun:
    def __init__(
        self,
        scenario: Scenario,
        configs: list[AgentConfig],
        target: TemporalTarget | None,
        options: DemoOptions,
        say: Callable[[str], None] = print,
    ):
        self.scenario = scenario
        self.group = scenario.scenario.group
        self.configs = configs
        self.target = target
        self.opt = options
        self.say = say
        self.report = DemoReport()
        self._stop = asyncio.Event()
        self._last_activity = time.monotonic()
        self._seeds = 0
        self._last_summary = ""

    async def _on_cmb(self, cmb: CMB, sender: object) -> None:
        self._last_activity = time.monotonic()
        self.report.cmbs.append(cmb)

    def _on_wake(self, row: WakeRow) -> None:
        self._last_activity = time.monotonic()
        self.say(wake_line(row))

    def _on_held(self, workflow_id: str, held: dict) -> None:
        """A reply waits at an approval gate: what it says and the command that decides it, at once."""
        self._last_activity = time.monotonic()
        self.say(f"  held  {held['peer']:<18} a reply awaits your approval ({workflow_id})")
        for line in held_lines(held, indent="        "):
            self.say(line)
        self.say(f"        decide in another terminal: {decide_commands(workflow_id)}")

    async def run(self) -> DemoReport:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._interrupt)
        embedded = self.target is None
        target = self.target
        if target is None:
            info = await asyncio.to_thread(devserver.acquire)
            target = TemporalTarget(address=info.address)
            self.report.ui_url = info.ui_url
            self.say(f"Temporal: embedded dev server at {info.address}")
        else:
            self.report.ui_url = os.environ.get("TEMPORAL_UI_URL")
            self.say(f"Temporal: {target.address} (namespace {target.namespace})")
        if self.report.ui_url:
            self.say(f"Web UI:   {ui_link(self.report.ui_url, target.namespace, self.group)}")
        run_dir = paths.ensure_dir(paths.xmesh_home() / "demo" / self.scenario.scenario.name)
        procs = PeerProcs(run_dir, target.address, target.namespace)
        store = CMBStore(":memory:")
        node = MeshNode(
            load_or_create_identity(OBSERVER),
            self.group,
            store,
            on_cmb=self._on_cmb,
            registry_interval=1.0,
            reconnect_max=5.0,
        )
        client: Client | None = None
        since = datetime.now(UTC)
        try:
            client = await connect(target)
            self.report.run = _next_run(self.scenario.scenario.name)
            await self._main(client, procs, node, since)
            if self.opt.soak and not self.report.error:
                await self._drain(client, procs, since)
        except (RuntimeError, OSError) as exc:
            self.report.error = str(exc)
        finally:
            with contextlib.suppress(Exception):
                await node.stop()
            if procs.peers:
                self.say(
                    f"stopping {len(procs.peers)} peer(s): SIGTERM, in-flight wakes drain (≤{STOP_TIMEOUT:.0f} s)"
                )
            await asyncio.to_thread(procs.stop_all)
            if client is not None:  # wakes that closed while the peers drained
                with contextlib.suppress(Exception):
                    await poll_wakes(client, group_query(self.group, since), self.report.tally, self._on_wake)
            store.close()
            if embedded:
                keep = self.opt.keep_server and not self.report.interrupted
                stopped = await asyncio.to_thread(devserver.release, keep_running=keep)
                self.report.server_kept, self.report.server_stopped = keep, stopped
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
        if self.opt.soak and not self.report.error and not self.report.interrupted:
            since_ms = int(since.timestamp() * 1000)
            names = list(procs.peers)
            self.report.checks = account(
                names, self.group, since_ms, self.report.tally, self.report.cmbs, OBSERVER
            )
        return self.report

    def _interrupt(self) -> None:
        if not self._stop.is_set():
            self.say("interrupted: stopping the demo (peers drain, the server lease is released)")
        self.report.interrupted = True
        self._stop.set()

    async def _tick(self) -> bool:
        """Wait one tick; True when the run was interrupted."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), TICK)
        return self._stop.is_set()

    async def _seed(self, node: MeshNode) -> None:
        soak = self.opt.soak
        now = datetime.now(UTC)
        created_at = int(now.timestamp() * 1000)
        options = candidates(self.scenario, self.report.run, self._seeds, now, soak)
        views = await asyncio.to_thread(self._peer_views)
        choice = await asyncio.to_thread(choose_seed, options, views, node.identity, self.group, created_at)
        seed, texts = choice.cmb, choice.texts
        self._seeds += 1
        self.report.seed_keys.append(seed.key)
        self.report.cmbs.append(seed)
        sent = await node.publish(seed)
        self._last_activity = time.monotonic()
        self.say(f"seed  {seed.key[:21]}… to {sent} peer(s): {texts['focus']}")
        if choice.rejected_by:
            self.say(
                f"  note  no task of {self.scenario.scenario.name} suits every peer's memory: "
                f"{', '.join(choice.rejected_by)} will not take this one up"
            )

    def _peer_views(self) -> list[PeerView]:
        """Each peer's α weights and the group CMBs it holds, read from its own store."""
        views = []
        for cfg in self.configs:
            db = paths.peer_dir(cfg.name) / "cmbs.db"
            anchors: list[CMB] = []
            if db.exists():
                store = CMBStore(db, group_commit=False)
                try:
                    anchors = store.recent_in_group(self.group, ANCHOR_WINDOW)
                finally:
                    store.close()
            views.append(PeerView(cfg.name, cfg.weights, anchors))
        return views

    async def _main(self, client: Client, procs: PeerProcs, node: MeshNode, since: datetime) -> None:
        for cfg in self.configs:
            procs.add(cfg)
            offline = (
                " (OFFLINE adapter: deterministic, no network, no cost)"
                if cfg.model.adapter == "offline"
                else ""
            )
            self.say(f"peer  {cfg.name:<18} {cfg.model.adapter}/{cfg.model.model_name}{offline}")
        await node.start()
        if not await node.wait_for_peers(len(self.configs), timeout=self.opt.join_timeout):
            raise RuntimeError(
                f"peers did not join the mesh within {self.opt.join_timeout:.0f} s; see {procs.logs()}"
            )
        await asyncio.sleep(1.0)  # the peers finish meeting each other, not only the observer
        query = group_query(self.group, since)
        await self._seed(node)
        start = time.monotonic()
        deadline = start + self.opt.duration
        next_seed = start + self.opt.seed_every
        next_chaos = start + self.opt.chaos if self.opt.chaos else float("inf")
        next_summary = start + self.opt.summary_every
        while not await self._tick():
            await poll_wakes(client, query, self.report.tally, self._on_wake, self._on_held)
            now = time.monotonic()
            if now >= next_summary:
                next_summary = now + self.opt.summary_every
                summary = self.report.tally.summary_line()
                if summary != self._last_summary:  # only when something changed
                    self._last_summary = summary
                    self.say(summary)
            dead = procs.dead()
            if dead and not self.opt.soak:
                raise RuntimeError(f"peer {dead[0].name} exited early; see {dead[0].log_path}")
            for peer in dead:
                self.say(f"  !     {peer.name} exited on its own (code {peer.proc.returncode}); restarting")
                procs.restart(peer.name)
            if now >= deadline:
                tally = self.report.tally  # wakes held for an operator are no reason to call it a timeout
                self.report.timed_out = not self.opt.soak and not (tally.held and not tally.busy())
                return
            if self.opt.soak:
                if now >= next_seed:
                    next_seed = now + self.opt.seed_every
                    await self._seed(node)
                if now >= next_chaos:
                    next_chaos = now + (self.opt.chaos or 0)
                    await self._chaos(procs)
            elif self._quiet():
                return

    def _quiet(self) -> bool:
        tally = self.report.tally
        idle = time.monotonic() - self._last_activity > self.opt.quiet
        return bool(tally.closed) and not tally.running and idle

    async def _chaos(self, procs: PeerProcs) -> None:
        victim = random.choice(sorted(procs.peers))
        pid = procs.peers[victim].proc.pid if procs.peers[victim].proc else "?"
        await asyncio.to_thread(procs.kill, victim)
        procs.restart(victim)
        self.report.kills += 1
        self.say(f"  chaos SIGKILL {victim} (pid {pid}) and restarted it")

    async def _drain(self, client: Client, procs: PeerProcs, since: datetime) -> None:
        """Soak end: no more seeds or kills; wait for every wake to close (the restarted peers resume them)."""
        self.say(f"soak: seeding and chaos stopped; draining (≤{self.opt.drain:.0f} s)")
        query = group_query(self.group, since)
        deadline = time.monotonic() + self.opt.drain
        while not await self._tick():
            await poll_wakes(client, query, self.report.tally, self._on_wake)
            for peer in procs.dead():
                procs.restart(peer.name)
            if self._quiet() or time.monotonic() > deadline:
                break
        await poll_wakes(client, query, self.report.tally, self._on_wake)


async def run_demo(
    scenario: Scenario,
    configs: list[AgentConfig],
    *,
    target: TemporalTarget | None,
    duration: float = 300.0,
    say: Callable[[str], None] = print,
    options: DemoOptions | None = None,
) -> DemoReport:
    """Run the scenario once (see DemoOptions for soak and chaos) and report what happened."""
    opts = options or DemoOptions(duration=duration)
    return await DemoRun(scenario, configs, target, opts, say).run()
