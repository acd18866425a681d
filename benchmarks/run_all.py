"""Run every benchmark (what `make bench` runs) and print one table of all their figures.

Each script runs in its own process (its own event loop, Temporal server and temp dirs); its own
table streams through as it goes, then the combined table closes the run, headed by the machine
facts the README records (date, nproc, CPU model, Python version).

usage: python benchmarks/run_all.py [--quick] [--only wire,admission,wake,mesh,tail,talk] [--long] [--json all.json]

`--long` adds long_run.py (a peer fed 10,000 wakes, ~11 minutes; 2,000 with --quick), which the
default run leaves out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from _common import Row, load_rows, table

HERE = Path(__file__).resolve().parent
SCRIPTS = ("wire", "admission", "wake", "mesh", "tail", "talk")
OPTIONAL = ("long_run",)
"""Run only when asked (`--long` or `--only long_run`): minutes, not seconds."""
TIMEOUT_S = 900
TIMEOUTS_S = {"long_run": 2400}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> str:
    return (
        f"date {datetime.now(UTC):%Y-%m-%d %H:%M UTC} | nproc {os.cpu_count()} | {cpu_model()} | "
        f"Python {platform.python_version()} | load avg {os.getloadavg()[0]:.2f}"
    )


def run_one(name: str, quick: bool, out: Path) -> tuple[list[Row], float]:
    cmd = [sys.executable, str(HERE / f"{name}.py"), "--json", str(out)] + (["--quick"] if quick else [])
    began = time.perf_counter()
    try:
        limit = TIMEOUTS_S.get(name, TIMEOUT_S)
        proc = subprocess.run(cmd, timeout=limit, stdout=None, stderr=subprocess.PIPE, text=True)
        failed = proc.returncode != 0
        why = (proc.stderr or "").strip().splitlines()[-1:] if failed else []
    except subprocess.TimeoutExpired:
        failed, why = True, [f"timed out after {TIMEOUTS_S.get(name, TIMEOUT_S)} s"]
    took = time.perf_counter() - began
    if out.exists() and not failed:
        return load_rows(out), took
    return [Row(name, "run", "FAILED", note=" ".join(why)[:160])], took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every script")
    parser.add_argument("--only", help="comma-separated subset of: " + ",".join(SCRIPTS + OPTIONAL))
    parser.add_argument("--long", action="store_true", help="also run " + ", ".join(OPTIONAL))
    parser.add_argument("--json", help="also write every row here")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",")] if args.only else list(SCRIPTS)
    if args.long:
        names += [n for n in OPTIONAL if n not in names]
    unknown = [n for n in names if n not in SCRIPTS + OPTIONAL]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    header = machine()
    print(header, flush=True)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for name in names:
            print(f"\n=== {name} ===", flush=True)
            got, took = run_one(name, args.quick, Path(tmp) / f"{name}.json")
            rows += got
            print(f"({name} took {took:.0f} s)", flush=True)
    print()
    print(table(rows, f"ALL BENCHMARKS{' (quick)' if args.quick else ''} — {header}"))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": header, "rows": [asdict(r) for r in rows]}, indent=1)
        )
    misses = [r for r in rows if r.ok is False]
    print(f"\n{len(rows)} figures, {sum(r.ok is True for r in rows)} targets met, {len(misses)} missed.")


if __name__ == "__main__":
    main()
