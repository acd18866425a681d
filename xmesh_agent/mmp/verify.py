"""Inbound CMB verification (§18.3.1): signature, content address, audience, downgrade, admission.

A CMB that fails any check is never stored nor surfaced; the caller audit-logs the reason.
Durable per-identity state (who has ever signed, TOFU pins) lives in a small SQLite file next
to the CMB store, so a restart cannot be used to strip signatures.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xmesh_agent.clock import now_ms
from xmesh_agent.mmp import trust
from xmesh_agent.mmp.cmb import CMB, key_matches, verify_cmb_signature

ADMISSION_MODES = ("tofu", "strict", "open")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS signers (identity TEXT PRIMARY KEY, first_signed_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pins (name TEXT PRIMARY KEY, public_key BLOB NOT NULL);
"""


@dataclass(frozen=True)
class KnownKey:
    """An author's key and nodeId, and how we learned it (a handshake outranks gossip)."""

    node_id: str
    name: str
    public_key: bytes
    source: str  # "handshake" | "gossip"


@dataclass(frozen=True)
class ExternalSig:
    """A signature in another dialect: is one present, does it verify with a key, do keys match."""

    signed: bool
    verify: Callable[[bytes], bool]
    content_ok: bool


def _sane(cmb: CMB) -> bool:
    """Bounds the wire model leaves open; out-of-range values would break storage or hashing."""
    return (
        0 < len(cmb.key) <= 256
        and 0 < len(cmb.created_by) <= 256
        and 0 <= cmb.created_at < 2**53
        and len(cmb.to or "") <= 256
        and len(cmb.group or "") <= 64
        and len(cmb.sig or "") <= 256
        and len(cmb.fields) <= 64
    )


def verify_db_path(store_path: Path) -> Path | str:
    return ":memory:" if str(store_path) == ":memory:" else store_path.with_name(store_path.name + ".verify")


class Verifier:
    def __init__(self, group: str, node_id: str, name: str, db_path: Path | str, *, admission: str = "tofu"):
        if admission not in ADMISSION_MODES:
            raise ValueError(f"admission must be one of {ADMISSION_MODES}, not {admission!r}")
        self.group = group
        self.node_id = node_id
        self.name = name
        self.admission = admission
        self._lock = threading.Lock()
        if isinstance(db_path, Path):
            db_path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(db_path), check_same_thread=False, isolation_level=None)
        # WAL + NORMAL: a commit is a write into the log, not an fsync, yet survives a crash of the
        # process; first contact with an author no longer costs every receiver a disk flush.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._keys: dict[str, KnownKey] = {}  # by name and by nodeId
        # Write-through caches of the tables, so the hot path runs no statement for an author we
        # already know. Only positive facts are cached (a pin, a signer): they never change once
        # written, so a cached entry cannot go stale even if another process shares the file.
        self._pins: dict[str, bytes] = {}
        self._signers: set[str] = set()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- key knowledge -------------------------------------------------------------------------

    def learn(self, node_id: str, name: str, public_key: bytes, *, source: str) -> None:
        """Remember an author's key; gossip never overrides what a handshake told us."""
        if len(public_key) != 32:
            return
        existing = self._keys.get(node_id) or self._keys.get(name)
        if source == "gossip" and existing is not None:
            return
        known = KnownKey(node_id, name, public_key, source)
        self._keys[node_id] = known
        self._keys[name] = known
        if source == "handshake" and self.admission == "tofu":
            self.pin_if_new(name, public_key)

    def resolve(self, author: str) -> KnownKey | None:
        return self._keys.get(author)

    def pin_if_new(self, name: str, public_key: bytes) -> None:
        if name in self._pins:
            return
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO pins (name, public_key) VALUES (?, ?)", (name, public_key)
            )
        self.pinned(name)  # cache whatever won: ours, or a pin another writer made first

    def pinned(self, name: str) -> bytes | None:
        cached = self._pins.get(name)
        if cached is not None:
            return cached
        with self._lock:
            row = self._db.execute("SELECT public_key FROM pins WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        self._pins[name] = key = bytes(row[0])
        return key

    def _mark_signer(self, *identities: str) -> None:
        new = [ident for ident in identities if ident and ident not in self._signers]
        if not new:
            return
        now = now_ms()
        with self._lock:
            for ident in new:
                self._db.execute(
                    "INSERT OR IGNORE INTO signers (identity, first_signed_at) VALUES (?, ?)", (ident, now)
                )
        self._signers.update(new)

    def has_signed(self, *identities: str) -> bool:
        if any(ident in self._signers for ident in identities if ident):
            return True
        with self._lock:
            for ident in identities:
                if (
                    ident
                    and self._db.execute("SELECT 1 FROM signers WHERE identity = ?", (ident,)).fetchone()
                ):
                    self._signers.add(ident)
                    return True
        return False

    # -- the checks ----------------------------------------------------------------------------

    def check(self, cmb: CMB, sender: KnownKey, *, external: ExternalSig | None = None) -> str | None:
        """None when the CMB may be stored and surfaced, else the reject reason for the audit log.

        `external` carries the signature of another dialect (the stock record's mmp-sig-v2),
        whose audience rules also allow an empty group.
        """
        if not _sane(cmb):
            return "malformed"
        signed = external.signed if external else bool(cmb.sig)
        # Audience: a signed CMB binds its group, so it must be ours exactly; an unsigned legacy
        # block without a group rides on the connection's group, already checked at handshake.
        if cmb.group is not None and cmb.group != self.group:
            return "wrong-group"
        if signed and cmb.group is None and external is None:
            return "wrong-group"
        if cmb.to and cmb.to not in (self.node_id, self.name):
            return "not-for-us"
        if cmb.created_by in (sender.name, sender.node_id):
            author: KnownKey | None = sender
        else:
            author = self.resolve(cmb.created_by)
        author_ids = (cmb.created_by, author.node_id if author else "", author.name if author else "")
        if signed and author is not None:
            if external is not None:
                sig_ok, content_ok = external.verify(author.public_key), external.content_ok
            else:
                sig_ok = verify_cmb_signature(cmb, author.public_key)
                content_ok = key_matches(cmb, author.node_id)
            if not sig_ok:
                return "bad-signature"
            if not content_ok:
                return "key-mismatch"
            reason = self._admit_key(author)
            if reason:
                return reason
            self._mark_signer(*author_ids)
            return None
        # Unsigned, or signed by an author we hold no key for (cannot verify = treat as unsigned).
        if self.has_signed(*author_ids):
            return "downgrade"
        if self.admission == "strict":
            return "untrusted-key"
        if author is not None and self.admission == "tofu":
            reason = self._admit_key(author)
            if reason:
                return reason
        if external is not None:
            return None if external.content_ok else "key-mismatch"
        if cmb.key.startswith("cmb1-") and not cmb.parents and not key_matches(cmb):
            return "key-mismatch"
        if cmb.key.startswith("cmb1-") and cmb.parents and author and not key_matches(cmb, author.node_id):
            return "key-mismatch"
        return None

    def _admit_key(self, author: KnownKey) -> str | None:
        if self.admission == "open":
            return None
        if self.admission == "strict":
            trusted = trust.get(self.group, author.name)
            return None if trusted is not None and trusted == author.public_key else "untrusted-key"
        pinned = self.pinned(author.name)
        if pinned is None:
            self.pin_if_new(author.name, author.public_key)
            return None
        return None if pinned == author.public_key else "untrusted-key"
