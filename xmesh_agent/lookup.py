"""Reading peers' CMB stores from outside the peer: read-only, whether the peer runs or not.

A running peer holds its store open in WAL mode; a reader opened with `mode=ro` sees every committed
CMB and never takes a write lock, so `recall`, `show` and key lookups do not disturb it.

Keys are asked for by people: a full `cmb1-` key, a unique prefix as the demo prints it
(`cmb1-3f2a9c01…`, with or without the `cmb1-`), or a stock node's `cmb-` key (content-only, so
it is recomputed from the texts of the CMBs held: see `dialect_stock_keys.stock_key_for`).
"""

from __future__ import annotations

import json
import re
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xmesh_agent import paths
from xmesh_agent.mmp.cmb import CMB, legacy_key

STORE_FILE = "cmbs.db"
MIN_PREFIX = 6
"""Hex digits a prefix must carry: shorter ones match too much to mean anything."""
CANDIDATES_SHOWN = 5
_HEX = re.compile(r"^[0-9a-f]+$")


class KeyLookupError(ValueError):
    """A key that names no CMB, or more than one (the message lists the candidates)."""


@dataclass(frozen=True)
class HeldCMB:
    """A CMB as one peer holds it: who stored it, from whom ('own' or the sender's name), when."""

    cmb: CMB
    peer: str
    source: str
    received_at: int


class StoreReader:
    """One peer's store, opened read-only (URI `mode=ro`): safe beside the running peer."""

    def __init__(self, peer: str, path: Path):
        self.peer = peer
        self.path = path
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _held(self, row: tuple) -> HeldCMB:
        body, source, received_at = row
        return HeldCMB(CMB.from_wire(json.loads(body)), self.peer, source, received_at)

    def get(self, key: str) -> HeldCMB | None:
        row = self.db.execute("SELECT body, source, received_at FROM cmbs WHERE key = ?", (key,)).fetchone()
        return self._held(row) if row else None

    def keys_with_prefix(self, prefix: str, limit: int = CANDIDATES_SHOWN + 1) -> list[str]:
        """Keys starting with `prefix` (a range scan of the primary key index)."""
        rows = self.db.execute(
            "SELECT key FROM cmbs WHERE key >= ? AND key < ? ORDER BY key LIMIT ?",
            (prefix, prefix + "\U0010ffff", limit),
        ).fetchall()
        return [r[0] for r in rows]

    def keys_with_stock_prefix(self, prefix: str, limit: int = CANDIDATES_SHOWN + 1) -> list[str]:
        """Our keys of the CMBs whose stock `cmb-` key (or legacy `cmb-` key) starts with `prefix`.

        Stock keys are not stored: each held CMB's is recomputed from its texts (a full scan).
        """
        from xmesh_agent.mmp.dialects.stock_keys import stock_key_for

        found: list[str] = []
        for (body,) in self.db.execute("SELECT body FROM cmbs ORDER BY rowid DESC"):
            cmb = CMB.from_wire(json.loads(body))
            if stock_key_for(cmb).startswith(prefix) or legacy_key(cmb.texts()).startswith(prefix):
                found.append(cmb.key)
                if len(found) >= limit:
                    break
        return found

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM cmbs").fetchone()[0]


def local_peers() -> list[str]:
    """Peers of this machine (this xmesh home) that have a CMB store, by name."""
    base = paths.xmesh_home() / "peers"
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / STORE_FILE).is_file())


def store_path(peer: str) -> Path:
    return paths.peer_dir(peer) / STORE_FILE


def open_reader(peer: str) -> StoreReader:
    """The peer's store, read-only; KeyLookupError (one line) when this machine has no such store."""
    path = store_path(peer)
    if not path.is_file():
        known = local_peers()
        hint = f"peers with a store here: {', '.join(known)}" if known else "no peer has run on this machine"
        raise KeyLookupError(f"no store for peer {peer!r} under {paths.xmesh_home()} ({hint})")
    try:
        return StoreReader(peer, path)
    except sqlite3.Error as exc:
        raise KeyLookupError(f"cannot open {peer}'s store {path}: {exc}") from None


def open_readers(peer: str | None = None) -> list[StoreReader]:
    """One peer's store, or every local peer's when `peer` is None."""
    names = [peer] if peer else local_peers()
    return [open_reader(name) for name in names]


def normalise_key(text: str) -> str:
    """What a person typed, as a key or key prefix: trimmed, without the demo's trailing ellipsis."""
    key = text.strip().rstrip("…").rstrip(".").strip().lower()
    if _HEX.match(key):
        key = "cmb1-" + key
    return key


def check_key(key: str) -> bool:
    """Is the normalised `key` well formed? True for a stock `cmb-` key (or prefix), False for `cmb1-`.

    KeyLookupError (one line) for anything else, or a prefix too short to mean anything.
    """
    stock = key.startswith("cmb-")
    digits = key[len("cmb-") :] if stock else key[len("cmb1-") :]
    if not (stock or key.startswith("cmb1-")) or not _HEX.match(digits or "x"):
        raise KeyLookupError(f"{key!r} is not a CMB key (cmb1-<hex>, or a stock cmb-<hex>)")
    if len(digits) < MIN_PREFIX:
        raise KeyLookupError(f"key prefix {key!r} is too short: give at least {MIN_PREFIX} hex digits")
    return stock


def resolve_key(text: str, readers: list[StoreReader]) -> str:
    """The one full key `text` names in these stores. KeyLookupError (one line) otherwise."""
    key = normalise_key(text)
    stock = check_key(key)
    if not readers:
        raise KeyLookupError("no peer store on this machine to look the key up in")
    if stock:
        found = sorted({k for r in readers for k in r.keys_with_stock_prefix(key)})
    else:
        found = sorted({k for r in readers for k in r.keys_with_prefix(key)})
    if not found:
        where = ", ".join(r.peer for r in readers)
        raise KeyLookupError(f"no CMB with key {text.strip()!r} in the store of {where}")
    if len(found) > 1:
        shown = ", ".join(found[:CANDIDATES_SHOWN]) + (", ..." if len(found) > CANDIDATES_SHOWN else "")
        raise KeyLookupError(f"key prefix {text.strip()!r} is ambiguous: {shown}")
    return found[0]


def held_everywhere(key: str, readers: list[StoreReader]) -> list[HeldCMB]:
    """Every store's copy of `key` (one per peer that holds it)."""
    return [h for h in (r.get(key) for r in readers) if h is not None]


def close_all(readers: list[StoreReader]) -> None:
    for reader in readers:
        reader.close()


@dataclass(frozen=True)
class SignatureState:
    signed: bool
    verified: bool | None
    """True/False: checked against a key known here; None: no key for the author here."""
    key_source: str
    """Whose key checked it: "local key", "pinned on first use", "trusted (operator-pinned)", or ""."""


def signature_state(held: HeldCMB) -> SignatureState:
    """Does the CMB's mmp-sig-v1 signature verify with a key this machine knows for its author?

    Keys tried: the author's own key if it lives here (a local peer or operator), the key the
    holding peer pinned on first contact, and the group's operator-pinned trust store.
    """
    from xmesh_agent.identity import load_identity
    from xmesh_agent.mmp import trust
    from xmesh_agent.mmp.cmb import verify_cmb_signature

    cmb = held.cmb
    if not cmb.sig:
        return SignatureState(False, None, "")
    candidates: list[tuple[str, bytes]] = []
    try:
        local = load_identity(cmb.created_by)
    except (OSError, ValueError):
        local = None
    if local is not None:
        candidates.append(("local key", local.public_key))
    pins = store_path(held.peer).with_name(STORE_FILE + ".verify")
    if pins.is_file():
        try:
            with closing(sqlite3.connect(f"file:{pins}?mode=ro", uri=True)) as db:
                row = db.execute("SELECT public_key FROM pins WHERE name = ?", (cmb.created_by,)).fetchone()
            if row:
                candidates.append((f"pinned by {held.peer} on first contact", bytes(row[0])))
        except sqlite3.Error:
            pass
    try:
        trusted = trust.get(cmb.group or "", cmb.created_by) if cmb.group else None
    except (OSError, ValueError):
        trusted = None
    if trusted is not None:
        candidates.append(("trusted (operator-pinned)", trusted))
    if not candidates:
        return SignatureState(True, None, "")
    for source, key in candidates:
        if verify_cmb_signature(cmb, key):
            return SignatureState(True, True, source)
    return SignatureState(True, False, candidates[0][0])


def describe(held: list[HeldCMB]) -> dict[str, Any]:
    """One CMB in full, as `show --json` prints it: fields, mood, lineage, signature, who holds it."""
    from xmesh_agent.mmp.dialects.stock_keys import stock_key_for

    cmb = held[0].cmb
    mood = cmb.fields.get("mood")
    sig = signature_state(held[0])
    return {
        "key": cmb.key,
        "stock_key": stock_key_for(cmb),
        "author": cmb.created_by,
        "created_at": cmb.created_at,
        "group": cmb.group,
        "to": cmb.to,
        "fields": cmb.texts(),
        "mood": {"valence": mood.valence, "arousal": mood.arousal} if mood else None,
        "parents": cmb.parents,
        "ancestors": cmb.ancestors,
        "signature": {
            "alg": cmb.sig_alg,
            "signed": sig.signed,
            "verified": sig.verified,
            "key": sig.key_source,
        },
        "held_by": [{"peer": h.peer, "from": h.source, "received_at": h.received_at} for h in held],
    }
