"""The demo's peer processes: spawn each as `xmesh-agent run`, stop them gracefully, kill and restart one.

Each peer is a real OS process with its own worker, so SIGKILL in soak mode is a real crash: the
peer's durable state (keys, store, ledgers under ~/.xmesh) and Temporal's histories are all that
survive it, which is exactly what the accounting afterwards checks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from xmesh_agent.config import AgentConfig, to_toml

STOP_TIMEOUT = 40.0
"""Longer than the worker's 30 s graceful shutdown, so in-flight wakes can finish."""


@dataclass
class PeerProc:
    name: str
    config_path: Path
    log_path: Path
    proc: subprocess.Popen | None = None
    restarts: int = 0
    kills: int = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class PeerProcs:
    """The scenario's peers as child processes on one Temporal address."""

    def __init__(self, run_dir: Path, address: str, namespace: str = "default"):
        self.run_dir = run_dir
        self.env = dict(
            os.environ, TEMPORAL_ADDRESS=address, TEMPORAL_NAMESPACE=namespace, PYTHONUNBUFFERED="1"
        )
        self.peers: dict[str, PeerProc] = {}

    def add(self, config: AgentConfig) -> PeerProc:
        """Write the peer's config beside its log and start it."""
        cfg_path = self.run_dir / f"{config.name}.toml"
        cfg_path.write_text(to_toml(config))
        peer = PeerProc(config.name, cfg_path, self.run_dir / f"{config.name}.log")
        self.peers[config.name] = peer
        self._spawn(peer)
        return peer

    def _spawn(self, peer: PeerProc) -> None:
        with open(peer.log_path, "ab") as log:
            peer.proc = subprocess.Popen(
                [sys.executable, "-m", "xmesh_agent.cli.app", "run", "--config", str(peer.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
            )

    def dead(self) -> list[PeerProc]:
        return [p for p in self.peers.values() if not p.alive]

    def kill(self, name: str) -> None:
        """SIGKILL: no drain, no cleanup, like a machine losing power under the peer."""
        peer = self.peers[name]
        if peer.alive and peer.proc is not None:
            peer.proc.send_signal(signal.SIGKILL)
            peer.proc.wait()
            peer.kills += 1

    def restart(self, name: str) -> None:
        peer = self.peers[name]
        if not peer.alive:
            self._spawn(peer)
            peer.restarts += 1

    def stop_all(self, timeout: float = STOP_TIMEOUT) -> list[str]:
        """SIGTERM every peer so it drains its in-flight wakes; SIGKILL what outlives `timeout`."""
        for peer in self.peers.values():
            if peer.alive and peer.proc is not None:
                peer.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        forced = []
        for peer in self.peers.values():
            if peer.proc is None:
                continue
            try:
                peer.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                peer.proc.kill()
                peer.proc.wait()
                forced.append(peer.name)
        return forced

    def logs(self) -> str:
        return ", ".join(str(p.log_path) for p in self.peers.values())
