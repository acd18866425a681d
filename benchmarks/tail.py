"""`xmesh-agent tail` under load: does it keep up with a group saying 1,000 CMBs/s?

A publisher node (in this process) emits signed CMBs at a paced 1,000/s for a few seconds to its
group; a real `xmesh-agent tail --json` process prints them, and this script reads its stdout. Two
runs: tail as an observer node (the CMBs reach it over TCP, are verified and stored), and tail
attached to the publisher's store on disk (`--peer`). Figures: CMBs printed per second over the
run, output lag (sent -> line read here) p50/p95/p99, the lag in the first and the last second
(a tail that falls behind shows it growing), CMBs missing, and tail's CPU per CMB.
Target: every CMB printed, at the publishing rate, lag p99 <= 1 s and not growing.

usage: python benchmarks/tail.py [--quick] [--rate 1000] [--seconds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time

from _common import ROOT, Row, cpu_seconds, finish, fmt_ms, isolated_home, pct

from xmesh_agent import paths
from xmesh_agent.identity import NodeIdentity, save_identity
from xmesh_agent.mmp.cmb import CMB, mint
from xmesh_agent.mmp.node import MeshNode
from xmesh_agent.mmp.store import CMBStore

GROUP = "bench-tail"
PUBLISHER = "bench-writer"
TICK_S = 0.01
LAG_TARGET_S = 1.0


def corpus(identity: NodeIdentity, n: int) -> list[CMB]:
    """Minted before the clock starts: signing is the publisher's cost, not tail's."""
    topics = ("rate limiter", "retry budget", "cache eviction", "schema migration", "auth tokens")
    return [
        mint(
            {
                "focus": f"{topics[i % len(topics)]} #{i}",
                "issue": f"case {i}: what breaks when the load doubles",
                "intent": "review and answer with the risk you see",
            },
            identity=identity,
            group=GROUP,
            created_at=1_760_000_000_000 + i,
        )
        for i in range(n)
    ]


async def read_lines(proc: asyncio.subprocess.Process, seen: dict[str, float], want: int) -> None:
    assert proc.stdout is not None
    while len(seen) < want:
        line = await proc.stdout.readline()
        if not line:
            return
        item = json.loads(line)
        if item.get("kind") == "cmb":
            seen.setdefault(item["key"], time.perf_counter())


async def one_run(mode: str, rate: int, seconds: float) -> list[Row]:
    identity = NodeIdentity.generate(PUBLISHER)
    save_identity(identity, force=True)
    store_path = paths.ensure_dir(paths.peer_dir(PUBLISHER)) / "cmbs.db"
    store_path.unlink(missing_ok=True)
    node = MeshNode(identity, GROUP, CMBStore(store_path), registry_interval=0.2, reconnect_min=0.05)
    await node.start()
    args = ["--group", GROUP, "--name", "bench-observer"] if mode == "observer" else ["--peer", PUBLISHER]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "xmesh_agent.cli.app",
        "tail",
        *args,
        "--json",
        "-n",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        limit=1 << 20,
    )
    assert proc.stderr is not None
    await asyncio.wait_for(proc.stderr.readline(), 60)  # "tail: ... Ctrl-C stops": it is following
    if mode == "observer" and not await node.wait_for_peers(1, 30):
        raise SystemExit("the tail observer never connected")
    cmbs = corpus(identity, int(rate * seconds))
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    reader = asyncio.create_task(read_lines(proc, seen, len(cmbs)))
    cpu0 = cpu_seconds(proc.pid)
    per_tick = max(1, round(rate * TICK_S))
    start = time.perf_counter()
    for i in range(0, len(cmbs), per_tick):
        due = start + (i / rate)
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        for cmb in cmbs[i : i + per_tick]:
            sent[cmb.key] = time.perf_counter()
            await node.publish(cmb)
    sending = time.perf_counter() - start
    try:
        await asyncio.wait_for(reader, 30)
    except TimeoutError:
        reader.cancel()
    cpu = cpu_seconds(proc.pid) - cpu0
    proc.send_signal(signal.SIGINT)
    await asyncio.wait_for(proc.wait(), 30)
    await node.stop()
    node.store.close()

    printed = [k for k in sent if k in seen]
    lags = [seen[k] - sent[k] for k in printed]
    first = [seen[k] - sent[k] for k in printed if sent[k] - start < 1.0]
    last = [seen[k] - sent[k] for k in printed if sent[k] - start > sending - 1.0]
    span = (max(seen.values()) - start) if seen else float("nan")
    out_rate = len(printed) / span if seen else 0.0
    bench = f"tail --{mode}"
    p99 = pct(lags, 99)
    grows = pct(last, 50) > pct(first, 50) + 0.25
    return [
        Row(
            bench,
            "CMBs sent / printed",
            f"{len(cmbs):,} / {len(printed):,}",
            "all",
            len(printed) == len(cmbs),
        ),
        Row(bench, "publish rate (achieved)", f"{len(cmbs) / sending:,.0f}/s", f"{rate:,}/s"),
        Row(
            bench,
            "printed per second",
            f"{out_rate:,.0f}/s",
            f">= {rate * 0.95:,.0f}/s",
            out_rate >= rate * 0.95,
        ),
        Row(bench, "output lag p50 / p95", f"{fmt_ms(pct(lags, 50))} / {fmt_ms(pct(lags, 95))}"),
        Row(bench, "output lag p99", fmt_ms(p99), f"<= {LAG_TARGET_S:g} s", p99 <= LAG_TARGET_S),
        Row(
            bench,
            "lag p50, first s / last s",
            f"{fmt_ms(pct(first, 50))} / {fmt_ms(pct(last, 50))}",
            "not growing",
            not grows,
        ),
        Row(
            bench,
            "tail CPU per CMB",
            f"{cpu / max(1, len(printed)) * 1e6:,.0f} µs",
            note=f"{cpu / span:.0%} of a core",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per run instead of 5")
    parser.add_argument("--rate", type=int, default=1000, help="CMBs per second the publisher emits")
    parser.add_argument("--seconds", type=float, default=None, help="how long it emits, per run")
    parser.add_argument("--only", choices=("observer", "peer"), help="one of the two runs")
    parser.add_argument("--json", help="also write the rows here (run_all uses it)")
    args = parser.parse_args()
    isolated_home("bench-tail-")
    seconds = args.seconds or (3.0 if args.quick else 5.0)
    rows: list[Row] = []
    for mode in [args.only] if args.only else ["observer", "peer"]:
        rows += asyncio.run(one_run(mode, args.rate, seconds))
    title = f"tail: a publisher at {args.rate:,} CMBs/s for {seconds:g} s, `xmesh-agent tail --json` reading"
    finish(rows, args.json, title)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
