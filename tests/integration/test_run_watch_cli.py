"""`run` and `watch` as a user meets them, each a real CLI process: durations written the usual ways,
the Web UI announced when the embedded server is used, and the original runtime's millisecond interval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from xmesh_agent.workers import devserver

CLI = str(Path(sys.executable).parent / "xmesh-agent")


def test_run_takes_a_duration_with_a_unit_and_announces_the_embedded_web_ui(tmp_path: Path) -> None:
    config = tmp_path / "ui-peer.toml"
    config.write_text(
        '[identity]\nname = "ui-peer"\n[mesh]\ngroup = "ui-test"\n[model]\nadapter = "offline"\n'
    )
    summary = tmp_path / "summary.json"
    result = subprocess.run(
        [CLI, "run", "--config", str(config), "--duration", "0.05m", "--summary", str(summary)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(summary.read_text())
    assert data["stop_reason"] == "duration" and data["duration_seconds"] >= 3.0
    ui = [
        line
        for line in result.stderr.splitlines()
        if "Web UI of the embedded Temporal server: http://" in line
    ]
    link = [line for line in result.stderr.splitlines() if "this peer's wakes: http://" in line]
    assert len(ui) == 1 and len(link) == 1, result.stderr
    assert "/namespaces/default/workflows?query=XmPeer%20%3D%20%27ui-peer%27" in link[0]
    assert devserver.running_server() is None, "the peer held the last lease"

    refused = subprocess.run(
        [CLI, "run", "--config", str(config), "--duration", "5 minutes"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2 and "'5 minutes' is not a duration" in refused.stderr


def _refresh_headers(args: list[str], count: int, bound: float) -> tuple[list[str], str]:
    """Start `watch` (no peers run), read `count` table headers, stop it; (headers, stderr)."""
    proc = subprocess.Popen(
        [CLI, "watch", "--no-color", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    headers: list[str] = []
    deadline = time.monotonic() + bound
    try:
        while len(headers) < count:
            line = proc.stdout.readline()
            assert line and time.monotonic() < deadline, f"only {headers} within {bound} s"
            if "peer(s) at" in line:
                headers.append(line.strip())
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    return headers, stderr


def test_watch_reads_the_original_millisecond_interval_with_a_note() -> None:
    headers, stderr = _refresh_headers(["--interval", "2000"], count=2, bound=15)
    assert all("every 2s" in h for h in headers), headers
    assert "--interval 2000 read as milliseconds (2s)" in stderr


def test_watch_interval_takes_units() -> None:
    for text in ("500ms", "0.5s"):
        headers, stderr = _refresh_headers(["--interval", text], count=3, bound=15)
        assert all("every 0.5s" in h for h in headers) and "milliseconds" not in stderr, (headers, stderr)
    bad = subprocess.run([CLI, "watch", "--interval", "50ms"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "at least 200ms" in bad.stderr
