"""Wire speed: two MeshNodes on loopback, over TCP and over the relay, plus the per-frame CPU bill.

Measures one-way latency (publish() on A -> on_cmb on B, after B verified and stored it) and
signed CMBs/s (minting and signing included on the sender), then breaks the per-frame CPU cost
into its parts (wire_cpu.py), each timed in-process with perf_counter over many iterations.

Both nodes (and the relay) first share one process and one event loop, so sender and receiver
work are serialised on one core. Then the same throughput runs with the receiver (and the relay)
in processes of their own, as real peers are, reporting arrivals to the sender over a pipe.

usage: python benchmarks/wire.py [--quick] [--json out.json]
Targets: p50 <= 1 ms over TCP; >= 5,000 signed CMBs/s between two nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import Row, cpu_seconds, emit, fmt_ms, fmt_us, median, pct
from wire_cpu import cpu_rows

from xmesh_agent.clock import now_ms
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import CMB, mint
from xmesh_agent.mmp.connection import PeerInfo
from xmesh_agent.mmp.node import MeshNode
from xmesh_agent.mmp.relay.server import RelayServer
from xmesh_agent.mmp.store import CMBStore

GROUP = "bench-wire"
WINDOW = 256  # CMBs published but not yet surfaced by the receiver
TEXT = {
    "focus": "rate limiter for the login endpoint",
    "issue": "bursts from one API key starve the others",
    "intent": "implement a token bucket per API key",
    "motivation": "keep p99 latency flat under abuse",
}


def texts(i: int) -> dict[str, str]:
    return {**TEXT, "focus": f"{TEXT['focus']} #{i}"}


class Receiver:
    """B's on_cmb: timestamps each arrival and wakes whoever waits for a count.

    Times are time.monotonic(): CLOCK_MONOTONIC, the same clock in every process of the host.
    """

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.count = 0
        self.last = 0.0
        self.want = 0
        self.reached = asyncio.Event()

    async def on_cmb(self, cmb: CMB, peer: PeerInfo) -> None:
        self.arrived[cmb.key] = self.last = time.monotonic()
        self.count += 1
        if self.count >= self.want:
            self.reached.set()

    def expect(self, total: int) -> None:
        self.want = total
        self.reached.clear()
        if self.count >= total:
            self.reached.set()


async def pair(tmp: Path, transport: str, relay_url: str | None) -> tuple[MeshNode, MeshNode, Receiver]:
    """A and B connected over `transport` only (no discovery), B's arrivals recorded."""
    recv = Receiver()
    opts: dict = {"discovery": []}
    if transport == "relay":
        opts["relay_url"] = relay_url
    b = MeshNode(NodeIdentity.generate("wire-b"), GROUP, CMBStore(tmp / "b.db"), on_cmb=recv.on_cmb, **opts)
    await b.start()
    if transport == "tcp":
        opts["static_peers"] = [f"127.0.0.1:{b.port}"]
    a = MeshNode(NodeIdentity.generate("wire-a"), GROUP, CMBStore(tmp / "a.db"), **opts)
    await a.start()
    if not (await a.wait_for_peers(1, 15.0) and await b.wait_for_peers(1, 15.0)):
        raise RuntimeError(f"the two nodes did not meet over {transport}")
    return a, b, recv


async def latency(a: MeshNode, recv: Receiver, n: int, offset: int) -> list[float]:
    """One CMB at a time: seconds from publish() to B surfacing it."""
    now = now_ms()
    cmbs = [mint(texts(offset + i), identity=a.identity, group=GROUP, created_at=now) for i in range(n)]
    out = []
    for cmb in cmbs:
        recv.expect(recv.count + 1)
        start = time.monotonic()
        await a.publish(cmb)
        await asyncio.wait_for(recv.reached.wait(), 10.0)
        out.append(recv.arrived[cmb.key] - start)
    return out


async def throughput(a: MeshNode, recv: Receiver, n: int, offset: int, window: int) -> tuple[float, int]:
    """Mint, sign and publish n CMBs with at most `window` not yet surfaced by B (0: no limit).

    Returns CMBs/s until B surfaced the last one it got, and how many never arrived.
    """
    base = recv.count
    start = time.monotonic()
    now = now_ms()
    for i in range(n):
        if window and i - (recv.count - base) >= window:
            recv.expect(base + i - window // 2)
            await asyncio.wait_for(recv.reached.wait(), 30.0)
        await a.publish(mint(texts(offset + i), identity=a.identity, group=GROUP, created_at=now))
    recv.expect(base + n)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(recv.reached.wait(), 10.0)
    got = recv.count - base
    last = recv.last if got else time.monotonic()
    return got / (last - start), n - got


async def transport_rows(transport: str, n_lat: int, n_tp: int) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix=f"wire-{transport}-") as tmp:
        relay = RelayServer() if transport == "relay" else None
        if relay:
            await relay.start()
        a, b, recv = await pair(Path(tmp), transport, relay.url if relay else None)
        try:
            await latency(a, recv, 20, 0)  # warm-up: first-use paths, pins, sqlite pages
            lat = await latency(a, recv, n_lat, 1000)
            runs = [await throughput(a, recv, n_tp, 100_000 * (r + 1), WINDOW) for r in range(3)]
            burst_rate, burst_lost = await throughput(a, recv, n_tp, 900_000, 0)
        finally:
            await a.stop()
            await b.stop()
            if relay:
                await relay.stop()
    rates = [r for r, _ in runs]
    lost = sum(n for _, n in runs)
    name = f"one-way latency {transport}"
    target = "<= 1 ms" if transport == "tcp" else ""
    ok = pct(lat, 50) <= 0.001 if transport == "tcp" else None
    return [
        Row("wire", f"{name} p50", fmt_ms(pct(lat, 50)), target, ok, f"n={len(lat)}"),
        Row("wire", f"{name} p95", fmt_ms(pct(lat, 95))),
        Row("wire", f"{name} p99", fmt_ms(pct(lat, 99))),
        Row(
            "wire",
            f"signed CMBs/s {transport}",
            f"{median(rates):,.0f}/s",
            ">= 5,000/s",
            median(rates) >= 5000,
            f"median of 3 x {n_tp}, <= {WINDOW} in flight; runs "
            + ", ".join(f"{r:,.0f}" for r in rates)
            + f"; lost {lost}",
        ),
        Row(
            "wire",
            f"  unpaced burst {transport}",
            f"{burst_rate:,.0f}/s",
            note=f"{n_tp} back to back, no window: lost {burst_lost}",
        ),
    ]


# -- the receiver (and the relay) in processes of their own ------------------------------------


class RemoteReceiver(Receiver):
    """The receiving process's progress, read from its stdout ("got <count> <monotonic>")."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        super().__init__()
        self.proc = proc

    async def follow(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            parts = line.split()
            if len(parts) == 3 and parts[0] == b"got":
                self.count, self.last = int(parts[1]), float(parts[2])
                if self.count >= self.want:
                    self.reached.set()


async def spawn(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    """This script in another role; returns the process and what it printed after "ready"."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, *args, stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30.0)
    if not line.startswith(b"ready "):
        proc.kill()
        raise RuntimeError(f"{args[0]} did not start: {line!r}")
    return proc, line.split(b" ", 1)[1].decode().strip()


async def serve_role(role: str, transport: str, relay_url: str | None) -> None:
    """--serve-relay / --serve-receiver: run until stdin closes, reporting on stdout."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(sys.stdin.fileno(), 1) else None)
    if role == "relay":
        async with RelayServer() as relay:
            print(f"ready {relay.url}", flush=True)
            await stop.wait()
        return
    recv = Receiver()
    opts: dict = {"discovery": [], "relay_url": relay_url} if transport == "relay" else {"discovery": []}
    with tempfile.TemporaryDirectory(prefix="wire-recv-") as tmp:
        b = MeshNode(
            NodeIdentity.generate("wire-b"), GROUP, CMBStore(Path(tmp) / "b.db"), on_cmb=recv.on_cmb, **opts
        )
        await b.start()
        print(f"ready {b.port}", flush=True)
        reported = 0
        while not stop.is_set():  # report progress every 5 ms when there is some
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.005)
            if recv.count != reported:
                reported = recv.count
                sys.stdout.write(f"got {recv.count} {recv.last!r}\n")
                sys.stdout.flush()
        await b.stop()


async def two_process_rows(transport: str, n_tp: int) -> list[Row]:
    procs: list[asyncio.subprocess.Process] = []
    relay_url = None
    with tempfile.TemporaryDirectory(prefix=f"wire-2p-{transport}-") as tmp:
        try:
            if transport == "relay":
                relay_proc, relay_url = await spawn("--serve", "relay")
                procs.append(relay_proc)
            args = ["--serve", "receiver", "--transport", transport] + (
                ["--relay-url", relay_url] if relay_url else []
            )
            proc, port = await spawn(*args)
            procs.append(proc)
            recv = RemoteReceiver(proc)
            follower = asyncio.ensure_future(recv.follow())
            opts: dict = {"discovery": []}
            opts.update({"relay_url": relay_url} if relay_url else {"static_peers": [f"127.0.0.1:{port}"]})
            a = MeshNode(NodeIdentity.generate("wire-a"), GROUP, CMBStore(Path(tmp) / "a.db"), **opts)
            await a.start()
            try:
                if not await a.wait_for_peers(1, 15.0):
                    raise RuntimeError(f"no peer across processes over {transport}")
                await throughput(a, recv, 100, 0, WINDOW)  # warm-up
                pids = ["self", *(str(p.pid) for p in procs)]
                cpu0, sent0 = [cpu_seconds(pid) for pid in pids], recv.count
                runs = [await throughput(a, recv, n_tp, 100_000 * (r + 1), WINDOW) for r in range(3)]
                burst_rate, burst_lost = await throughput(a, recv, n_tp, 900_000, 0)
                moved = max(1, recv.count - sent0)
                cpu = [(cpu_seconds(pid) - c0) / moved for pid, c0 in zip(pids, cpu0, strict=True)]
            finally:
                await a.stop()
                follower.cancel()
        finally:
            for proc in procs[::-1]:
                if proc.stdin is not None:
                    proc.stdin.close()
                try:
                    await asyncio.wait_for(proc.wait(), 10.0)
                except TimeoutError:
                    proc.kill()
    rates = [r for r, _ in runs]
    where = "receiver process" + (" + relay process" if transport == "relay" else "")
    roles = ["sender", *(["relay"] if transport == "relay" else []), "receiver"]
    return [
        Row(
            "wire-2p",
            f"signed CMBs/s {transport}, 2 processes",
            f"{median(rates):,.0f}/s",
            ">= 5,000/s",
            median(rates) >= 5000,
            f"sender process -> {where}; median of 3 x {n_tp}, <= {WINDOW} in flight; runs "
            + ", ".join(f"{r:,.0f}" for r in rates)
            + f"; lost {sum(x for _, x in runs)}",
        ),
        Row(
            "wire-2p",
            f"  unpaced burst {transport}, 2 processes",
            f"{burst_rate:,.0f}/s",
            note=f"{n_tp} back to back, no window: lost {burst_lost}",
        ),
        Row(
            "wire-2p",
            f"  CPU per CMB {transport}, 2 processes",
            " / ".join(fmt_us(c) for c in cpu),
            note=" / ".join(roles) + " (user+sys over all four runs)",
        ),
    ]


async def run(quick: bool) -> list[Row]:
    n_lat, n_tp, iters = (100, 1000, 300) if quick else (500, 5000, 2000)
    rows = []
    for transport in ("tcp", "relay"):
        rows += await transport_rows(transport, n_lat, n_tp)
    for transport in ("tcp", "relay"):
        rows += await two_process_rows(transport, n_tp)
    rows += cpu_rows(iters, GROUP, texts)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages and iterations")
    parser.add_argument("--json", help="also write the rows here (run_all uses it)")
    parser.add_argument("--serve", choices=("receiver", "relay"), help=argparse.SUPPRESS)
    parser.add_argument("--transport", default="tcp", help=argparse.SUPPRESS)
    parser.add_argument("--relay-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:  # a helper process of the two-process run (its parent set XMESH_HOME)
        asyncio.run(serve_role(args.serve, args.transport, args.relay_url))
        return
    home = tempfile.mkdtemp(prefix="wire-home-")
    os.environ["XMESH_HOME"] = home
    os.environ["XMESH_SYM_LOOPBACK_DIR"] = str(Path(home) / "loopback")
    rows = asyncio.run(run(args.quick))
    emit(rows, args.json, "wire: two MeshNodes on 127.0.0.1 (one process, one event loop)")


if __name__ == "__main__":
    main()
