"""What a rejected wake costs: one real peer (node + worker + listener, offline model) on a dev server
persisting to a SQLite file, fed CMBs that SVAF rejects (most wakes of a busy mesh are rejected).

Measured in the same run:
- one at a time: inbound frame -> the wake's WorkflowExecutionCompleted event (p50 / p95);
- a burst of N at once: rejected wakes/s, CPU per rejected wake of the peer process and the server;
- one rejected wake's history (events, bytes, kinds) and what the Web UI gets (search attributes,
  summary, memo);
- the floor in the same run: a workflow with no step at all, eager start (what any wake shown in the
  Web UI costs at least).

usage: python benchmarks/rejected.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from pathlib import Path

from temporalio import workflow

from xmesh_agent.clock import now_ms

with workflow.unsafe.imports_passed_through():
    from _common import (
        Row,
        child_pids,
        cpu_seconds,
        file_backed_server,
        finish,
        fmt_ms,
        isolated_home,
        pct,
        sequential_then_burst,
    )
    from _wake_kit import Observer, bench_config
    from temporalio.client import Client
    from temporalio.service import RPCError
    from temporalio.worker import Worker

    from xmesh_agent.mmp.cmb import CMB, mint
    from xmesh_agent.workers.client import wake_id
    from xmesh_agent.workers.peer import Peer

FLOOR_QUEUE = "bench-empty"
LETTERS = "bcdfghjklmnpqrstvwxz"


@workflow.defn(name="BenchEmpty")
class Empty:
    """No step at all: one workflow task that returns."""

    @workflow.run
    async def run(self, x: str) -> str:
        return x


def nonsense(rng: random.Random, words: int) -> str:
    return " ".join("".join(rng.choice(LETTERS) for _ in range(rng.randint(5, 9))) for _ in range(words))


def off_topic(observer: Observer, rng: random.Random) -> CMB:
    """Words nothing in the store shares: SVAF rejects it."""
    fields = {"focus": nonsense(rng, 4), "intent": nonsense(rng, 5)}
    return mint(fields, identity=observer.identity, group=observer.group, created_at=now_ms())


async def completed_at(client: Client, workflow_id: str, timeout: float = 60.0) -> tuple[float, list]:
    """Wait for the wake to exist and finish; its completion event time (wall clock) and history."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            handle = client.get_workflow_handle(workflow_id)
            await handle.result()
            events = list((await handle.fetch_history()).events)
            return events[-1].event_time.ToNanoseconds() / 1e9, events
        except RPCError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.005)


async def floor_rows(client: Client, n_seq: int, n_burst: int) -> list[Row]:
    async with Worker(client, task_queue=FLOOR_QUEUE, workflows=[Empty]):

        async def once() -> None:
            await client.execute_workflow(
                Empty.run, "x", id=f"empty-{uuid.uuid4()}", task_queue=FLOOR_QUEUE, request_eager_start=True
            )

        t = await sequential_then_burst(once, n_seq, n_burst)
    return [
        Row(
            "rejected",
            "floor: empty workflow, eager start p50 / p95",
            f"{fmt_ms(pct(t.latencies, 50))} / {fmt_ms(pct(t.latencies, 95))}",
        ),
        Row(
            "rejected",
            "floor: burst",
            f"{t.rate:.1f} wf/s",
            note=f"CPU per wf: starter+worker {fmt_ms(t.cpu_here)}, server {fmt_ms(t.cpu_server)}",
        ),
    ]


async def peer_rows(client: Client, peer: Peer, observer: Observer, n_seq: int, n_burst: int) -> list[Row]:
    rng = random.Random(7)
    name = peer.config.name
    for _ in range(3):  # on-topic seeds: the store is not empty, so off-topic blocks are rejected
        await observer.wave(1)
    for _ in range(3):  # warm-up of the rejected path
        cmb = off_topic(observer, rng)
        await observer.node.publish(cmb)
        await completed_at(client, wake_id(name, cmb.key))
    lat, events = [], []
    for _ in range(n_seq):
        cmb = off_topic(observer, rng)
        t0 = time.time()
        await observer.node.publish(cmb)
        done, events = await completed_at(client, wake_id(name, cmb.key))
        lat.append(done - t0)
    outcome = [e for e in events if e.HasField("workflow_execution_completed_event_attributes")]
    assert outcome, "the wake did not complete"
    query = f'XmPeer="{name}" AND ExecutionStatus="Completed"'
    base = (await client.count_workflows(query)).count
    server = child_pids()
    cpu0 = cpu_seconds(), sum(cpu_seconds(p) for p in server)
    cmbs = [off_topic(observer, rng) for _ in range(n_burst)]
    t0 = time.perf_counter()
    for cmb in cmbs:
        await observer.node.publish(cmb)
    deadline = time.monotonic() + 180
    while (await client.count_workflows(query)).count < base + n_burst and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # one cheap visibility count, not a poll per wake
    wall = time.perf_counter() - t0
    cpu1 = cpu_seconds(), sum(cpu_seconds(p) for p in server)
    await asyncio.gather(*[completed_at(client, wake_id(name, c.key), 60.0) for c in cmbs])
    kinds: dict[str, int] = {}
    for e in events:
        kind = (e.WhichOneof("attributes") or "?").removesuffix("_event_attributes")
        kinds[kind] = kinds.get(kind, 0) + 1
    desc = await client.get_workflow_handle(wake_id(name, cmbs[-1].key)).describe()
    attrs = {k.name: v for k, v in desc.typed_search_attributes}
    memo = await desc.memo()
    return [
        Row(
            "rejected",
            "rejected wake, frame -> completed p50 / p95",
            f"{fmt_ms(pct(lat, 50))} / {fmt_ms(pct(lat, 95))}",
            note=f"one at a time, n={len(lat)}",
        ),
        Row("rejected", "rejected wakes/s (burst)", f"{n_burst / wall:.1f}/s", note=f"{n_burst} at once"),
        Row(
            "rejected",
            "  CPU per rejected wake: peer / server",
            f"{fmt_ms((cpu1[0] - cpu0[0]) / n_burst)} / {fmt_ms((cpu1[1] - cpu0[1]) / n_burst)}",
            note="peer = node + listener + worker (+ the observer node) in one process",
        ),
        Row(
            "rejected",
            "one rejected wake's history",
            f"{len(events)} events, {sum(e.ByteSize() for e in events) / 1024:.1f} KiB",
            note=", ".join(f"{k} {v}" for k, v in kinds.items()),
        ),
        Row(
            "rejected",
            "  what the Web UI shows",
            f"{attrs.get('XmOutcome')} / {attrs.get('XmStage')}",
            note=f"status {desc.status.name if desc.status else '?'}; memo result: "
            f"{(memo.get('result') or {}).get('reason', '-')}",
        ),
    ]


async def run(quick: bool) -> list[Row]:
    n_seq, n_burst = (15, 30) if quick else (40, 100)
    tmp = Path(tempfile.mkdtemp(prefix="rejected-bench-"))
    env = await file_backed_server(tmp)
    rows: list[Row] = []
    try:
        client = env.client
        rows += await floor_rows(client, n_seq, n_burst)
        group = f"bench-{uuid.uuid4().hex[:8]}"
        peer = Peer(bench_config(group), client)
        await peer.start()
        observer = Observer(tmp, group, peer.node.port)
        await observer.node.start()
        try:
            if not await observer.node.wait_for_peers(1, 15.0):
                raise RuntimeError("observer could not reach the peer")
            rows += await peer_rows(client, peer, observer, n_seq, n_burst)
        finally:
            await observer.node.stop()
            await peer.stop()
    finally:
        await env.shutdown()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer wakes")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    isolated_home("rejected-home-")
    rows = asyncio.run(run(args.quick))
    finish(rows, args.json, "rejected wakes: one peer, offline model, dev server on a SQLite file")


if __name__ == "__main__":
    main()
