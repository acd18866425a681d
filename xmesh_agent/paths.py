"""The ~/.xmesh layout. Every path the runtime writes lives under one home, set by XMESH_HOME."""

from __future__ import annotations

import os
from pathlib import Path

LEGACY_HOME = Path.home() / ".xmesh-agent"


def xmesh_home() -> Path:
    """The runtime home: $XMESH_HOME, else $XMESH_RUNTIME_DIR (the original's name), else ~/.xmesh."""
    for var in ("XMESH_HOME", "XMESH_RUNTIME_DIR"):
        value = os.environ.get(var)
        if value:
            return Path(value).expanduser()
    return Path.home() / ".xmesh"


def keys_dir() -> Path:
    return xmesh_home() / "keys"


def trusted_keys_dir(group: str) -> Path:
    return xmesh_home() / "trusted-keys" / group


def peer_dir(peer: str) -> Path:
    """Per-peer state: CMB store, spool of unstarted wakes, control socket, logs."""
    return xmesh_home() / "peers" / peer


def server_dir() -> Path:
    """The embedded Temporal dev server: its SQLite file, its lock and its log."""
    return xmesh_home() / "temporal"


def sym_loopback_dir() -> Path:
    """The same-host discovery registry shared with stock MMP nodes (~/.sym/loopback)."""
    override = os.environ.get("XMESH_SYM_LOOPBACK_DIR")
    if override:
        return Path(override).expanduser()
    return Path.home() / ".sym" / "loopback"


def ensure_dir(path: Path, mode: int = 0o700) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    return path
