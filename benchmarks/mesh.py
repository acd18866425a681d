"""Mesh scale: N peers in one group on one machine, meeting through the same-host registry.

- In one process, N = 2, 8, 32 MeshNodes with default timings: time for one broadcast to reach
  all the others (p50/p95), RSS growth per node, and CPU per node at idle (heartbeats only).
- N = 8 nodes as separate processes: each one's RSS and idle CPU.
- A real `xmesh-agent run` peer process (node + Temporal worker + listener, offline model) against
  a running dev server: its RSS and idle CPU.
Targets: an idle peer uses < 1 % of a core and < 120 MB RSS.

usage: python benchmarks/mesh.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, Row, cpu_seconds, file_backed_server, finish, fmt_ms, median, pct, rss_mb

from xmesh_agent.clock import now_ms
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import CMB, mint
from xmesh_agent.mmp.connection import PeerInfo
from xmesh_agent.mmp.node import MeshNode
from xmesh_agent.mmp.store import CMBStore

GROUP = "bench-mesh"
CPU_TARGET = 0.01
RSS_TARGET_MB = 120.0


class Arrivals:
    """Per node: when each CMB key was surfaced."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.changed = asyncio.Event()

    async def on_cmb(self, cmb: CMB, peer: PeerInfo) -> None:
        self.at[cmb.key] = time.perf_counter()
        self.changed.set()


async def wait_until(predicate, timeout: float, step: float = 0.05) -> bool:
    """Poll with a deadline (for state that offers no single event to wait on)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)
    return True


def isolate(tmp: Path) -> None:
    """A fresh XMESH_HOME and same-host registry directory, so only our nodes meet."""
    os.environ["XMESH_HOME"] = str(tmp / "home")
    os.environ["XMESH_SYM_LOOPBACK_DIR"] = str(tmp / "loopback")


async def broadcasts(nodes: list[tuple[MeshNode, Arrivals]], n: int, offset: int, rounds: int) -> list[float]:
    """Each round one node (in turn) publishes; seconds until the last of the others surfaced it."""
    lat = []
    for r in range(offset, offset + rounds):
        sender, _ = nodes[r % n]
        now = now_ms()
        cmb = mint(
            {"focus": f"broadcast {r} in a mesh of {n}"},
            identity=sender.identity,
            group=GROUP,
            created_at=now,
        )
        others = [a for nd, a in nodes if nd is not sender]
        start = time.perf_counter()
        await sender.publish(cmb)
        await wait_until(lambda cmb=cmb, others=others: all(cmb.key in a.at for a in others), 10.0, 0.0005)
        lat.append(max(a.at.get(cmb.key, time.perf_counter()) for a in others) - start)
    return lat


async def in_process(n: int, rounds: int, idle_window: float) -> list[Row]:
    tmp = Path(tempfile.mkdtemp(prefix=f"mesh-{n}-"))
    isolate(tmp)
    gc.collect()
    rss0 = rss_mb()
    nodes: list[tuple[MeshNode, Arrivals]] = []
    for i in range(n):
        arrivals = Arrivals()
        node = MeshNode(
            NodeIdentity.generate(f"m{i:02d}"),
            GROUP,
            CMBStore(tmp / f"m{i:02d}.db"),
            on_cmb=arrivals.on_cmb,
        )
        nodes.append((node, arrivals))
    began = time.perf_counter()
    for node, _ in nodes:
        await node.start()
    meshed = await wait_until(lambda: all(len(nd.peers()) >= n - 1 for nd, _ in nodes), 60.0 + n)
    meet = time.perf_counter() - began
    rows: list[Row] = []
    try:
        if not meshed:
            low = min(len(nd.peers()) for nd, _ in nodes)
            rows.append(Row("mesh", f"N={n} full mesh", f"NOT reached (min {low} peers)"))
            return rows
        first = await broadcasts(nodes, n, 0, n)  # first contact: pins and signer marks on disk
        lat = await broadcasts(nodes, n, n, rounds)
        gc.collect()
        rss1 = rss_mb()
        cpu0 = cpu_seconds()
        await asyncio.sleep(idle_window)  # the measurement window itself: heartbeats only
        cpu = (cpu_seconds() - cpu0) / idle_window
        per_node = (rss1 - rss0) / n
        rows += [
            Row("mesh", f"N={n:<2} full mesh formed", f"{meet:.1f} s", note=f"{n * (n - 1) // 2} sessions"),
            Row(
                "mesh",
                f"N={n:<2} broadcast reaches all p50 / p95",
                f"{fmt_ms(pct(lat, 50))} / {fmt_ms(pct(lat, 95))}",
                note=f"{rounds} broadcasts, {n - 1} receivers each",
            ),
            Row(
                "mesh",
                f"N={n:<2} first broadcast per sender p50",
                fmt_ms(pct(first, 50)),
                note="receivers pin the key and mark the signer in SQLite",
            ),
            Row("mesh", f"N={n:<2} RSS growth per node (1 process)", f"{per_node:.1f} MB"),
            Row(
                "mesh",
                f"N={n:<2} idle CPU per node (1 process)",
                f"{cpu / n:.3%}",
                "< 1 %",
                cpu / n < CPU_TARGET,
                f"whole process {cpu:.2%} of a core over {idle_window:.0f} s",
            ),
        ]
    finally:
        for node, _ in nodes:
            await node.stop()
            node.store.close()
    return rows


# -- nodes as processes --------------------------------------------------------------------------


async def child(name: str, want: int) -> None:
    """One node in its own process: report 'ready' once meshed, stop when stdin closes."""
    node = MeshNode(
        NodeIdentity.generate(name), GROUP, CMBStore(Path(os.environ["XMESH_HOME"]) / f"{name}.db")
    )
    await node.start()
    ok = await node.wait_for_peers(want, 60.0)
    print("ready" if ok else f"short {len(node.peers())}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await node.stop()


async def processes(n: int, idle_window: float) -> list[Row]:
    tmp = Path(tempfile.mkdtemp(prefix=f"mesh-proc-{n}-"))
    isolate(tmp)
    (tmp / "home").mkdir(parents=True, exist_ok=True)
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", f"p{i:02d}", "--want", str(n - 1)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    try:
        lines = await asyncio.gather(*(asyncio.to_thread(p.stdout.readline) for p in procs))
        ready = sum(1 for line in lines if line.strip() == "ready")
        pids = [p.pid for p in procs]
        cpu0 = {pid: cpu_seconds(pid) for pid in pids}
        await asyncio.sleep(idle_window)  # the measurement window: heartbeats only
        cpu = [(cpu_seconds(pid) - cpu0[pid]) / idle_window for pid in pids]
        rss = [rss_mb(pid) for pid in pids]
    finally:
        for p in procs:
            p.stdin.close()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
    return [
        Row(
            "mesh",
            f"N={n} processes: RSS per node median / max",
            f"{median(rss):.1f} / {max(rss):.1f} MB",
            "< 120 MB",
            max(rss) < RSS_TARGET_MB,
            f"{ready}/{n} fully meshed",
        ),
        Row(
            "mesh",
            f"N={n} processes: idle CPU per node median / max",
            f"{median(cpu):.3%} / {max(cpu):.3%}",
            "< 1 %",
            max(cpu) < CPU_TARGET,
            f"over {idle_window:.0f} s",
        ),
    ]


# -- a real `xmesh-agent run` peer ---------------------------------------------------------------


async def real_peer(idle_window: float) -> list[Row]:

    tmp = Path(tempfile.mkdtemp(prefix="mesh-real-"))
    isolate(tmp)
    env = await file_backed_server(tmp)
    config = tmp / "agent.toml"
    config.write_text(
        '[identity]\nname = "bench-idle"\nrole = "reviewer"\n\n[mesh]\ngroup = "bench-idle"\n\n'
        '[model]\nadapter = "offline"\n'
    )
    address = env.client.service_client.config.target_host
    proc = subprocess.Popen(
        [sys.executable, "-m", "xmesh_agent.cli.app", "run", "--config", str(config)],
        env={**os.environ, "TEMPORAL_ADDRESS": address},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    status = tmp / "home" / "peers" / "bench-idle" / "peer.json"
    try:
        up = await wait_until(lambda: status.exists() or proc.poll() is not None, 60.0, 0.2)
        if not up or proc.poll() is not None:
            err = proc.stderr.read().decode()[-300:] if proc.poll() is not None else "timeout"
            return [Row("mesh", "xmesh-agent run peer", "did not start", note=err.replace("\n", " "))]
        pid = json.loads(status.read_text())["pid"]
        await asyncio.sleep(3.0)  # let start-up work (imports, worker polls, first registry scan) pass
        cpu0 = cpu_seconds(pid)
        await asyncio.sleep(idle_window)  # the measurement window
        cpu = (cpu_seconds(pid) - cpu0) / idle_window
        rss = rss_mb(pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        await env.shutdown()
    return [
        Row("mesh", "`xmesh-agent run` peer RSS", f"{rss:.1f} MB", "< 120 MB", rss < RSS_TARGET_MB, "idle"),
        Row(
            "mesh",
            "`xmesh-agent run` peer idle CPU",
            f"{cpu:.3%}",
            "< 1 %",
            cpu < CPU_TARGET,
            f"over {idle_window:.0f} s; includes the worker's long polls",
        ),
    ]


IMPORTS = ("xmesh_agent.mmp.node", "temporalio.worker", "openai", "anthropic", "xmesh_agent.workers.peer")


def import_rows() -> list[Row]:
    """Where a peer's RSS comes from: a fresh interpreter's RSS after importing each module."""
    rows = []
    probe = "import gc, sys, importlib; importlib.import_module(sys.argv[1]); gc.collect(); print(open('/proc/self/status').read())"
    for module in IMPORTS:
        out = subprocess.run(
            [sys.executable, "-c", probe, module], capture_output=True, text=True, timeout=60, cwd=ROOT
        ).stdout
        kb = next((int(line.split()[1]) for line in out.splitlines() if line.startswith("VmRSS:")), 0)
        rows.append(
            Row("mesh", f"  RSS after `import {module}`", f"{kb / 1024:.1f} MB", note="fresh interpreter")
        )
    return rows


async def run(quick: bool) -> list[Row]:
    window = 5.0 if quick else 10.0
    rounds = 5 if quick else 20
    rows: list[Row] = []
    for n in (2, 8) if quick else (2, 8, 32):
        rows += await in_process(n, rounds, window)
    rows += await processes(8, window)
    rows += await real_peer(window)
    rows += import_rows()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=2 and 8 only, 5 s idle windows")
    parser.add_argument("--json", help="also write the rows here (run_all uses it)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--want", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(args.child, args.want))
        return
    rows = asyncio.run(run(args.quick))
    finish(rows, args.json, "mesh: N peers in one group on 127.0.0.1 (same-host registry discovery)")


if __name__ == "__main__":
    main()
