"""What the wake benchmarks share (wake.py, wake_floor.py, rejected.py): the do-nothing workflows
shaped like a wake (Temporal's floor), the observer node that seeds triggers and times the peer's
replies, and the bench peer's config (budgets out of the way).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow

from xmesh_agent.clock import now_ms

# The sandbox re-imports this module to run the floor workflows: everything else passes through.
with workflow.unsafe.imports_passed_through():
    from _common import Row, fmt_ms, pct, sequential_then_burst
    from temporalio.api.enums.v1 import EventType
    from temporalio.client import Client
    from temporalio.worker import Worker

    from xmesh_agent.config import parse_config
    from xmesh_agent.identity import NodeIdentity
    from xmesh_agent.mmp.cmb import CMB, mint
    from xmesh_agent.mmp.connection import PeerInfo
    from xmesh_agent.mmp.node import MeshNode
    from xmesh_agent.mmp.store import CMBStore

STEP = {"start_to_close_timeout": timedelta(seconds=30)}
FLOOR_QUEUE = "bench-floor"
WFT_EVENTS = (EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED, EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
SVC = ["login", "billing", "search", "upload", "export", "profile", "admin", "webhook", "report", "invoice"]
ALG = ["token bucket", "sliding window", "fixed window", "leaky bucket"]
W1 = ["north", "south", "east", "west", "blue", "green", "red"]
W2 = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "lambda", "zeta", "theta", "iota"]


# -- the floor: do-nothing workflows shaped like a wake ------------------------------------------


@activity.defn(name="bench_step")
async def bench_step(x: str) -> str:
    return x


@workflow.defn(name="BenchWakeShape")
class WakeShape:
    """Our wake's shape with empty steps: 3 local, 1 regular (the model call), 2 local."""

    @workflow.run
    async def run(self, x: str) -> str:
        for _ in range(3):
            x = await workflow.execute_local_activity(bench_step, x, **STEP)
        x = await workflow.execute_activity(bench_step, x, **STEP)
        for _ in range(2):
            x = await workflow.execute_local_activity(bench_step, x, **STEP)
        return x


@workflow.defn(name="BenchAllLocal")
class AllLocal:
    """Six local activities: what the wake would cost with the model call local too."""

    @workflow.run
    async def run(self, x: str) -> str:
        for _ in range(6):
            x = await workflow.execute_local_activity(bench_step, x, **STEP)
        return x


async def floor_rows(client: Client, n_seq: int, n_burst: int) -> list[Row]:
    rows = []
    async with Worker(
        client, task_queue=FLOOR_QUEUE, workflows=[WakeShape, AllLocal], activities=[bench_step]
    ):
        for wf in (WakeShape, AllLocal):

            async def once(wf=wf) -> None:
                await client.execute_workflow(
                    wf.run, "x", id=f"floor-{uuid.uuid4()}", task_queue=FLOOR_QUEUE, request_eager_start=True
                )

            t = await sequential_then_burst(once, n_seq, n_burst)
            name = f"floor {wf.__name__}"
            rows.append(
                Row(
                    "wake",
                    f"{name} p50 / p95",
                    f"{fmt_ms(pct(t.latencies, 50))} / {fmt_ms(pct(t.latencies, 95))}",
                )
            )
            handle = await client.start_workflow(
                wf.run, "x", id=f"floor-{uuid.uuid4()}", task_queue=FLOOR_QUEUE, request_eager_start=True
            )
            await handle.result()
            events = list((await handle.fetch_history()).events)
            rows.append(Row("wake", f"  {name} history timeline", timeline(events)))
            rows.append(
                Row(
                    "wake",
                    f"{name} burst",
                    f"{t.rate:.1f} wf/s",
                    note=f"{n_burst} at once; CPU per wf: this process "
                    f"{fmt_ms(t.cpu_here)}, server {fmt_ms(t.cpu_server)}",
                )
            )
    return rows


def timeline(events: list) -> str:
    """First to last event, and every gap of 5 ms or more with the event that ended it."""
    stamps = [(e.event_time.ToNanoseconds() / 1e9, e.WhichOneof("attributes") or "?") for e in events]
    gaps = [
        f"{kind.removesuffix('_event_attributes')} +{(t1 - t0) * 1000:.0f}"
        for (t0, _), (t1, kind) in zip(stamps, stamps[1:], strict=False)
        if t1 - t0 >= 0.005
    ]
    return f"{(stamps[-1][0] - stamps[0][0]) * 1000:.0f} ms: " + ", ".join(gaps)


# -- the observer and the bench peer ------------------------------------------------------------


def trigger_texts(i: int) -> dict[str, str]:
    """Distinct, on-topic triggers: SVAF admits them as aligned (an exact repeat would be redundant)."""
    return {
        "focus": f"rate limiter for the {SVC[i % 10]} endpoint, {W1[i % 7]} {W2[i % 11]} case {i}",
        "intent": f"implement a {ALG[i % 4]} limit of {10 + i} requests per key",
    }


class Observer:
    """A plain MeshNode that seeds triggers and times the peer's replies by their parent key."""

    def __init__(self, tmp: Path, group: str, peer_port: int) -> None:
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self.identity = NodeIdentity.generate("bench-seed")
        self.node = MeshNode(
            self.identity,
            group,
            CMBStore(tmp / "observer.db"),
            discovery=[],
            static_peers=[f"127.0.0.1:{peer_port}"],
            on_cmb=self._on_cmb,
        )
        self.group = group
        self.seq = 0

    async def _on_cmb(self, cmb: CMB, peer: PeerInfo) -> None:
        for parent in cmb.parents:
            fut = self.waiting.pop(parent, None)
            if fut is not None and not fut.done():
                fut.set_result(time.perf_counter())

    def next_trigger(self) -> CMB:
        self.seq += 1
        now = now_ms()
        return mint(trigger_texts(self.seq), identity=self.identity, group=self.group, created_at=now)

    async def fire(self, cmb: CMB) -> tuple[float, asyncio.Future[float]]:
        fut = asyncio.get_running_loop().create_future()
        self.waiting[cmb.key] = fut
        start = time.perf_counter()
        await self.node.publish(cmb)
        return start, fut

    async def wave(self, n: int, timeout: float = 60.0) -> tuple[list[float], float, int]:
        """n triggers back to back; per-wake latencies, wall time, and how many got no reply."""
        cmbs = [self.next_trigger() for _ in range(n)]
        began = time.perf_counter()
        fired = [await self.fire(c) for c in cmbs]
        done, _ = await asyncio.wait([f for _, f in fired], timeout=timeout)
        lat = [f.result() - s for s, f in fired if f in done]
        return lat, time.perf_counter() - began, n - len(done)


def bench_config(group: str):
    big = 10**9
    return parse_config(
        {
            "identity": {"name": "bench-reviewer", "role": "reviewer"},
            "mesh": {"group": group, "discovery": []},
            "model": {"adapter": "offline"},
            "budget": {
                "max_wakes_per_minute": big,
                "max_wakes_per_hour": big,
                "max_wakes_per_day": big,
                "max_cost_usd_per_hour": big,
                "max_cost_usd_per_day": big,
                "max_cost_usd_per_run": big,
            },
        }
    )
