"""The demo: a scenario's peers as separate processes on one Temporal, one seed task, live progress.

The demo joins the mesh itself as an observer node ("demo-seed"): it publishes the seed CMB, sees
every CMB the peers emit, and reads each wake's outcome from Temporal visibility as it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from temporalio.client import Client, WorkflowExecutionStatus

from workers import devserver
from workers.client import TemporalTarget, connect
from xmesh_agent import paths
from xmesh_agent.config import AgentConfig, to_toml
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import CAT7, CMB, NEUTRAL, mint
from xmesh_agent.mmp.node import MeshNode
from xmesh_agent.mmp.store import CMBStore
from xmesh_agent.scenario import Scenario

QUIET_SECONDS = 4.0


@dataclass
class DemoReport:
    outcomes: dict[str, str] = field(default_factory=dict)  # workflow id -> outcome
    cmbs: list[CMB] = field(default_factory=list)
    seed_key: str = ""
    timed_out: bool = False

    def by_outcome(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for outcome in self.outcomes.values():
            counts[outcome] = counts.get(outcome, 0) + 1
        return counts


def _spawn_peer(cfg_path: Path, log_path: Path, address: str) -> subprocess.Popen:
    env = dict(os.environ, TEMPORAL_ADDRESS=address, PYTHONUNBUFFERED="1")
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen(
        [sys.executable, "-m", "xmesh_agent.cli.app", "run", "--config", str(cfg_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def _stop_peers(procs: list[subprocess.Popen], timeout: float = 40.0) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()


def lineage_lines(cmbs: list[CMB], root: str) -> list[str]:
    """The conversation as a tree from the seed: who answered what, nearest parent first."""
    children: dict[str, list[CMB]] = {}
    for cmb in cmbs:
        for parent in cmb.parents:
            children.setdefault(parent, []).append(cmb)
    by_key = {c.key: c for c in cmbs}
    lines: list[str] = []

    def walk(key: str, depth: int) -> None:
        cmb = by_key.get(key)
        if cmb is None:
            return
        said = next((f"{f}: {cmb.text(f)}" for f in CAT7 if cmb.text(f) not in ("", NEUTRAL)), "")
        lines.append(f"{'  ' * depth}{cmb.created_by} {cmb.key[:17]}…  {said[:90]}")
        for child in sorted(children.get(key, []), key=lambda c: c.created_at):
            walk(child.key, depth + 1)

    walk(root, 0)
    return lines


async def _watch_wakes(client: Client, group: str, since: datetime, report: DemoReport, say: Callable) -> int:
    """Print each wake as it closes; return how many are still running."""
    query = f"XmGroup = '{group}' AND StartTime >= '{since.isoformat()}'"
    running = 0
    async for wf in client.list_workflows(query):
        if wf.status == WorkflowExecutionStatus.RUNNING:
            running += 1
            continue
        if wf.id in report.outcomes:
            continue
        attrs = {k: v for k, v in wf.search_attributes.items()}
        outcome = (attrs.get("XmOutcome") or [wf.status.name.lower() if wf.status else "?"])[0]
        peer = (attrs.get("XmPeer") or ["?"])[0]
        report.outcomes[wf.id] = outcome
        trigger = wf.id.rsplit("-", 1)[-1][:12]
        say(f"  wake  {peer:<16} on …{trigger}  -> {outcome}")
    return running


async def run_demo(
    scenario: Scenario,
    configs: list[AgentConfig],
    *,
    target: TemporalTarget | None,
    duration: float = 300.0,
    say: Callable[[str], None] = print,
) -> DemoReport:
    group = scenario.scenario.group
    run_dir = paths.ensure_dir(paths.xmesh_home() / "demo" / scenario.scenario.name)
    embedded = target is None
    if embedded:
        info = await asyncio.to_thread(devserver.acquire)
        target = TemporalTarget(address=info.address)
        say(f"Temporal: embedded dev server at {info.address} — Web UI {info.ui_url}")
    else:
        say(f"Temporal: {target.address} (namespace {target.namespace})")
    client = await connect(target)
    procs: list[subprocess.Popen] = []
    report = DemoReport()
    observer = NodeIdentity.generate("demo-seed")
    store = CMBStore(":memory:")
    last_activity = time.monotonic()

    async def on_cmb(cmb: CMB, sender: object) -> None:
        nonlocal last_activity
        last_activity = time.monotonic()
        report.cmbs.append(cmb)
        say(f"  cmb   {cmb.created_by:<16} emitted {cmb.key[:21]}…")

    node = MeshNode(observer, group, store, on_cmb=on_cmb)
    try:
        for cfg in configs:
            cfg_path = run_dir / f"{cfg.name}.toml"
            cfg_path.write_text(to_toml(cfg))
            procs.append(_spawn_peer(cfg_path, run_dir / f"{cfg.name}.log", target.address))
            label = " (OFFLINE adapter: deterministic, no network)" if cfg.model.adapter == "offline" else ""
            say(f"peer  {cfg.name:<16} {cfg.model.adapter}/{cfg.model.model_name}{label}")
        await node.start()
        if not await node.wait_for_peers(len(configs), timeout=60):
            logs = ", ".join(str(run_dir / f"{c.name}.log") for c in configs)
            raise RuntimeError(f"peers did not join the mesh within 60 s; see {logs}")
        await asyncio.sleep(1.0)  # let the peers finish meeting each other, not only the observer
        since = datetime.now(UTC)
        texts = dict(scenario.seed)
        texts["motivation"] = f"{texts.get('motivation', '')} (demo run {since:%Y-%m-%d %H:%M:%S})".strip()
        seed = mint(texts, identity=observer, group=group, created_at=int(since.timestamp() * 1000))
        report.seed_key = seed.key
        report.cmbs.append(seed)
        sent = await node.publish(seed)
        say(f"seed  {seed.key[:21]}… sent to {sent} peer(s): {texts.get('intent') or texts.get('focus')}")
        deadline = time.monotonic() + duration
        last_activity = time.monotonic()
        while True:
            await asyncio.sleep(0.5)
            running = await _watch_wakes(client, group, since, report, say)
            quiet = time.monotonic() - last_activity > QUIET_SECONDS
            if report.outcomes and running == 0 and quiet:
                break
            if time.monotonic() > deadline:
                report.timed_out = True
                break
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"a peer process exited early (code {dead[0].returncode}); see {run_dir}")
    finally:
        with contextlib.suppress(Exception):
            await node.stop()
        await asyncio.to_thread(_stop_peers, procs)
        store.close()
        if embedded:
            await asyncio.to_thread(devserver.release)
    return report
