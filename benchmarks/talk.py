"""Talking to a running mesh as a person: `xmesh-agent publish` and `xmesh-agent recall`.

- publish: a real `xmesh-agent run` peer (offline model) on a dev server; the wall time of the
  `xmesh-agent publish ... --json` process from exec to exit, delivered to that peer (interpreter
  start included), beside `xmesh-agent --help` and a bare `python -c pass`, and where the publish
  process spends its imports (`-X importtime`, the largest).
- recall: a peer store of 100,000 CMBs built with the store API; the first recall (which builds
  the side index), then warm recalls over several queries (in-process: store open, FTS candidates,
  ranked by the lexical encoder), an empty query (the newest), and the same through the CLI.

usage: python benchmarks/talk.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, Row, file_backed_server, finish, fmt_ms, isolated_home, median, pct

PUBLISH_TARGET_S = 1.5
RECALL_TARGET_S = 0.200
WORDS = [
    "token",
    "bucket",
    "limiter",
    "login",
    "billing",
    "export",
    "parquet",
    "invoice",
    "search",
    "upload",
    "webhook",
    "report",
    "cache",
    "relay",
    "auth",
    "timeout",
    "retry",
    "queue",
    "backlog",
    "schema",
    "migration",
    "index",
    "shard",
    "replica",
    "deploy",
    "rollback",
    "canary",
    "metric",
    "alert",
    "dashboard",
    "latency",
    "budget",
    "quota",
    "tenant",
    "session",
    "cookie",
    "header",
    "payload",
    "encoder",
    "vector",
    "drift",
    "anchor",
    "lineage",
    "review",
    "test",
    "coverage",
    "flaky",
    "fixture",
    "benchmark",
    "profile",
]
QUERIES = ["rate limiter for login", "parquet billing export", "flaky test fixture", "deploy rollback canary"]


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "xmesh_agent.cli.app", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    return time.perf_counter() - start, done


def wall(cmd: list[str], n: int, env: dict[str, str] | None = None) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, timeout=60, env=env, cwd=ROOT)
        out.append(time.perf_counter() - start)
    return out


def top_imports(args: list[str], env: dict[str, str], k: int = 4) -> str:
    """The `k` largest cumulative import times of one CLI run (top-level packages only)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "xmesh_agent.cli.app", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    rows = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[2].startswith(" ") and not parts[2].startswith("  "):
            try:
                rows.append((int(parts[1]), parts[2].strip()))
            except ValueError:
                continue
    rows.sort(reverse=True)
    return ", ".join(f"{name} {us / 1000:.0f} ms" for us, name in rows[:k])


async def publish_rows(n: int) -> list[Row]:

    tmp = Path(tempfile.mkdtemp(prefix="talk-publish-"))
    env_server = await file_backed_server(tmp)
    config = tmp / "agent.toml"
    config.write_text(
        '[identity]\nname = "talk-peer"\nrole = "reviewer"\n\n[mesh]\ngroup = "talk"\n\n[model]\nadapter = "offline"\n'
    )
    env = {**os.environ, "TEMPORAL_ADDRESS": env_server.client.service_client.config.target_host}
    proc = subprocess.Popen(
        [sys.executable, "-m", "xmesh_agent.cli.app", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    status = Path(os.environ["XMESH_HOME"]) / "peers" / "talk-peer" / "peer.json"
    try:
        deadline = time.monotonic() + 60
        while not status.exists() and proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        if not status.exists():
            return [Row("talk", "publish", "peer did not start")]
        python = wall([sys.executable, "-c", "pass"], n)
        helps = wall([sys.executable, "-m", "xmesh_agent.cli.app", "--help"], n, env)
        times, delivered = [], 0
        for i in range(n + 1):
            took, done = await asyncio.to_thread(
                cli, "publish", "--focus", f"benchmark directive {i}", "--group", "talk", "--json", env=env
            )
            ok = done.returncode == 0 and json.loads(done.stdout)["delivered_to"] == ["talk-peer"]
            delivered += ok
            if i:  # the first one creates the operator's key and store
                times.append(took)
        imports = await asyncio.to_thread(
            top_imports, ["publish", "--focus", "x", "--group", "talk", "--json"], env
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        await env_server.shutdown()
    p50 = median(times)
    return [
        Row("talk", "python -c pass (interpreter alone), p50", fmt_ms(median(python)), note=f"n = {n}"),
        Row("talk", "xmesh-agent --help, p50", fmt_ms(median(helps)), note=f"n = {n}"),
        Row(
            "talk",
            "xmesh-agent publish to a running peer, wall p50 / max",
            f"{fmt_ms(p50)} / {fmt_ms(max(times))}",
            "< 1.5 s",
            max(times) < PUBLISH_TARGET_S,
            f"delivered {delivered}/{n + 1}; interpreter start included",
        ),
        Row("talk", "publish: largest imports", imports or "?"),
    ]


def build_store(peer: str, n: int) -> float:
    """`n` CMBs from 20 authors in one group, written with the store API in one transaction."""
    from xmesh_agent import paths
    from xmesh_agent.mmp.cmb import CMB, CMBField, content_key, minted_texts
    from xmesh_agent.mmp.store import CMBStore

    rng = random.Random(7)
    start = time.perf_counter()
    store = CMBStore(paths.peer_dir(peer) / "cmbs.db", group_commit=False)
    store._db.execute("BEGIN")  # one transaction for the whole build (a benchmark shortcut)
    t0 = 1_765_000_000_000
    for i in range(n):
        texts = minted_texts(
            {
                f: " ".join(rng.sample(WORDS, rng.randint(3, 7)))
                for f in ("focus", "issue", "intent", "commitment")
            }
        )
        cmb = CMB(
            key=content_key(texts),
            created_by=f"author-{i % 20}",
            created_at=t0 + i * 1000,
            fields={f: CMBField(text=t) for f, t in texts.items()},
            group="talk",
        )
        store.put(cmb, source=cmb.created_by)
    store._db.execute("COMMIT")
    store.close()
    return time.perf_counter() - start


def recall_rows(n: int, repeats: int) -> list[Row]:
    from xmesh_agent.lookup import close_all, open_readers
    from xmesh_agent.recall import Query, recall, save_profile

    built = build_store("talk-store", n)
    save_profile("talk-store", "lexical", {"focus": 2.0, "issue": 1.0, "intent": 1.5}, "talk")
    readers = open_readers("talk-store")
    start = time.perf_counter()
    recall(readers, Query(QUERIES[0]))
    first = time.perf_counter() - start
    close_all(readers)
    warm = []
    for _ in range(repeats):
        for q in QUERIES:
            start = time.perf_counter()
            readers = open_readers("talk-store")
            hits = recall(readers, Query(q, limit=10))
            close_all(readers)
            warm.append(time.perf_counter() - start)
            assert hits, q
    filtered = []
    for q in QUERIES:
        start = time.perf_counter()
        readers = open_readers("talk-store")
        recall(readers, Query(q, author="author-3", since_ms=1_765_000_000_000 + n * 500, limit=10))
        close_all(readers)
        filtered.append(time.perf_counter() - start)
    start = time.perf_counter()
    readers = open_readers("talk-store")
    recall(readers, Query("", limit=10))
    close_all(readers)
    empty = time.perf_counter() - start
    cli_wall, done = cli("recall", QUERIES[1], "--peer", "talk-store", "--json")
    ok = done.returncode == 0 and len(json.loads(done.stdout)) == 10
    p95 = pct(warm, 95)
    return [
        Row("talk", f"store of {n:,} CMBs built (store API, one transaction)", f"{built:.1f} s"),
        Row("talk", "first recall (builds the FTS side index)", fmt_ms(first)),
        Row(
            "talk",
            f"recall, warm, p50 / p95 (n = {len(warm)}, 10 hits)",
            f"{fmt_ms(median(warm))} / {fmt_ms(p95)}",
            "< 200 ms",
            p95 < RECALL_TARGET_S,
            "open store + FTS candidates + encoder ranking",
        ),
        Row("talk", "recall with --author and --since, p50", fmt_ms(median(filtered))),
        Row("talk", "recall with an empty query (the newest)", fmt_ms(empty)),
        Row("talk", "xmesh-agent recall via the CLI, wall", fmt_ms(cli_wall), note="ok" if ok else "FAILED"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 20,000-CMB store, 3 publishes")
    parser.add_argument("--json", help="also write the rows here (run_all uses it)")
    args = parser.parse_args()
    isolated_home("talk-")
    rows = asyncio.run(publish_rows(3 if args.quick else 5))
    rows += recall_rows(20_000 if args.quick else 100_000, 2 if args.quick else 5)
    finish(rows, args.json, "talk: publish to a running peer, recall over a large store")


if __name__ == "__main__":
    main()
