"""Our wake against Temporal's floor of the same shape, interleaved, so both meet the same server state.

wake.py measures the floor first, on a fresh dev server, and our wake after it. But the dev server
(on a SQLite file) is not in one steady state: after a few dozen back-to-back workflows the
dispatch of a workflow's second task (WorkflowTaskScheduled -> WorkflowTaskStarted, after the
regular activity) grows from ~5 ms to ~40 ms, for any workflow of this shape, and it recovers after
some seconds idle. Measured one after the other, the first comer gets the fast state. Here each
round runs one do-nothing wake-shaped workflow (3 local, 1 regular, 2 local; eager start) and one
real wake (inbound frame -> reply frame), alternately, and splits both histories into phases:
first task, activity, second-task dispatch, second task.

usage: python benchmarks/wake_floor.py [--quick] [--json out.json]
Target: our wake p50 <= 1.2x the floor's p50 in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from _common import Row, file_backed_server, finish, fmt_ms, isolated_home, pct
    from _wake_kit import FLOOR_QUEUE, Observer, WakeShape, bench_config, bench_step
    from temporalio.worker import Worker

    from xmesh_agent.workers.client import wake_id
    from xmesh_agent.workers.peer import Peer

PHASES = ("first task", "activity", "second-task dispatch", "second task")


def phases(events: list) -> list[float]:
    """Seconds of: first workflow task, the regular activity, dispatch of the second task, second task."""
    at: dict[str, list[float]] = {}
    for e in events:
        kind = (e.WhichOneof("attributes") or "").removesuffix("_event_attributes")
        at.setdefault(kind, []).append(e.event_time.ToNanoseconds() / 1e9)
    sched, started, done = (
        at["workflow_task_scheduled"],
        at["workflow_task_started"],
        at["workflow_task_completed"],
    )
    act0, act1 = at["activity_task_scheduled"][0], at["activity_task_completed"][0]
    return [done[0] - started[0], act1 - act0, started[1] - sched[1], done[1] - started[1]]


async def run(quick: bool) -> list[Row]:
    rounds = 20 if quick else 50
    tmp = Path(tempfile.mkdtemp(prefix="wake-floor-"))
    env = await file_backed_server(tmp)
    floor_lat, ours_lat = [], []
    floor_ph: list[list[float]] = []
    ours_ph: list[list[float]] = []
    keys: list[str] = []
    try:
        client = env.client
        group = f"bench-{uuid.uuid4().hex[:8]}"
        peer = Peer(bench_config(group), client)
        await peer.start()
        observer = Observer(tmp, group, peer.node.port)
        await observer.node.start()
        try:
            if not await observer.node.wait_for_peers(1, 15.0):
                raise RuntimeError("observer could not reach the peer")
            async with Worker(client, task_queue=FLOOR_QUEUE, workflows=[WakeShape], activities=[bench_step]):
                for i in range(rounds + 3):  # the first three of each warm up
                    handle = await client.start_workflow(
                        WakeShape.run,
                        "x",
                        id=f"floor-{uuid.uuid4()}",
                        task_queue=FLOOR_QUEUE,
                        request_eager_start=True,
                    )
                    t0 = time.perf_counter()
                    await handle.result()
                    floor = time.perf_counter() - t0
                    cmb = observer.next_trigger()
                    sent, reply = await observer.fire(cmb)
                    ours = await asyncio.wait_for(reply, 30.0) - sent
                    if i < 3:
                        continue
                    floor_lat.append(floor)
                    ours_lat.append(ours)
                    floor_ph.append(phases(list((await handle.fetch_history()).events)))
                    keys.append(cmb.key)
            # the wakes' histories, fetched after the timed rounds
            for cmb_key in keys:
                h = client.get_workflow_handle(wake_id(peer.config.name, cmb_key))
                ours_ph.append(phases(list((await h.fetch_history()).events)))
        finally:
            await observer.node.stop()
            await peer.stop()
    finally:
        await env.shutdown()
    ratio = pct(ours_lat, 50) / pct(floor_lat, 50)
    rows = [
        Row(
            "wake-floor",
            "floor WakeShape (interleaved) p50 / p95",
            f"{fmt_ms(pct(floor_lat, 50))} / {fmt_ms(pct(floor_lat, 95))}",
            note=f"n={len(floor_lat)}, start -> result",
        ),
        Row(
            "wake-floor",
            "our wake (interleaved) p50 / p95",
            f"{fmt_ms(pct(ours_lat, 50))} / {fmt_ms(pct(ours_lat, 95))}",
            note="inbound frame -> reply frame",
        ),
        Row("wake-floor", "ours / floor (p50)", f"{ratio:.2f}x", "<= 1.2x", ratio <= 1.2),
    ]
    for i, name in enumerate(PHASES):
        f = [p[i] for p in floor_ph]
        o = [p[i] for p in ours_ph]
        rows.append(
            Row("wake-floor", f"  {name} p50: floor / ours", f"{fmt_ms(pct(f, 50))} / {fmt_ms(pct(o, 50))}")
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    isolated_home("wake-floor-home-")
    rows = asyncio.run(run(args.quick))
    finish(
        rows, args.json, "wake vs floor, interleaved: one peer, offline model, dev server on a SQLite file"
    )


if __name__ == "__main__":
    main()
