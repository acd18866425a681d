"""Wire speed: two MeshNodes on loopback, over TCP and over the relay, plus the per-frame CPU bill.

Measures one-way latency (publish() on A -> on_cmb on B, after B verified and stored it) and
signed CMBs/s (minting and signing included on the sender), then breaks the per-frame CPU cost
into its parts, each timed in-process with perf_counter over many iterations.

Both nodes (and the relay) share one process and one event loop, so sender and receiver work
are serialised on one core: the throughput figure is a floor for two separate processes.

usage: python benchmarks/wire.py [--quick] [--json out.json]
Targets: p50 <= 1 ms over TCP; >= 5,000 signed CMBs/s between two nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from pathlib import Path

from _common import Row, emit, fmt_ms, fmt_us, median, pct, time_per_call

from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp import framing
from xmesh_agent.mmp.cmb import (
    CMB,
    content_key,
    key_matches,
    mint,
    minted_texts,
    sign_cmb,
    verify_cmb_signature,
)
from xmesh_agent.mmp.connection import PeerInfo
from xmesh_agent.mmp.node import MeshNode
from xmesh_agent.mmp.relay_server import RelayServer
from xmesh_agent.mmp.store import CMBStore
from xmesh_agent.mmp.verify import KnownKey, Verifier

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
    """B's on_cmb: timestamps each arrival and wakes whoever waits for a count."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.count = 0
        self.want = 0
        self.reached = asyncio.Event()

    async def on_cmb(self, cmb: CMB, peer: PeerInfo) -> None:
        self.arrived[cmb.key] = time.perf_counter()
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
    now = int(time.time() * 1000)
    cmbs = [mint(texts(offset + i), identity=a.identity, group=GROUP, created_at=now) for i in range(n)]
    out = []
    for cmb in cmbs:
        recv.expect(recv.count + 1)
        start = time.perf_counter()
        await a.publish(cmb)
        await asyncio.wait_for(recv.reached.wait(), 10.0)
        out.append(recv.arrived[cmb.key] - start)
    return out


async def throughput(a: MeshNode, recv: Receiver, n: int, offset: int, window: int) -> tuple[float, int]:
    """Mint, sign and publish n CMBs with at most `window` not yet surfaced by B (0: no limit).

    Returns CMBs/s until B surfaced the last one it got, and how many never arrived.
    """
    base = recv.count
    start = time.perf_counter()
    now = int(time.time() * 1000)
    for i in range(n):
        if window and i - (recv.count - base) >= window:
            recv.expect(base + i - window // 2)
            await asyncio.wait_for(recv.reached.wait(), 30.0)
        await a.publish(mint(texts(offset + i), identity=a.identity, group=GROUP, created_at=now))
    recv.expect(base + n)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(recv.reached.wait(), 10.0)
    got = recv.count - base
    last = max(recv.arrived.values()) if got else time.perf_counter()
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


def cpu_rows(iterations: int) -> list[Row]:
    """The per-frame CPU bill, part by part, in this process."""
    ident = NodeIdentity.generate("cpu")
    group = GROUP
    cmb = mint(texts(1), identity=ident, group=group, created_at=1_760_000_000_000)
    unsigned = cmb.model_copy(update={"sig": None, "sig_alg": None})
    full = minted_texts(texts(1))
    frame = {"type": "cmb", "timestamp": 1_760_000_000_000, "cmb": cmb.to_wire()}
    body = framing.encode_frame(frame)[4:]
    tmp = tempfile.mkdtemp(prefix="wire-cpu-")
    store = CMBStore(Path(tmp) / "s.db")
    verifier = Verifier(group, "receiver-id", "receiver", Path(tmp) / "v.db", admission="open")
    sender = KnownKey(ident.node_id, ident.name, ident.public_key, "handshake")
    counter = iter(range(10**9))

    def put() -> None:
        store.put(cmb.model_copy(update={"key": f"cmb1-{next(counter):064d}"}), source="x")

    parts = [
        ("cmb1- key (sha256 over CAT7)", lambda: content_key(full)),
        ("sign (mmp-sig-v1 ed25519)", lambda: sign_cmb(unsigned, ident)),
        ("verify signature", lambda: verify_cmb_signature(cmb, ident.public_key)),
        ("re-check cmb1- key on receipt", lambda: key_matches(cmb)),
        ("JSON encode frame (to_wire+dumps)", lambda: framing.encode_frame({**frame, "cmb": cmb.to_wire()})),
        ("JSON decode frame (loads+model)", lambda: CMB.from_wire(framing.decode_body(body)["cmb"])),
        ("verifier.check (whole inbound check)", lambda: verifier.check(cmb, sender)),
        ("store.put (SQLite WAL)", put),
        (
            "mint (key+model+sign), sender total",
            lambda: mint(full, identity=ident, group=group, created_at=1),
        ),
    ]
    rows = []
    for label, fn in parts:
        fn()
        per = time_per_call(fn, iterations)
        rows.append(Row("wire-cpu", label, fmt_us(per), note=f"{1 / per:,.0f}/s on one core"))
    store.close()
    verifier.close()
    rows.append(Row("wire-cpu", "frame size (spec CMB, 4 fields)", f"{len(body)} B"))
    return rows


async def run(quick: bool) -> list[Row]:
    n_lat, n_tp, iters = (100, 1000, 300) if quick else (500, 5000, 2000)
    rows = []
    for transport in ("tcp", "relay"):
        rows += await transport_rows(transport, n_lat, n_tp)
    rows += cpu_rows(iters)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages and iterations")
    parser.add_argument("--json", help="also write the rows here (run_all uses it)")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="wire-home-")
    os.environ["XMESH_HOME"] = home
    os.environ["XMESH_SYM_LOOPBACK_DIR"] = str(Path(home) / "loopback")
    rows = asyncio.run(run(args.quick))
    emit(rows, args.json, "wire: two MeshNodes on 127.0.0.1 (one process, one event loop)")


if __name__ == "__main__":
    main()
