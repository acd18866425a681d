"""Same-host discovery shared with stock MMP nodes: one JSON file per node in ~/.sym/loopback.

Multicast needs a live network interface; this directory lets two nodes on one machine meet with
none. Each node rewrites `<nodeId>.json` = {nodeId, name, port, pid, serviceType, ts} every few
seconds and removes it on stop; scanners skip their own, stale and other-serviceType entries.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from xmesh_agent import paths
from xmesh_agent.clock import now_ms
from xmesh_agent.process import pid_alive

log = logging.getLogger(__name__)

DEFAULT_SERVICE_TYPE = "_sym._tcp"


def service_type_for(group: str) -> str:
    """The stock nodes' room mapping: "default" -> `_sym._tcp`, any other group -> `_<group>._tcp`."""
    return DEFAULT_SERVICE_TYPE if not group or group == "default" else f"_{group}._tcp"


@dataclass(frozen=True)
class RegistryEntry:
    node_id: str
    name: str
    port: int
    pid: int | None
    service_type: str
    ts: int


class LoopbackRegistry:
    """Our entry in the shared directory, and a scanner for everyone else's."""

    def __init__(
        self,
        node_id: str,
        name: str,
        group: str,
        *,
        directory: Path | None = None,
        stale_after: float = 15.0,
    ):
        self.node_id = node_id
        self.name = name
        self.service_type = service_type_for(group)
        self.directory = directory or paths.sym_loopback_dir()
        self.stale_after = stale_after
        self.file = self.directory / f"{node_id}.json"
        self.port = 0

    def write(self, port: int) -> None:
        """(Re)write our entry atomically, so a scanner never reads half a file."""
        self.port = port
        record = {
            "nodeId": self.node_id,
            "name": self.name,
            "port": port,
            "pid": os.getpid(),
            "serviceType": self.service_type,
            "ts": now_ms(),
        }
        try:
            paths.ensure_dir(self.directory)
            tmp = self.directory / f"{self.node_id}.json.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(record, separators=(",", ":")))
            os.replace(tmp, self.file)
        except OSError as exc:
            log.warning("loopback registry write failed: %s", exc)

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.file.unlink()

    def scan(self) -> list[RegistryEntry]:
        """Live entries of other nodes with our serviceType. Entries of dead processes are removed."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        now = now_ms()
        found: list[RegistryEntry] = []
        for fname in names:
            if not fname.endswith(".json"):
                continue
            full = self.directory / fname
            entry = self._read(full)
            if entry is None or entry.node_id == self.node_id:
                continue
            if entry.service_type != self.service_type:
                continue
            if entry.pid is not None and not pid_alive(entry.pid):
                with contextlib.suppress(OSError):
                    full.unlink()
                continue
            if now - entry.ts > self.stale_after * 1000:
                continue
            found.append(entry)
        return found

    @staticmethod
    def _read(path: Path) -> RegistryEntry | None:
        try:
            if path.stat().st_size > 64 * 1024:
                return None
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        if not isinstance(rec, dict):
            return None
        node_id, port, ts = rec.get("nodeId"), rec.get("port"), rec.get("ts")
        if not isinstance(node_id, str) or not node_id:
            return None
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            return None
        if not isinstance(ts, int | float) or isinstance(ts, bool):
            return None
        pid = rec.get("pid")
        name = rec.get("name")
        service_type = rec.get("serviceType")
        return RegistryEntry(
            node_id=node_id,
            name=name if isinstance(name, str) else "unknown",
            port=port,
            pid=pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None,
            # An entry without serviceType is a stock node on the default mesh.
            service_type=service_type if isinstance(service_type, str) else DEFAULT_SERVICE_TYPE,
            ts=int(ts),
        )
