"""One peer process: its mesh node, its Temporal worker (workflows + activities) and its listener.

`run_peer` is what `xmesh-agent run --config agent.toml` runs until SIGINT/SIGTERM; in-flight
wakes get `graceful_shutdown_timeout` to finish before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from xmesh_agent import paths
from xmesh_agent.activities.wake import WakeActivities
from xmesh_agent.clock import now_ms
from xmesh_agent.config import AgentConfig
from xmesh_agent.identity import NodeIdentity, load_or_create_e2e_keypair, load_or_create_identity
from xmesh_agent.logs import PeerLog
from xmesh_agent.mmp.admission.semantic import encoder_named
from xmesh_agent.mmp.node import MeshNode
from xmesh_agent.mmp.store import CMBStore
from xmesh_agent.models.factory import build_adapter
from xmesh_agent.observability import PeerMetrics
from xmesh_agent.recall import save_profile
from xmesh_agent.wake.ledger import WakeLedger
from xmesh_agent.wake.safety_state import SafetyState
from xmesh_agent.wake.steps import WakeSteps
from xmesh_agent.workers import devserver, on_disk
from xmesh_agent.workers.bounds import RunBounds, enforce, summary, write_summary
from xmesh_agent.workers.client import TemporalTarget, connect, task_queue
from xmesh_agent.workers.control import ControlServer, ensure_not_running
from xmesh_agent.workers.control_cmds import HANDLERS
from xmesh_agent.workers.follow import follow_server
from xmesh_agent.workers.listener import WakeStarter
from xmesh_agent.workers.memory import limit_malloc_arenas
from xmesh_agent.workers.telemetry import Telemetry, open_telemetry
from xmesh_agent.workflows import search
from xmesh_agent.workflows.wake import WakeWorkflow

log = logging.getLogger("xmesh.peer")

GRACEFUL_SHUTDOWN = timedelta(seconds=30)
METRICS_SAMPLE_SECONDS = 2.0
REBIND_SHUTDOWN_SECONDS = 10.0
WAKE_SANDBOX = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("xmesh_agent")
)
"""Our workflow modules are imported once, not re-imported (and re-decorated) in every wake's sandbox:
~3-4 ms of CPU per wake. They hold constants only; the sandbox still guards what the workflow calls."""
WORKFLOW_CACHE = 100
"""Wakes the worker keeps in memory between their workflow tasks (the SDK's default is 1,000). A wake
runs in two or three tasks within a second or so, so a few dozen cover a busy peer; one pushed out (a
wake parked for approval, say) replays its short history when it resumes."""
WORKFLOW_TASK_SLOTS = 4
"""Workflow tasks the worker runs at once, and so the threads it keeps for them (the SDK's default is
500). A task is a few milliseconds of Python under the GIL, so more threads add no throughput; the pool
never shrinks, so a default one grows a thread (and its stack) at every new peak of concurrency."""
EXIT_IDENTITY_COLLISION = 3
"""`xmesh-agent run` exit code when the relay refuses or replaces this peer's name (§4.4.7)."""


def status_file(peer: str) -> Path:
    return paths.peer_dir(peer) / "peer.json"


@dataclass
class Peer:
    """The parts of a running peer, wired together; `start`/`stop` bring them up and down in order."""

    config: AgentConfig
    client: Client
    metrics: PeerMetrics = field(default_factory=PeerMetrics)
    embedded: bool = False
    """Its Temporal is this machine's embedded server (found through its state file)."""
    identity: NodeIdentity = field(init=False)
    store: CMBStore = field(init=False)
    ledger: WakeLedger = field(init=False)
    node: MeshNode = field(init=False)
    starter: WakeStarter = field(init=False)
    worker: Worker = field(init=False)
    events: PeerLog = field(init=False)
    safety: SafetyState = field(init=False)
    steps: WakeSteps = field(init=False)
    control: ControlServer = field(init=False)
    _tasks: list[asyncio.Task] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        cfg = self.config
        ensure_not_running(cfg.name)  # before any store, socket or worker is opened
        home = paths.ensure_dir(paths.peer_dir(cfg.name))
        self.identity = load_or_create_identity(cfg.name)
        self.store = CMBStore(home / "cmbs.db", retention_days=cfg.mesh.retention_days or None)
        self.ledger = WakeLedger(home / "wakes.db")
        self.events = PeerLog.for_config(cfg)
        self.starter = WakeStarter(self.client, cfg, self.store, self.ledger, self.identity.node_id)
        self.starter.log = self.events
        self.node = MeshNode(
            self.identity,
            cfg.group,
            self.store,
            host=cfg.mesh.host,
            port=cfg.mesh.port,
            static_peers=cfg.mesh.peers,
            discovery=cfg.mesh.discovery,
            relay_url=cfg.mesh.relay,
            relay_token=cfg.mesh.relay_token,
            admission=cfg.mesh.admission,
            on_cmb=self.starter.on_cmb,
            e2e_keypair=load_or_create_e2e_keypair(cfg.name),
            on_event=self.events.node_event,
        )
        self.safety = SafetyState.open(home / "safety.db", cfg)
        steps = WakeSteps(
            cfg, self.identity, self.store, self.ledger, self.node, build_adapter(cfg.model), self.safety
        )
        steps.log = self.events
        steps.fallbacks = [build_adapter(m) for m in cfg.model.chain()[1:]]
        steps.metrics = self.metrics
        if self.metrics.enabled:
            self._count_frames()
        self.steps = steps
        self.control = ControlServer(self, HANDLERS)
        self.worker = self._make_worker(self.client)

    def _make_worker(self, client: Client) -> Worker:
        return Worker(
            client,
            task_queue=task_queue(self.config.group, self.config.name),
            workflows=[WakeWorkflow],
            activities=WakeActivities(self.steps).all(),
            graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
            workflow_runner=WAKE_SANDBOX,
            max_cached_workflows=WORKFLOW_CACHE,
            max_concurrent_workflow_tasks=WORKFLOW_TASK_SLOTS,
        )

    def rebind(self, client: Client) -> None:
        """Carry on with another Temporal connection (the embedded server came back elsewhere): a new
        worker polls the same task queue at once, spooled wakes start on the new client, and the old
        worker is let go in the background (its server is gone, so it may take a while)."""
        old, old_task = self.worker, self._tasks[0]
        self.client = client
        self.starter.client = client
        self.worker = self._make_worker(client)
        self._tasks[0] = asyncio.create_task(self.worker.run(), name="worker")
        self._tasks.append(asyncio.create_task(_let_go(old, old_task), name="old-worker"))
        self.starter.kick()

    async def start(self) -> None:
        await self.control.start()  # refuses when a live peer of this name holds the socket
        cfg = self.config
        save_profile(cfg.name, cfg.mesh.encoder, cfg.weights, cfg.group)  # recall ranks as this peer judges
        if self.config.mesh.encoder == "semantic":  # load the model (~5 s) before the first wake needs it
            await asyncio.to_thread(encoder_named("semantic").warm)
        self._tasks.append(asyncio.create_task(self.worker.run(), name="worker"))
        await self.node.start()
        self.starter.reconcile()
        self._tasks.append(asyncio.create_task(self.starter.run(), name="listener"))
        self._tasks.append(asyncio.create_task(self._prune_daily(), name="retention"))
        if self.metrics.enabled:
            self._tasks.append(asyncio.create_task(self._sample(), name="metrics"))
        self._started_at = now_ms()
        self.write_status()

    def write_status(self, temporal_lost_since: int | None = None) -> None:
        """peer.json: who and where this peer is, and which Temporal it uses (and since when it lost it)."""
        status_file(self.config.name).write_text(
            json.dumps(
                {
                    "peer": self.config.name,
                    "group": self.config.group,
                    "pid": os.getpid(),
                    "nodeId": self.identity.node_id,
                    "host": self.node.host,
                    "port": self.node.port,
                    "taskQueue": self.worker.task_queue,
                    "startedAt": self._started_at,
                    "temporal": {
                        "address": self.client.service_client.config.target_host,
                        "embedded": self.embedded,
                        "lostSince": temporal_lost_since,
                    },
                },
                indent=2,
            )
        )
        on_disk.record_start(
            self.config, self.identity.node_id, self.node.port, self.safety.run_id, self.events.path
        )

    def stop_listening(self) -> None:
        """Stop starting wakes: CMBs that arrive from now on are spooled for the next start."""
        for task in self._tasks:
            if task.get_name() == "listener":
                task.cancel()

    def _count_frames(self) -> None:
        """Frames in/out from the node, rejected CMB frames from its audit events."""
        metrics, forward = self.metrics, self.node.on_event
        self.node.on_frame = lambda d, kind, n: (
            metrics.frame_in(kind) if d == "in" else metrics.frame_out(kind, n)
        )

        def on_event(name: str, data: dict) -> None:
            if name == "cmb-rejected":
                metrics.frame_rejected(str((data or {}).get("reason", "unknown")))
            if forward is not None:
                forward(name, data)

        self.node.on_event = on_event

    async def _sample(self) -> None:
        """Gauges that change with time (breaker timers, peers coming and going, cost windows)."""
        chain = self.config.model.chain()
        while True:
            now = now_ms()
            self.metrics.mesh_peers(len(self.node.peers()))
            for model, breaker in zip(chain, self.safety.breakers, strict=False):
                self.metrics.breaker(model.label, breaker.snapshot(now).state)
            t = self.safety.cost.totals(now)
            self.metrics.spent(t.run_usd, t.hour_usd, t.day_usd)
            await asyncio.sleep(METRICS_SAMPLE_SECONDS)

    async def _prune_daily(self) -> None:
        """Apply [mesh] retention_days: at start, then once a day."""
        while True:
            dropped = self.store.prune()
            self.store.flush()
            if dropped:
                self.events.event("store-pruned", {"dropped": dropped})
            await asyncio.sleep(86_400)

    async def stop(self) -> None:
        """Stop starting wakes, let in-flight ones finish (they still emit), then leave the mesh.

        CMBs that arrive while draining are spooled in the wake ledger and woken on the next start.
        """
        owned = self.control.serving
        await self.control.close()
        for task in self._tasks[1:]:
            task.cancel()
        await self.worker.shutdown()
        await self.node.stop()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for adapter in self.steps.adapters:
            with contextlib.suppress(Exception):
                await adapter.aclose()
        self.store.close()
        self.ledger.close()
        self.safety.close()
        self.events.close()
        if owned:
            status_file(self.config.name).unlink(missing_ok=True)
            on_disk.record_stop(self.config.name)


async def open_client(
    target: TemporalTarget | None, telemetry: Telemetry | None = None
) -> tuple[Client, bool]:
    """Connect to the configured Temporal, or to the shared embedded one (taking a lease)."""
    telemetry = telemetry or Telemetry()
    embedded = target is None
    if embedded:
        info = await asyncio.to_thread(devserver.acquire)
        target = TemporalTarget(address=info.address)
    deadline = time.monotonic() + 30
    while True:
        try:
            return await connect(target, telemetry.runtime, telemetry.interceptors), embedded
        except RuntimeError:
            if not embedded or time.monotonic() > deadline:  # a given address: say at once what is wrong
                raise
            await asyncio.sleep(0.5)


async def run_peer(
    config: AgentConfig,
    target: TemporalTarget | None,
    ready: asyncio.Event | None = None,
    bounds: RunBounds | None = None,
) -> int:
    """Run until a signal, `xmesh-agent stop`, or a bound of `bounds` (then write its summary)."""
    started = time.monotonic()
    limit_malloc_arenas()  # before the Temporal core starts its threads
    bounds = bounds or RunBounds()
    ensure_not_running(config.name)
    telemetry = open_telemetry(config)
    client, embedded = await open_client(target, telemetry)
    stop = asyncio.Event()
    peer = Peer(config, client, telemetry.metrics, embedded=embedded)
    peer.control.on_stop = stop.set

    def on_signal() -> None:
        """First Ctrl-C / SIGTERM drains in-flight wakes like `xmesh-agent stop`; a second one stops now."""
        if not peer.control.begin_stop("signal"):
            stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    collision = watch_identity_collision(peer, stop)
    try:
        await peer.start()
        log.info("peer %s up: node %s port %d", config.name, peer.identity.node_id, peer.node.port)
        if embedded:
            _announce_web_ui(config.name)
        if ready:
            ready.set()
        if embedded:
            peer._tasks.append(asyncio.create_task(follow_server(peer, telemetry), name="follow-server"))
        if bounds.duration_s or bounds.max_cost_usd is not None:
            peer._tasks.append(asyncio.create_task(enforce(peer.control, bounds), name="bounds"))
        await stop.wait()
    finally:
        if bounds.summary_path is not None:
            with contextlib.suppress(Exception):  # a summary must never hide the stop itself
                write_summary(bounds.summary_path, summary(peer.control, started, bounds))
        await peer.stop()
        telemetry.shutdown()
        if embedded:
            await asyncio.to_thread(devserver.release)
    if collision:
        log.error(
            "identity collision: another peer named %r holds this identity on the relay (%s); "
            "this peer stopped. Stop the other one, or give this one another [identity] name.",
            config.name,
            collision.get("reason", "duplicate"),
        )
        return EXIT_IDENTITY_COLLISION
    return 0


async def _let_go(worker: Worker, task: asyncio.Task) -> None:
    try:
        await asyncio.wait_for(worker.shutdown(), REBIND_SHUTDOWN_SECONDS)
    except (TimeoutError, Exception):  # noqa: BLE001 - the old server is gone; so is its worker
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


def _announce_web_ui(peer: str) -> None:
    info = devserver.running_server()
    if info is not None:
        query = quote(f"{search.PEER.name} = '{peer}'")
        log.info("Web UI of the embedded Temporal server: %s", info.ui_url)
        log.info("this peer's wakes: %s/namespaces/default/workflows?query=%s", info.ui_url, query)


def watch_identity_collision(peer: Peer, stop: asyncio.Event) -> dict:
    """Stop the peer when the relay says its name is taken; the returned dict fills with the event."""
    seen: dict = {}
    forward = peer.node.on_event

    def on_event(name: str, data: dict) -> None:
        if forward is not None:
            forward(name, data)
        if name == "identity-collision":
            seen.update(data or {"reason": "duplicate"})
            stop.set()

    peer.node.on_event = on_event
    return seen
