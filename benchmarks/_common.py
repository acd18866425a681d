"""Shared bits of the benchmark scripts: percentiles, the result rows, a plain-text table, JSON out.

Every script collects `Row`s (one figure each, with an optional target) so `run_all.py` can print
them all in one table. Figures are printed, never asserted: these scripts are not part of the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(ROOT))


@dataclass
class Row:
    """One figure: `target` is a human-readable goal ("<= 1 ms"), `ok` whether it was met (None: no goal)."""

    bench: str
    metric: str
    value: str
    target: str = ""
    ok: bool | None = None
    note: str = ""


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def time_per_call(fn: Callable[[], object], iterations: int, repeats: int = 5) -> float:
    """Median over `repeats` of the mean seconds per call across `iterations` calls."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        runs.append((time.perf_counter() - start) / iterations)
    return statistics.median(runs)


def table(rows: Sequence[Row], title: str = "") -> str:
    """Rows as an aligned text table with a verdict column."""
    head = ("bench", "metric", "value", "target", "meets", "note")
    body = [
        (r.bench, r.metric, r.value, r.target, {True: "yes", False: "NO", None: ""}[r.ok], r.note)
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [title] if title else []
    out.append(line.format(*head).rstrip())
    out.append("  ".join("-" * w for w in widths))
    out.extend(line.format(*b).rstrip() for b in body)
    return "\n".join(out)


def emit(rows: Sequence[Row], json_path: str | None, title: str) -> None:
    """Print the table; also write the rows as JSON when run_all asked for them."""
    print(table(rows, title), flush=True)
    if json_path:
        Path(json_path).write_text(json.dumps([asdict(r) for r in rows], indent=1))


def load_rows(path: str | os.PathLike) -> list[Row]:
    return [Row(**r) for r in json.loads(Path(path).read_text())]


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of a process in MB, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU seconds a process has used so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} µs"


def isolated_home(prefix: str) -> str:
    """A fresh XMESH_HOME and same-host registry for one benchmark run: nothing touches ~/.xmesh."""
    home = tempfile.mkdtemp(prefix=prefix)
    os.environ["XMESH_HOME"] = home
    os.environ["XMESH_SYM_LOOPBACK_DIR"] = str(Path(home) / "loopback")
    return home


def finish(rows: Sequence[Row], json_path: str | None, title: str) -> NoReturn:
    """Print the rows and leave at once: the Temporal core runtime's threads can abort interpreter
    finalisation (PyGILState_Release), and everything is stopped and printed by now."""
    emit(rows, json_path, title)
    sys.stdout.flush()
    os._exit(0)


def child_pids() -> list[int]:
    """This process's children (the Temporal dev server), from /proc."""
    pids = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        with contextlib.suppress(OSError):
            pids += [int(p) for p in (task / "children").read_text().split()]
    return pids


@dataclass
class Timed:
    """One operation measured twice: one at a time (latencies, s), then `burst` at once (rate, CPU per op)."""

    latencies: list[float]
    rate: float
    cpu_here: float
    cpu_server: float


async def sequential_then_burst(once: Callable[[], Awaitable[object]], n_seq: int, n_burst: int) -> Timed:
    """Warm up 3 times, time `n_seq` calls one after another, then `n_burst` at once with the CPU this
    process and its children (the dev server) spent per call."""
    for _ in range(3):
        await once()
    latencies = []
    for _ in range(n_seq):
        start = time.perf_counter()
        await once()
        latencies.append(time.perf_counter() - start)
    server = child_pids()
    cpu0 = cpu_seconds(), sum(cpu_seconds(pid) for pid in server)
    start = time.perf_counter()
    await asyncio.gather(*[once() for _ in range(n_burst)])
    wall = time.perf_counter() - start
    cpu1 = cpu_seconds(), sum(cpu_seconds(pid) for pid in server)
    return Timed(latencies, n_burst / wall, (cpu1[0] - cpu0[0]) / n_burst, (cpu1[1] - cpu0[1]) / n_burst)


async def file_backed_server(tmp: Path, *extra_args: str):
    """The embedded dev server as peers run it by default: our plugin and search attributes, its
    state in a SQLite file under `tmp` (in memory it would be faster than what users get)."""
    from temporalio.testing import WorkflowEnvironment

    from xmesh_agent.workers.client import XMESH_PLUGIN
    from xmesh_agent.workers.devserver import temporal_binary
    from xmesh_agent.workflows import search

    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary()),
        search_attributes=list(search.ALL),
        plugins=[XMESH_PLUGIN],
        dev_server_extra_args=["--db-filename", str(tmp / "temporal.db"), *extra_args],
    )
