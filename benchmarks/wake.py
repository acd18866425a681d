"""Wake overhead: one real peer (node + Temporal worker + listener, offline model) on a dev server
that persists to a SQLite file, like the embedded one.

An observer MeshNode publishes triggers to the peer over loopback TCP and times each until the
peer's reply frame arrives back (inbound frame -> emitted frame). Measured in the same run:
- sequential latency p50/p95, then 1, 4 and 16 triggers in flight, then a sustained burst (wakes/s);
- the same wake as a plain in-process call of the WakeSteps methods (no Temporal): the ratio is
  the price of durability, with the per-step CPU cost of the steps themselves;
- the do-nothing Temporal floor: empty workflows shaped like the wake (eager start), so our wake
  is compared with what Temporal itself costs on this machine;
- whether eager start took effect, and the size of one wake's history.

usage: python benchmarks/wake.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

from _common import (
    Row,
    child_pids,
    cpu_seconds,
    file_backed_server,
    finish,
    fmt_ms,
    isolated_home,
    median,
    pct,
)
from _wake_kit import WFT_EVENTS, Observer, bench_config, floor_rows, timeline
from temporalio.client import Client

from xmesh_agent.mmp.cmb import CMB
from xmesh_agent.mmp.connection import PeerInfo
from xmesh_agent.workers.client import wake_id
from xmesh_agent.workers.peer import Peer

# -- one real peer, timed from an observer -------------------------------------------------------


class StartTimes:
    """Wraps the node's on_cmb and the listener's start_wake to time the path into Temporal.

    Measurement only: the wrappers call through unchanged. Per CMB key: when the node surfaced it,
    when the listener began its start call and when the call returned.
    """

    def __init__(self, peer: Peer) -> None:
        self.surfaced: dict[str, float] = {}
        self.calls: list[tuple[str, float, float]] = []
        on_cmb, start_wake = peer.node.on_cmb, peer.starter.start_wake
        assert on_cmb is not None

        async def surfaced(cmb: CMB, sender: PeerInfo) -> None:
            self.surfaced.setdefault(cmb.key, time.perf_counter())
            await on_cmb(cmb, sender)

        async def timed(cmb_key: str, **kw):
            began = time.perf_counter()
            handle = await start_wake(cmb_key, **kw)
            self.calls.append((cmb_key, began, time.perf_counter()))
            return handle

        peer.node.on_cmb = surfaced
        peer.starter.start_wake = timed  # type: ignore[method-assign]

    def rows(self, window: tuple[float, float]) -> list[Row]:
        """Start-path figures for the starts made within `window` (the sequential phase)."""
        inside = [(k, b, e) for k, b, e in self.calls if window[0] <= b <= window[1]]
        call = [e - b for _, b, e in inside]
        wait = [b - self.surfaced[k] for k, b, _ in inside if k in self.surfaced]
        return [
            Row(
                "wake",
                "  surfaced -> start call begins p50",
                fmt_ms(pct(wait, 50)),
                note="spool in the ledger, listener loop wakes, drain_once",
            ),
            Row(
                "wake",
                "  listener start_wake (eager) p50 / p95",
                f"{fmt_ms(pct(call, 50))} / {fmt_ms(pct(call, 95))}",
                note=f"sequential phase, n={len(call)}; drain_once runs up to 4 starts at once",
            ),
        ]


async def plain_rows(peer: Peer, observer: Observer, n: int) -> tuple[list[Row], float]:
    """The wake's steps called in sequence in-process: no Temporal, same store, node and model."""
    steps = peer.steps
    per_step: dict[str, list[float]] = {}
    totals = []
    for i in range(n + 3):
        cmb = observer.next_trigger()
        steps.store.put(cmb, source=observer.identity.name)
        wid = f"plain-{uuid.uuid4().hex}"
        marks = [("start", time.perf_counter())]
        admitted = await steps.admit(cmb.key)
        marks.append(("admit", time.perf_counter()))
        await steps.reserve(wid)
        marks.append(("reserve", time.perf_counter()))
        plan = await steps.assemble_context(cmb.key)
        marks.append(("assemble_context", time.perf_counter()))
        reply = await steps.call_model(wid, plan)
        marks.append(("call_model", time.perf_counter()))
        await steps.check_safety(wid, cmb.key, reply.fields or {})
        marks.append(("check_safety", time.perf_counter()))
        await steps.emit(wid, cmb.key, reply.fields or {})
        marks.append(("emit", time.perf_counter()))
        if i < 3 or not admitted.admitted:
            continue  # warm-up
        totals.append(marks[-1][1] - marks[0][1])
        for (_, t0), (name, t1) in zip(marks, marks[1:], strict=False):
            per_step.setdefault(name, []).append(t1 - t0)
    rows = [Row("wake", "plain in-process wake p50", fmt_ms(median(totals)), note=f"n={len(totals)}")]
    for name, values in per_step.items():
        rows.append(Row("wake", f"  step {name} p50", fmt_ms(median(values))))
    return rows, median(totals)


async def probe_rows(client: Client, peer: Peer, observer: Observer) -> list[Row]:
    """Did eager start take effect? How big is one wake's history?"""
    cmb = observer.next_trigger()
    peer.store.put(cmb, source=observer.identity.name)
    handle = await peer.starter.start_wake(cmb.key)
    eager = bool(getattr(handle, "__temporal_eagerly_started", False))
    await handle.result()
    history = await handle.fetch_history()
    events = list(history.events)
    size = sum(e.ByteSize() for e in events)
    kinds: dict[str, int] = {}
    by_kind_bytes: dict[str, int] = {}
    for e in events:
        kind = (e.WhichOneof("attributes") or "?").removesuffix("_event_attributes")
        kinds[kind] = kinds.get(kind, 0) + 1
        by_kind_bytes[kind] = by_kind_bytes.get(kind, 0) + e.ByteSize()
    markers = kinds.get("marker_recorded", 0)
    upserts = kinds.get("upsert_workflow_search_attributes", 0)
    tasks = kinds.get("workflow_task_completed", 0)
    heavy = sorted(by_kind_bytes.items(), key=lambda kv: -kv[1])[:3]
    heaviest = ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in heavy)
    return [
        Row("wake", "eager start took effect", str(eager), "True", eager, "listener start_wake"),
        Row(
            "wake",
            "one wake's history",
            f"{len(events)} events, {size / 1024:.1f} KiB",
            note=f"{tasks} workflow tasks, {markers} local-activity markers, {upserts} SA upserts",
        ),
        Row("wake", "  heaviest history events", heaviest),
        Row("wake", "  wake history timeline", timeline(events)),
        *await traced_rows(client, peer, observer),
    ]


async def traced_rows(client: Client, peer: Peer, observer: Observer, n: int = 5) -> list[Row]:
    """Frame -> frame wakes laid over their own histories (one wall clock: same machine).

    Splits each wake into: publish -> WorkflowExecutionStarted event, the history's span, and
    the last history event -> reply frame at the observer. Medians over n sequential wakes.
    """
    before, inside, after = [], [], []
    for _ in range(n):
        cmb = observer.next_trigger()
        t_pub = time.time()
        _, fut = await observer.fire(cmb)
        await asyncio.wait_for(fut, 30.0)
        t_reply = time.time()
        handle = client.get_workflow_handle(wake_id(peer.config.name, cmb.key))
        await handle.result()
        events = list((await handle.fetch_history()).events)
        times = [e.event_time.ToNanoseconds() / 1e9 for e in events]
        emitted = max(t for t, e in zip(times, events, strict=True) if e.event_type in WFT_EVENTS)
        before.append(times[0] - t_pub)
        inside.append(emitted - times[0])
        after.append(t_reply - emitted)
    return [
        Row(
            "wake",
            "  traced: publish->started / started->last task done / ->reply",
            f"{fmt_ms(median(before))} / {fmt_ms(median(inside))} / {fmt_ms(median(after))}",
            note=f"medians of {n}; the reply is sent inside the last workflow task",
        )
    ]


async def durable_rows(
    peer: Peer, observer: Observer, n_seq: int, n_burst: int
) -> tuple[list[Row], float, tuple[float, float]]:
    rows: list[Row] = []
    await observer.wave(3)  # warm-up: worker caches, first workflow tasks
    seq: list[float] = []
    missed = 0
    began = time.perf_counter()
    for _ in range(n_seq):
        lat, _, miss = await observer.wave(1, timeout=30.0)
        seq += lat
        missed += miss
    window = (began, time.perf_counter())
    rows.append(
        Row(
            "wake",
            "frame->frame wake p50 / p95",
            f"{fmt_ms(pct(seq, 50))} / {fmt_ms(pct(seq, 95))}",
            note=f"sequential, n={len(seq)}, no reply: {missed}",
        )
    )
    for conc in (1, 4, 16):
        lat, wall = [], 0.0
        missed = 0
        rounds = max(2, 48 // conc) if n_seq >= 30 else max(1, 16 // conc)
        for _ in range(rounds):
            got, took, miss = await observer.wave(conc)
            lat += got
            wall += took
            missed += miss
        rows.append(
            Row(
                "wake",
                f"{conc:>2} in flight: p50 / p95, rate",
                f"{fmt_ms(pct(lat, 50))} / {fmt_ms(pct(lat, 95))}, {len(lat) / wall:.1f} wakes/s",
                note=f"{rounds} rounds, no reply: {missed}",
            )
        )
    server = child_pids()
    cpu0 = cpu_seconds(), sum(cpu_seconds(pid) for pid in server)
    lat, wall, missed = await observer.wave(n_burst, timeout=180.0)
    cpu1 = cpu_seconds(), sum(cpu_seconds(pid) for pid in server)
    done = max(1, len(lat))
    rows.append(
        Row(
            "wake",
            "sustained wakes/s per peer",
            f"{len(lat) / wall:.1f} wakes/s",
            note=f"{n_burst} triggers at once, p50 {fmt_ms(pct(lat, 50))}, no reply: {missed}",
        )
    )
    rows.append(
        Row(
            "wake",
            "  CPU per wake: peer process / server",
            f"{fmt_ms((cpu1[0] - cpu0[0]) / done)} / {fmt_ms((cpu1[1] - cpu0[1]) / done)}",
            note=f"peer process at {(cpu1[0] - cpu0[0]) / wall:.0%} of one core during the burst",
        )
    )
    return rows, pct(seq, 50), window


async def run(quick: bool, server_args: list[str]) -> list[Row]:
    n_seq, n_burst, n_plain = (15, 30, 15) if quick else (40, 100, 40)
    tmp = Path(tempfile.mkdtemp(prefix="wake-bench-"))
    env = await file_backed_server(tmp, *server_args)
    rows: list[Row] = []
    try:
        client = env.client
        rows += await floor_rows(client, n_seq, n_burst)
        group = f"bench-{uuid.uuid4().hex[:8]}"
        peer = Peer(bench_config(group), client)
        await peer.start()
        starts = StartTimes(peer)
        observer = Observer(tmp, group, peer.node.port)
        await observer.node.start()
        try:
            if not await observer.node.wait_for_peers(1, 15.0):
                raise RuntimeError("observer could not reach the peer")
            durable, seq_p50, window = await durable_rows(peer, observer, n_seq, n_burst)
            plain, plain_p50 = await plain_rows(peer, observer, n_plain)
            rows += durable
            rows += starts.rows(window)
            rows += plain
            rows.append(
                Row(
                    "wake",
                    "price of durability (p50 ratio)",
                    f"{seq_p50 / plain_p50:.1f}x",
                    note=f"{fmt_ms(seq_p50)} durable vs {fmt_ms(plain_p50)} plain",
                )
            )
            rows += await probe_rows(client, peer, observer)
        finally:
            await observer.node.stop()
            await peer.stop()
    finally:
        await env.shutdown()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer wakes")
    parser.add_argument("--json", help="also write the rows here (run_all uses it)")
    parser.add_argument(
        "--eager-activities",
        action="store_true",
        help="let the dev server hand the model-call activity straight back to the worker",
    )
    args = parser.parse_args()
    isolated_home("wake-home-")
    server_args = ["--dynamic-config-value", "system.enableActivityEagerExecution=true"]
    rows = asyncio.run(run(args.quick, server_args if args.eager_activities else []))
    finish(rows, args.json, "wake: one peer, offline model, dev server on a SQLite file")


if __name__ == "__main__":
    main()
