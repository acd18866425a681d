"""Inbound CMB verification (§18.3.1): signature, content address, audience, downgrade, admission.

A CMB that fails any check is never stored nor surfaced; the caller audit-logs the reason.
Durable per-identity state (who has ever signed, TOFU pins by name, and the key each nodeId is
bound to) lives in a small SQLite file next to the CMB store, so a restart cannot be used to strip
signatures nor to hand a nodeId to another key.

Keys come from handshakes only (and from pins and bindings made from handshakes): gossip never
vouches for a key. Every CMB is checked against the key bound to its author (`createdBy`), whoever
delivers it.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xmesh_agent.clock import now_ms
from xmesh_agent.mmp import trust
from xmesh_agent.mmp.cmb import CMB, key_matches, verify_cmb_signature
from xmesh_agent.recent import Recent

ADMISSION_MODES = ("tofu", "strict", "open")
CACHED_IDENTITIES = 4096
"""Identities each in-memory cache keeps (the most recent). The db behind them keeps every one: an
identity pushed out costs one query when it comes back, and a flood of invented nodeIds (each a
handshake with a new key) cannot grow the peer's memory."""
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS signers (identity TEXT PRIMARY KEY, first_signed_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pins (name TEXT PRIMARY KEY, public_key BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS node_keys (
    node_id TEXT PRIMARY KEY, public_key BLOB NOT NULL, proven INTEGER NOT NULL, bound_at INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class KnownKey:
    """An author's key and nodeId, and how we learned it."""

    node_id: str
    name: str
    public_key: bytes
    source: str  # "handshake" | "pin" | "binding"


@dataclass(frozen=True)
class Binding:
    public_key: bytes
    proven: bool


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
        # This run's handshakes, by name and by nodeId: the most recent ones. One pushed out resolves
        # from the db (a nodeId's binding; a name's tofu pin) or, under strict, the operator's pins;
        # under open, a name pushed out by 4,096 newer identities is an unknown author again.
        self._keys: dict[str, KnownKey] = Recent(CACHED_IDENTITIES)
        # Write-through caches of the tables, so the hot path runs no statement for an author we
        # already know. Only positive facts are cached (a pin, a signer): they never change once
        # written, so a cached entry cannot go stale even if another process shares the file.
        self._pins: dict[str, bytes] = Recent(CACHED_IDENTITIES)
        self._signers: dict[str, None] = Recent(CACHED_IDENTITIES)
        self._bindings: dict[str, Binding] = Recent(CACHED_IDENTITIES)
        self._unbound: set[str] = set()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- key knowledge -------------------------------------------------------------------------

    def learn(self, node_id: str, name: str, public_key: bytes) -> None:
        """Remember the key a handshake announced (after `claim` accepted it)."""
        if len(public_key) != 32:
            return
        known = KnownKey(node_id, name, public_key, "handshake")
        self._keys[node_id] = known
        self._keys[name] = known
        if self.admission == "tofu":
            self.pin_if_new(name, public_key)

    def resolve(self, author: str) -> KnownKey | None:
        """The key we hold for an author named by name or nodeId: this run's handshakes first,
        then the name's pin (tofu's first sight, or the operator's under strict) or the nodeId's
        binding."""
        known = self._keys.get(author)
        if known is not None:
            return known
        pinned = self._named_key(author)  # tofu: pinned at first sight; strict: the operator's pin
        if pinned is not None:
            with self._lock:
                row = self._db.execute(
                    "SELECT node_id FROM node_keys WHERE public_key = ? ORDER BY bound_at LIMIT 1", (pinned,)
                ).fetchone()
            return KnownKey(row[0] if row else "", author, pinned, "pin")
        bound = self.binding(author)
        if bound is not None:
            return KnownKey(author, "", bound.public_key, "binding")
        return None

    # -- nodeId bindings -----------------------------------------------------------------------

    def binding(self, node_id: str, *, fresh: bool = False) -> Binding | None:
        """The key `node_id` is bound to. A binding's key never changes (only `proven` may turn
        true), so the hot path may cache it, and the names that are nobody's nodeId."""
        ident = node_id.lower()  # §3.1.1: nodeIds compare case-insensitively
        if not fresh:
            cached = self._bindings.get(ident)
            if cached is not None:
                return cached
            if ident in self._unbound:
                return None
        with self._lock:
            row = self._db.execute(
                "SELECT public_key, proven FROM node_keys WHERE node_id = ?", (ident,)
            ).fetchone()
        if row is None:
            if len(self._unbound) < 65536:
                self._unbound.add(ident)
            return None
        self._unbound.discard(ident)  # bound since it was last looked up
        self._bindings[ident] = found = Binding(bytes(row[0]), bool(row[1]))
        return found

    def claim(self, node_id: str, name: str, public_key: bytes, *, proven: bool) -> str | None:
        """A handshake claims `node_id` (and `name`) with `public_key`: None binds it (on first
        sight, or upgrades an unproven binding to proven), else why the claim is refused. A nodeId
        keeps the first key it was bound to; one that has proven its key must prove it again; a
        nodeId may not be another key's name, nor a name another key's (UUID) nodeId."""
        bound = self.binding(node_id, fresh=True)
        if bound is not None and bound.public_key != public_key:
            return "nodeId is bound to another key"
        if bound is not None and bound.proven and not proven:
            return "nodeId has proven its key before and did not prove it now"
        pinned = self._named_key(node_id) if node_id != self.name else None
        if pinned is not None and pinned != public_key:
            return "nodeId is the name of another key"
        other = self.binding(name) if _UUID.match(name) and name.lower() != node_id.lower() else None
        if other is not None and other.public_key != public_key:
            return "name is the nodeId of another key"
        if bound is None or (proven and not bound.proven):
            with self._lock:
                self._db.execute(
                    "INSERT INTO node_keys (node_id, public_key, proven, bound_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(node_id) DO UPDATE SET proven = excluded.proven "
                    "WHERE node_keys.public_key = excluded.public_key",
                    (node_id.lower(), public_key, int(proven), now_ms()),
                )
            bound = self.binding(node_id, fresh=True)  # whatever won, should another writer share the file
            if bound is None or bound.public_key != public_key:
                return "nodeId is bound to another key"
        return None

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
        for ident in new:
            self._signers[ident] = None

    def has_signed(self, *identities: str) -> bool:
        if any(ident in self._signers for ident in identities if ident):
            return True
        with self._lock:
            for ident in identities:
                if (
                    ident
                    and self._db.execute("SELECT 1 FROM signers WHERE identity = ?", (ident,)).fetchone()
                ):
                    self._signers[ident] = None
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
        # A pin (a name) or binding (a nodeId) of the block's author outranks whoever delivers it.
        consistent = author is None or self._consistent(cmb.created_by, author)
        author_ids = (cmb.created_by, author.node_id if author else "", author.name if author else "")
        if signed and author is not None:
            if not consistent:
                return "untrusted-key"
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
        if self.admission == "strict" or not consistent:
            return "untrusted-key"
        if author is None and self.admission == "tofu":
            # Relayed from an author no handshake ever showed us: nothing to check it against, and
            # the sender cannot vouch for it (gossip never does).
            return "unknown-author"
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

    def _named_key(self, name: str) -> bytes | None:
        """The key a name is pinned to: by first use (tofu) or by the operator (strict)."""
        if self.admission == "tofu":
            return self.pinned(name)
        if self.admission == "strict":
            return trust.get(self.group, name)
        return None

    def _consistent(self, created_by: str, author: KnownKey) -> bool:
        """No pin gives the name `createdBy` another key, nor, when it is a nodeId, its binding.
        (A legacy nodeId that is not a UUID is not taken for one when it is used as a name.)"""
        pinned = self._named_key(created_by)
        if pinned is not None and pinned != author.public_key:
            return False
        if created_by != author.node_id and not _UUID.match(created_by):
            return True
        bound = self.binding(created_by)
        return bound is None or bound.public_key == author.public_key

    def _admit_key(self, author: KnownKey) -> str | None:
        if self.admission == "open":
            return None
        if self.admission == "strict":
            trusted = trust.get(self.group, author.name)
            return None if trusted is not None and trusted == author.public_key else "untrusted-key"
        if author.source == "binding":
            return None
        pinned = self.pinned(author.name)
        if pinned is None:
            self.pin_if_new(author.name, author.public_key)
            return None
        return None if pinned == author.public_key else "untrusted-key"
