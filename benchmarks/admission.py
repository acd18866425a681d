"""Admission side by side: our node pair against the stock `sym` pair, on the same texts, in one run.

A pair is a sender and a receiver on 127.0.0.1, the receiver in a process of its own. The receiver
decides every inbound CMB: decode, verify, store, then SVAF against the anchors a wake's admit step
uses (ours: `CMBStore.admission_view` + `admit_stored`, the 50 CMBs of the group stored before it;
the stock node: its own intake, counted by its `svaf-decision` events). Figures per pair:
- decisions/s: an unpaced burst of N CMBs, sender's first mint to the receiver's last decision;
- latency: one CMB at a time, the sender's mint to the receiver's decision (p50 / p95);
- receiver CPU per decision over both phases.
Then the ratios ours/stock, and in this process what one admission costs (50 anchors).

The stock pair runs only when SYM_NODE_DIR names a stock sym checkout with its npm dependencies
(and `node` is on PATH); benchmarks/stock_pair.js drives each of its two nodes.

usage: python benchmarks/admission.py [--quick] [--json out.json]
Targets: >= 2x the stock pair's decisions/s, p50 <= its p50; one admission (50 anchors) <= 0.3 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import Row, cpu_seconds, emit, fmt_ms, fmt_us, isolated_home, median, pct

from xmesh_agent.clock import now_ms
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.admission.encoder import admit_stored
from xmesh_agent.mmp.cmb import CMB, mint
from xmesh_agent.mmp.connection import PeerInfo
from xmesh_agent.mmp.node import MeshNode
from xmesh_agent.mmp.store import CMBStore
from xmesh_agent.wake.steps import ANCHOR_WINDOW

GROUP = "benchadmit"
DRIVER = Path(__file__).with_name("stock_pair.js")
TOPICS = [
    ("rate limiter login endpoint", "bursts from one api key starve others", "token bucket per key"),
    ("relay idle sockets", "connections without traffic stay open", "close after the login deadline"),
    ("billing export csv", "totals are off by one cent", "round once at the end"),
    ("search index rebuild", "queries time out during the nightly job", "rebuild into a shadow index"),
    ("upload resumable chunks", "large files fail on flaky networks", "resume from the last chunk"),
    ("docs review backlog", "pull requests wait a week for review", "rotate a reviewer every day"),
]
EXTRA = ["soon", "today", "again", "carefully", "quickly", "first", "next", "later", "maybe", "really"]


def texts(i: int) -> dict[str, str]:
    """The i-th CMB's fields: a topic, a few varied words, a number (no two alike). Same for both pairs."""
    rng = random.Random(i)
    focus, issue, intent = TOPICS[rng.randrange(len(TOPICS))]
    words = " ".join(rng.sample(EXTRA, 2))
    return {
        "focus": f"{focus} #{i}",
        "issue": f"{issue} {words}",
        "intent": intent,
        "motivation": f"ticket {i}",
    }


class Progress:
    """A receiving process's "got <count> <monotonic>" lines."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.stream, self.count, self.last = stream, 0, 0.0
        self.changed = asyncio.Event()
        self.events: list[dict] = []

    async def follow(self) -> None:
        while line := await self.stream.readline():
            parts = line.split()
            if len(parts) == 3 and parts[0] == b"got":
                self.count, self.last = int(parts[1]), float(parts[2])
                self.changed.set()
            elif line.startswith(b"{"):
                self.events.append(json.loads(line))
                self.changed.set()

    async def until(self, pred, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)
        return True

    async def settle(self, target: int, idle: float = 3.0) -> None:
        """Wait for `target` decisions, or until none came for `idle` seconds (some were lost)."""
        while self.count < target:
            before = self.count
            await self.until(lambda b=before: self.count >= target or self.count > b, idle)
            if self.count == before:
                return


class Pair:
    """One sender + one receiving process; `send(batch)` returns the monotonic time sending began."""

    name = ""
    receiver_pid = 0
    progress: Progress

    async def send(self, batch: list[dict[str, str]]) -> float:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


async def measure(pair: Pair, n_lat: int, n_burst: int, offset: int) -> dict:
    prog = pair.progress
    for i in range(20):  # warm-up: first contact, pins, pages, caches
        await pair.send([texts(offset + i)])
    await prog.settle(20)
    cpu0, seen0 = cpu_seconds(pair.receiver_pid), prog.count
    lat = []
    for i in range(n_lat):
        want = prog.count + 1
        t0 = await pair.send([texts(offset + 100 + i)])
        if await prog.until(lambda w=want: prog.count >= w, 10.0):
            lat.append(prog.last - t0)
    base = prog.count
    t0 = await pair.send([texts(offset + 10_000 + i) for i in range(n_burst)])
    await prog.settle(base + n_burst)
    got = prog.count - base
    cpu = (cpu_seconds(pair.receiver_pid) - cpu0) / max(1, prog.count - seen0)
    return {"rate": got / (prog.last - t0) if got else 0.0, "lost": n_burst - got, "lat": lat, "cpu": cpu}


# -- our pair --------------------------------------------------------------------------------------


class OurPair(Pair):
    name = "ours"

    async def start(self, tmp: Path) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--serve", stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.PIPE
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30.0)
        if not line.startswith(b"ready "):
            raise RuntimeError(f"our receiver did not start: {line!r}")
        self.receiver_pid = self.proc.pid
        self.progress = Progress(self.proc.stdout)
        self.follower = asyncio.ensure_future(self.progress.follow())
        port = int(line.split()[1])
        store = CMBStore(tmp / "sender.db")
        self.node = MeshNode(
            NodeIdentity.generate("ours-a"), GROUP, store, discovery=[], static_peers=[f"127.0.0.1:{port}"]
        )
        await self.node.start()
        if not await self.node.wait_for_peers(1, 15.0):
            raise RuntimeError("our two nodes did not meet")

    async def send(self, batch: list[dict[str, str]]) -> float:
        t0 = time.monotonic()
        now = now_ms()
        for fields in batch:
            await self.node.publish(mint(fields, identity=self.node.identity, group=GROUP, created_at=now))
        return t0

    async def close(self) -> None:
        await self.node.stop()
        self.follower.cancel()
        await _end(self.proc)


async def serve_receiver() -> None:
    """--serve: our receiving node; every surfaced CMB is admitted as a wake's admit step does."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(sys.stdin.fileno(), 1) else None)
    state = {"count": 0, "last": 0.0}
    with tempfile.TemporaryDirectory(prefix="admit-recv-") as tmp:
        store = CMBStore(Path(tmp) / "b.db")

        async def decide(cmb: CMB, peer: PeerInfo) -> None:
            view = store.admission_view(cmb.key, GROUP, ANCHOR_WINDOW)
            if view is not None:
                admit_stored(*view, None)
            state["count"] += 1
            state["last"] = time.monotonic()

        node = MeshNode(NodeIdentity.generate("ours-b"), GROUP, store, on_cmb=decide, discovery=[])
        await node.start()
        print(f"ready {node.port}", flush=True)
        reported = 0
        while not stop.is_set():  # report progress every 5 ms when there is some
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.005)
            if state["count"] != reported:
                reported = state["count"]
                sys.stdout.write(f"got {reported} {state['last']!r}\n")
                sys.stdout.flush()
        await node.stop()


# -- the stock pair --------------------------------------------------------------------------------


class StockPair(Pair):
    name = "stock"

    async def start(self, tmp: Path, sym_dir: str) -> None:
        env = {**os.environ, "HOME": str(tmp), "SYM_NODE_DIR": sym_dir}
        env.pop("SYM_STATE_DIR", None)
        room = f"benchadmit{os.getpid()}"

        async def spawn(name: str, role: str) -> asyncio.subprocess.Process:
            return await asyncio.create_subprocess_exec(
                shutil.which("node") or "node",
                str(DRIVER),
                json.dumps({"name": name, "room": room, "role": role}),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=env,
            )

        self.recv = await spawn("stock-b", "receiver")
        self.send_proc = await spawn("stock-a", "sender")
        assert self.recv.stdout is not None and self.send_proc.stdout is not None
        self.receiver_pid = self.recv.pid
        self.progress = Progress(self.recv.stdout)
        self.sender = Progress(self.send_proc.stdout)
        self.tasks = [asyncio.ensure_future(p.follow()) for p in (self.progress, self.sender)]
        met = await self.sender.until(
            lambda: any(e["event"] == "peer-joined" for e in self.sender.events), 30
        )
        if not met:
            raise RuntimeError(f"the stock nodes did not meet: {self.sender.events[-5:]}")

    async def send(self, batch: list[dict[str, str]]) -> float:
        assert self.send_proc.stdin is not None
        seen = len(self.sender.events)
        self.send_proc.stdin.write((json.dumps({"cmd": "send", "texts": batch}) + "\n").encode())
        await self.send_proc.stdin.drain()
        await self.sender.until(lambda: any(e["event"] == "sent" for e in self.sender.events[seen:]), 30)
        return next(e["t0"] for e in self.sender.events[seen:] if e["event"] == "sent")

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for proc in (self.send_proc, self.recv):
            await _end(proc)


async def _end(proc: asyncio.subprocess.Process) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), 10.0)
    except TimeoutError:
        proc.kill()
        await proc.wait()


# -- in this process: one admission ---------------------------------------------------------------


def inprocess_rows(n: int) -> list[Row]:
    """What one admission costs with 50 anchors: the window's view, then SVAF (warm and new block)."""
    who = NodeIdentity.generate("inproc")
    with tempfile.TemporaryDirectory(prefix="admit-inproc-") as tmp:
        store = CMBStore(Path(tmp) / "s.db", group_commit=False)
        now = now_ms()
        for i in range(300):
            store.put(
                mint(texts(i), identity=who, group=GROUP, created_at=now - 1000 * (300 - i)), source="x"
            )
        store.admission_view("", GROUP, 1)  # the window is loaded once, then kept by put
        fresh = [mint(texts(50_000 + i), identity=who, group=GROUP, created_at=now) for i in range(n + 1)]
        for cmb in fresh:
            store.put(cmb, source="x")
        view, warm, whole = [], [], []
        admit_stored(*store.admission_view(fresh[0].key, GROUP, ANCHOR_WINDOW), None)
        for cmb in fresh[1:]:
            t0 = time.perf_counter()
            got = store.admission_view(cmb.key, GROUP, ANCHOR_WINDOW)
            t1 = time.perf_counter()
            assert got is not None
            admit_stored(*got, None)  # a new block: its four texts are encoded here
            t2 = time.perf_counter()
            admit_stored(*got, None)  # the same again: every vector made
            warm.append(time.perf_counter() - t2)
            view.append(t1 - t0)
            whole.append(t2 - t0)
        store.close()
    return [
        Row(
            "admit",
            "one admission, 50 anchors: view + SVAF, new block p50",
            fmt_ms(pct(whole, 50)),
            "<= 0.3 ms",
            pct(whole, 50) <= 0.0003,
            f"n={n}; encodes the block's 4 new texts",
        ),
        Row(
            "admit",
            "  SVAF alone, vectors made (p50)",
            fmt_ms(pct(warm, 50)),
            "<= 0.3 ms",
            pct(warm, 50) <= 0.0003,
        ),
        Row(
            "admit",
            "  anchors from the in-memory window (p50)",
            fmt_us(pct(view, 50)),
            note="no SQL, no JSON",
        ),
    ]


async def run(quick: bool) -> list[Row]:
    n_lat, n_burst = (30, 300) if quick else (100, 1000)
    results: dict[str, dict] = {}
    sym_dir = os.environ.get("SYM_NODE_DIR", "")
    stock_ok = bool(sym_dir and Path(sym_dir, "lib", "node.js").exists() and shutil.which("node"))
    pairs: list[type[Pair]] = [OurPair, *([StockPair] if stock_ok else [])]
    for cls in pairs:  # back to back, same texts
        with tempfile.TemporaryDirectory(prefix=f"admit-{cls.name}-") as tmp:
            pair = cls()
            if isinstance(pair, StockPair):
                await pair.start(Path(tmp), sym_dir)
            else:
                await pair.start(Path(tmp))
            try:
                results[cls.name] = await measure(pair, n_lat, n_burst, 0)
            finally:
                await pair.close()
    rows = []
    for name, r in results.items():
        rows += [
            Row(
                "admit-pair",
                f"{name}: decisions/s (burst of {n_burst})",
                f"{r['rate']:,.0f}/s",
                note=f"lost {r['lost']}",
            ),
            Row(
                "admit-pair",
                f"{name}: latency p50 / p95",
                f"{fmt_ms(pct(r['lat'], 50))} / {fmt_ms(pct(r['lat'], 95))}",
                note=f"one at a time, n={len(r['lat'])}",
            ),
            Row("admit-pair", f"{name}: receiver CPU per decision", fmt_us(r["cpu"])),
        ]
    if "stock" in results:
        ours, stock = results["ours"], results["stock"]
        ratio = ours["rate"] / stock["rate"] if stock["rate"] else float("nan")
        p50 = median(ours["lat"]) / median(stock["lat"])
        rows += [
            Row("admit-pair", "ours / stock: decisions/s", f"{ratio:.2f}x", ">= 2x", ratio >= 2),
            Row("admit-pair", "ours / stock: latency p50", f"{p50:.2f}x", "<= 1x", p50 <= 1),
        ]
    else:
        rows.append(
            Row("admit-pair", "stock pair", "skipped", note="set SYM_NODE_DIR to a stock sym checkout")
        )
    rows += inprocess_rows(100 if quick else 400)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer CMBs")
    parser.add_argument("--json", help="also write the rows here (run_all uses it)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve_receiver())
        return
    isolated_home("admit-home-")
    rows = asyncio.run(run(args.quick))
    emit(rows, args.json, "admission: our pair and the stock pair, receiver in its own process")


if __name__ == "__main__":
    main()
