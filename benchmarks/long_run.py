"""A peer that runs for a long time: does its memory stay flat? N wakes at a steady rate against a real
`xmesh-agent run` peer process (offline model), RSS and CPU printed per block of 1,000 wakes.

The feeder is a plain MeshNode in this process that publishes distinct on-topic triggers (every one is
admitted, so every wake calls the model and emits a reply) at `--rate` per second. After each block
the peer's RSS and the CPU it spent per wake in that block are read from /proc, and RSS is sampled
twice a second through the block (its median and peak). The target: the blocks' median RSS flat (within
5 %) from the 2nd block to the last; the growth by end-of-block readings is printed beside it.

`--census` runs the peer in this process instead and, after each block from the 3rd on, prints the
object types whose live count grew most since the end of the 2nd block (what holds on, if anything;
tracemalloc costs too much CPU for a peer to keep up at 15 wakes/s), and how many memory blocks Python
has in use: strings, numbers and tuples the collector does not track (a cache of them that keeps
filling) show there and not in the types. `--census --traces` also traces Python's allocations and
prints the source lines whose live memory grew most (run it at a lower `--rate`: tracing costs CPU).

usage: python benchmarks/long_run.py [--wakes 10000] [--rate 15] [--block 1000] [--census]
       [--json out.json]   (10,000 wakes at 15/s take ~11 minutes; run it under `nice`)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _common import Row, cpu_seconds, file_backed_server, finish, isolated_home, rss_mb
from _wake_kit import Observer

PEER = "bench-long"
FLAT_WITHIN = 0.05
BIG = 10**9


def group() -> str:
    return f"long-{os.getpid()}"


def config_text(group: str) -> str:
    budget = "\n".join(
        f"{k} = {BIG}"
        for k in (
            "max_wakes_per_minute",
            "max_wakes_per_hour",
            "max_wakes_per_day",
            "max_cost_usd_per_hour",
            "max_cost_usd_per_day",
            "max_cost_usd_per_run",
        )
    )
    return (
        f'[identity]\nname = "{PEER}"\nrole = "reviewer"\n\n[mesh]\ngroup = "{group}"\ndiscovery = []\n\n'
        f'[model]\nadapter = "offline"\n\n[budget]\n{budget}\n'
    )


class PeerProcess:
    """`xmesh-agent run` in a process of its own; its pid and mesh port from peer.json."""

    def __init__(self, tmp: Path, address: str) -> None:
        self.config = tmp / "agent.toml"
        self.config.write_text(config_text(group()))
        self.status = Path(os.environ["XMESH_HOME"]) / "peers" / PEER / "peer.json"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "xmesh_agent.cli.app", "run", "--config", str(self.config)],
            env={**os.environ, "TEMPORAL_ADDRESS": address},
            stdout=subprocess.DEVNULL,
            stderr=open(tmp / "peer.stderr", "wb"),  # noqa: SIM115 - the child owns it until it exits
        )
        self.pid = 0
        self.port = 0

    async def up(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.status.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the peer did not start (see {self.config.parent / 'peer.stderr'})")
            await asyncio.sleep(0.2)
        info = json.loads(self.status.read_text())
        self.pid, self.port = info["pid"], info["port"]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class InProcessPeer:
    """The same peer in this process (for --census): pid is ours, so RSS includes the feeder."""

    def __init__(self, tmp: Path, client) -> None:
        from xmesh_agent.config import load_config
        from xmesh_agent.workers.peer import Peer

        path = tmp / "agent.toml"
        path.write_text(config_text(group()))
        self.peer = Peer(load_config(path), client)
        self.pid, self.port = os.getpid(), 0

    async def up(self) -> None:
        await self.peer.start()
        self.port = self.peer.node.port


class RssSampler:
    """The peer's RSS twice a second while a block runs: its median is the block's level (one reading at
    the block's end lands on whatever the allocator holds at that instant, ±2 MB), its peak the most."""

    def __init__(self, pid: int, every: float = 0.5) -> None:
        self.pid, self.every = pid, every
        self.samples: list[float] = []
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            self.samples.append(rss_mb(self.pid))
            await asyncio.sleep(self.every)

    async def __aenter__(self) -> RssSampler:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.samples.append(rss_mb(self.pid))

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def peak(self) -> float:
        return max(self.samples)


def rss_parts(pid: int) -> str:
    """Where the RSS is, from /proc/<pid>/smaps: the main malloc heap, other anonymous memory (thread
    arenas, Python's arenas, large blocks), and mapped files (code, SQLite's shared index)."""
    parts = {"heap": 0, "anon": 0, "file": 0}
    kind = "anon"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
            name = head[5] if len(head) > 5 else ""
            kind = "heap" if name == "[heap]" else "file" if name.startswith("/") else "anon"
        elif head[0] == "Rss:":
            parts[kind] += int(head[1])
    threads = next(
        line.split()[1]
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("Threads:")
    )
    return " ".join(f"{k} {v / 1024:.1f}" for k, v in parts.items()) + f" MB, {threads} threads"


def census() -> Counter[str]:
    """Live objects the collector tracks, by type: how many, and (as `<type> bytes`) their shallow size,
    so one container that keeps growing shows as well as many new objects."""
    gc.collect()
    counts: Counter[str] = Counter()
    for o in gc.get_objects():
        name = type(o).__qualname__
        counts[name] += 1
        counts[f"{name} bytes"] += sys.getsizeof(o)
    return counts


def trace_growth(base, blocks: int):
    """--traces: from the end of the 1st block Python's allocations are traced; after the 2nd the
    snapshot is the baseline, after each later one the source lines whose live memory grew most."""
    import tracemalloc

    if blocks == 1:
        tracemalloc.start(1)
        return None
    gc.collect()
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    if base is None:
        return snap
    grown = snap.compare_to(base, "lineno")
    total = sum(d.size_diff for d in grown)
    print(f"  traced Python memory since block 2: {total / 1e6:+.2f} MB; lines that grew most:", flush=True)
    for d in grown[:8]:
        print(f"    {d.size_diff / 1e3:+9.1f} kB {d.count_diff:+7d} blocks  {d.traceback}", flush=True)
    return base


def top_growth(base: Counter[str], now: Counter[str], n: int = 12) -> list[str]:
    grown = sorted(((now[k] - base.get(k, 0), k) for k in now), reverse=True)[:n]
    return [f"{d:+d} {k}" for d, k in grown if d > 0]


async def feed(observer: Observer, rate: float, n: int) -> float:
    """Publish `n` triggers paced at `rate`/s; returns the achieved rate."""
    began = time.monotonic()
    for i in range(n):
        due = began + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await observer.fire(observer.next_trigger())
    return n / max(time.monotonic() - began, 1e-9)


async def run(args: argparse.Namespace) -> list[Row]:

    tmp = Path(tempfile.mkdtemp(prefix="long-run-"))
    env = await file_backed_server(tmp)
    if args.census:
        peer = InProcessPeer(tmp, env.client)
    else:
        peer = PeerProcess(tmp, env.client.service_client.config.target_host)
    rows: list[Row] = []
    observer = None
    try:
        await peer.up()
        observer = Observer(tmp, group(), peer.port)
        observer.waiting = _Replies()
        await observer.node.start()
        if not await observer.node.wait_for_peers(1, 15.0):
            raise RuntimeError("the feeder could not reach the peer")
        print(
            f"{'wakes':>7}  {'RSS MB':>7}  {'median':>7}  {'peak':>7}  {'CPU/wake':>9}  {'replies':>7}  {'rate':>6}",
            flush=True,
        )
        rss: list[float] = []
        levels: list[float] = []
        base: Counter[str] | None = None
        traces = None
        sent = 0
        while sent < args.wakes:
            n = min(args.block, args.wakes - sent)
            cpu0 = cpu_seconds(peer.pid)
            async with RssSampler(peer.pid) as sampler:
                rate = await feed(observer, args.rate, n)
                sent += n
                await observer.waiting.settle(sent, timeout=60.0)
            cpu = (cpu_seconds(peer.pid) - cpu0) / n
            rss.append(rss_mb(peer.pid))
            levels.append(sampler.median)
            print(
                f"{sent:>7}  {rss[-1]:>7.1f}  {sampler.median:>7.1f}  {sampler.peak:>7.1f}  {cpu * 1000:>6.1f} ms"
                f"  {observer.waiting.count:>7}  {rate:>5.1f}/s  ({rss_parts(peer.pid)})",
                flush=True,
            )
            rows.append(
                Row(
                    "long_run",
                    f"after {sent} wakes",
                    f"RSS {rss[-1]:.1f} MB",
                    note=f"block median {sampler.median:.1f}, peak {sampler.peak:.1f}; CPU {cpu * 1000:.1f} ms/wake",
                )
            )
            if args.traces:
                traces = trace_growth(traces, len(rss))
            if args.census:
                counts = census()
                if len(rss) == 2:
                    base = counts
                elif base is not None:
                    print(
                        "  object types grown since block 2:", ", ".join(top_growth(base, counts)), flush=True
                    )
                print(f"  Python memory blocks in use: {sys.getallocatedblocks():,}", flush=True)
        if len(rss) >= 3:
            growth = (max(levels[1:]) - levels[1]) / levels[1]
            rows.append(
                Row(
                    "long_run",
                    f"RSS growth, {args.block * 2}th to {sent}th wake (block medians)",
                    f"{growth:+.1%}",
                    f"within {FLAT_WITHIN:.0%}",
                    abs(growth) <= FLAT_WITHIN,
                    f"{levels[1]:.1f} -> {levels[-1]:.1f} MB (highest block {max(levels[1:]):.1f})",
                )
            )
            rows.append(
                Row(
                    "long_run",
                    "  the same, by the reading at each block's end",
                    f"{(max(rss[1:]) - rss[1]) / rss[1]:+.1%}",
                    note=f"{rss[1]:.1f} -> {rss[-1]:.1f} MB (highest {max(rss[1:]):.1f})",
                )
            )
        rows.append(Row("long_run", "replies", f"{observer.waiting.count} of {sent}"))
    finally:
        if observer is not None:
            await observer.node.stop()
        if isinstance(peer, PeerProcess):
            peer.stop()
        else:
            await peer.peer.stop()
        await env.shutdown()
    return rows


class _Replies(dict):
    """Stands in for the observer's waiting map: counts replies, keeps nothing per wake."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self._changed = asyncio.Event()

    def __setitem__(self, key, fut) -> None:  # fire() registers a future per trigger: drop it
        pass

    def pop(self, key, default=None):
        self.count += 1
        self._changed.set()
        return default

    async def settle(self, expected: int, timeout: float) -> None:
        """Wait until every trigger so far has its reply, or `timeout` seconds without a new one."""
        while self.count < expected:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except TimeoutError:
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wakes", type=int, default=10_000, help="how many wakes (default 10,000)")
    parser.add_argument("--rate", type=float, default=15.0, help="triggers per second (default 15)")
    parser.add_argument("--block", type=int, default=1_000, help="wakes per measured block (default 1,000)")
    parser.add_argument("--census", action="store_true", help="peer in this process; object types that grow")
    parser.add_argument(
        "--traces", action="store_true", help="with --census: source lines whose memory grows (slower)"
    )
    parser.add_argument("--quick", action="store_true", help="2,000 wakes in blocks of 500 (run_all)")
    parser.add_argument("--json", help="also write the rows here (run_all uses it)")
    args = parser.parse_args()
    if args.quick:
        args.wakes, args.block = 2_000, 500
    isolated_home("long-home-")
    rows = asyncio.run(run(args))
    finish(rows, args.json, f"long_run: {args.wakes} wakes at {args.rate:g}/s, one `xmesh-agent run` peer")


if __name__ == "__main__":
    main()
