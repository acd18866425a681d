"""The ~/.xmesh layout. Every path the runtime writes lives under one home, set by XMESH_HOME."""

from __future__ import annotations

import contextlib
import os
import stat
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


OBSERVER_LOCK = "node.lock"
"""Held by the observer node of `tail` or `mcp`, which keeps its store beside the peers' (so `recall`
and `show` search what it heard) but is no peer: it never wakes and has no wake ledger."""


def ran_as_peer(name: str) -> bool:
    """A peer (not an observer) has run under this name: it has a wake ledger."""
    return (peer_dir(name) / "wakes.db").exists()


def is_observer(name: str) -> bool:
    return (peer_dir(name) / OBSERVER_LOCK).exists() and not ran_as_peer(name)


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


class UnsafeDirectory(RuntimeError):
    """A directory in a shared place (/tmp) that another user owns or may write: a socket in it could be swapped."""


def private_dir(path: Path, create: bool = True) -> Path:
    """`path` as a directory only this uid can enter: made 0700 if absent, refused if another uid owns it,
    group or others have any permission on it, or it is not a real directory (a symlink)."""
    if create:
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
    st = path.lstat()
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or mode & 0o077:
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a directory"
        raise UnsafeDirectory(
            f"{path} is not private ({kind}, owner uid {st.st_uid}, mode {mode:o}); it must be a directory "
            f"of uid {os.getuid()} with mode 700: remove it, or set XMESH_HOME to a shorter path"
        )
    return path
