"""Structured peer logs: one JSON event per line, {ts, level, evt, peer, data}, with size-based rotation.

Keys in the file are snake_case (`wake_id`, `cmb_key`, `node_id`), whatever the event's builder named
them: scripts reading `xmesh-agent logs --json` see one key style.

The file is what `xmesh-agent logs <peer>` reads, so it must be safe to show anyone who may run that
command: API keys never reach it (key-named values are masked, secret-shaped text is replaced by the
gates' masked excerpt, the configured key's value is scrubbed) and a gate-blocked field is only ever
described by the excerpt the gates give, never logged in full. Writing never raises into the caller:
a full disk or a closed file costs the event, not the wake.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xmesh_agent import paths
from xmesh_agent.config import AgentConfig, LoggingConfig
from xmesh_agent.jsonkeys import snake_keys
from xmesh_agent.safety.gates import SECRET_RULES, redact

LEVELS = {"error": 40, "warn": 30, "info": 20, "debug": 10}
SECRET_KEY_WORDS = ("api_key", "apikey", "token", "secret", "password", "authorization", "private")
MASK = "****"
MAX_STRING = 2000
"""Longer strings are cut: a log line describes an event, it does not carry payloads."""
KEY_ENV_VARS = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "TEMPORAL_API_KEY")

Listener = Callable[[str, dict[str, Any]], None]


def default_log_path(peer: str) -> Path:
    return paths.peer_dir(peer) / "peer.log"


def log_path(config: AgentConfig) -> Path:
    """Where a peer's log lives: [logging].file_path, else ~/.xmesh/peers/<name>/peer.log."""
    if config.logging.file_path:
        return Path(config.logging.file_path).expanduser()
    return default_log_path(config.name)


COUNT_SUFFIXES = ("tokens", "_count", "count")
"""Token counts are figures, not credentials: `inputTokens` must stay readable."""


def _secret_key(name: str) -> bool:
    lowered = name.lower().replace("-", "_")
    if lowered.endswith(COUNT_SUFFIXES):
        return False
    return any(word in lowered for word in SECRET_KEY_WORDS)


class Redactor:
    """Masks secrets in event data: by key name, by secret shape, and by known key values."""

    def __init__(self, known_secrets: list[str] | None = None) -> None:
        self.known = sorted({s for s in (known_secrets or []) if s and len(s) >= 8}, key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self.known:
            if secret in value:
                value = value.replace(secret, MASK)
        for rule in SECRET_RULES:
            value = rule.regex.sub(lambda m: redact(m.string, m), value)
        if len(value) > MAX_STRING:
            value = value[:MAX_STRING] + f"...({len(value)} chars)"
        return value

    def value(self, value: Any, depth: int = 0) -> Any:
        if depth > 8:
            return "..."
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                str(k): (MASK if _secret_key(str(k)) and v else self.value(v, depth + 1))
                for k, v in value.items()
            }
        if isinstance(value, (list, tuple)):
            return [self.value(v, depth + 1) for v in value[:100]]
        if value is None or isinstance(value, (bool, int, float)):
            return value
        return self.text(str(value))


class PeerLog:
    """A peer's event log. `event()` is the one entry point; listeners see every event unfiltered."""

    def __init__(
        self,
        peer: str,
        path: Path | None = None,
        settings: LoggingConfig | None = None,
        known_secrets: list[str] | None = None,
    ) -> None:
        self.peer = peer
        self.settings = settings or LoggingConfig()
        self.path = path or default_log_path(peer)
        self.threshold = LEVELS[self.settings.level]
        self.redactor = Redactor(known_secrets)
        self.listeners: list[Listener] = []
        self._lock = threading.Lock()
        self._file = None

    @classmethod
    def for_config(cls, config: AgentConfig) -> PeerLog:
        secrets = [config.model.api_key or "", config.temporal.api_key or "", config.mesh.relay_token or ""]
        secrets += [os.environ.get(var, "") for var in KEY_ENV_VARS]
        return cls(config.name, log_path(config), config.logging, secrets)

    def __call__(self, evt: str, data: dict[str, Any] | None = None, level: str = "info") -> None:
        self.event(evt, data, level)

    def event(self, evt: str, data: dict[str, Any] | None = None, level: str = "info") -> None:
        data = dict(data or {})
        for listener in list(self.listeners):
            with contextlib.suppress(Exception):
                listener(evt, data)
        if LEVELS.get(level, 20) < self.threshold:
            return
        record = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": level,
            "evt": evt,
            "peer": self.peer,
            "data": snake_keys(self.redactor.value(data)),
        }
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        with self._lock, contextlib.suppress(OSError, ValueError):
            self._write(line.encode("utf-8"))

    def node_event(self, name: str, data: dict) -> None:
        """MeshNode's on_event: peer-connected / peer-disconnected / cmb-rejected / mdns-warning."""
        level = "warn" if name in ("cmb-rejected", "mdns-warning") else "info"
        self.event(name, data, level)

    def _write(self, raw: bytes) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._file = os.fdopen(fd, "ab")
        size = self._file.tell()
        if size and size + len(raw) > self.settings.max_file_size:
            self._rotate()
        self._file.write(raw)
        self._file.flush()

    def _rotate(self) -> None:
        """peer.log -> peer.log.1 -> ... -> peer.log.<keep>; the oldest falls off."""
        if self._file is not None:
            self._file.close()
            self._file = None
        keep = self.settings.keep
        Path(f"{self.path}.{keep}").unlink(missing_ok=True)
        for n in range(keep - 1, 0, -1):
            older = Path(f"{self.path}.{n}")
            if older.exists():
                older.replace(f"{self.path}.{n + 1}")
        if self.path.exists():
            self.path.replace(f"{self.path}.1")
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "ab")

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None


def tail(path: Path, lines: int) -> list[str]:
    """The last `lines` lines of a log file (reads from the end; fine for files of any size)."""
    if lines <= 0 or not path.exists():
        return []
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        chunk, data = 8192, b""
        while end > 0 and data.count(b"\n") <= lines:
            start = max(0, end - chunk)
            f.seek(start)
            data = f.read(end - start) + data
            end = start
    text = data.decode("utf-8", errors="replace").splitlines()
    return text[-lines:]


def follow(path: Path, poll: float = 0.25, stop: Callable[[], bool] | None = None) -> Iterator[str]:
    """Yield lines appended to `path`, following it across rotation (a new inode starts over)."""
    import time

    handle = None
    inode = None
    while stop is None or not stop():
        if handle is None and path.exists():
            handle = path.open("r", encoding="utf-8", errors="replace")
            inode = os.fstat(handle.fileno()).st_ino
            handle.seek(0, os.SEEK_END)
        line = handle.readline() if handle else ""
        if line:
            yield line.rstrip("\n")
            continue
        with contextlib.suppress(FileNotFoundError):
            if handle is not None and os.stat(path).st_ino != inode:
                handle.close()
                handle = path.open("r", encoding="utf-8", errors="replace")
                inode = os.fstat(handle.fileno()).st_ino
                continue
        time.sleep(poll)
    if handle is not None:
        handle.close()
