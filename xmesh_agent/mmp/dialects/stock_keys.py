"""Stock reference node keys and the `mmp-sig-v2` signature suite (byte-exact with sym 0.12.x).

Block key: `cmb-` + a Merkle root (leaves 0x00, nodes 0x01, odd node promoted) over seven
per-category keys SHA-256("mmp-cmb-v1\n" ‖ lp(name) ‖ lp(NFC(text))). It is content-only: no
author, time or parents. The signature binds key, author NAME, time, room, to, the block
parents and a commitment to per-category parents. See docs/interop.md.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from xmesh_agent.identity import NodeIdentity, b64url_decode, b64url_encode, verify_signature
from xmesh_agent.mmp.cmb import CAT7, CMB, NEUTRAL, SIG_ALG

KEY_DOMAIN = b"mmp-cmb-v1\n"
SIG_SUITE = "mmp-sig-v2"
PARENTS_DOMAIN = b"mmp-fp-v1\n"
STOCK_KEY_RE = re.compile(r"^cmb-[0-9a-f]{64}$")


class StockDialectError(ValueError):
    """A record that is not a well-formed stock record (or cannot be signed as one)."""


class StockEncryptedError(StockDialectError):
    """The record's categories are end-to-end ciphertext: decrypt (xmesh_agent.mmp.e2e) first."""


# ── keys ──────────────────────────────────────────────────────────────────────────────────


def _lp(value: str | bytes) -> bytes:
    raw = value if isinstance(value, bytes) else value.encode("utf-8")
    return str(len(raw)).encode("ascii") + b":" + raw


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def category_text(value: Any) -> str:
    """A category's text as stock nodes read it: a bare string or `{text}`; anything else is ""."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, Mapping):
        text = value.get("text") or ""
    else:
        text = ""
    return text if isinstance(text, str) else ""


def category_key(name: str, text: str) -> str:
    """Per-category address: SHA-256(domain ‖ lp(name) ‖ lp(NFC(text))), 64 hex."""
    pre = KEY_DOMAIN + _lp(name) + _lp(_nfc(text))
    return hashlib.sha256(pre).hexdigest()


def category_keys(categories: Mapping[str, Any]) -> list[str]:
    """The seven category keys in CAT7 order; an absent category hashes its empty text."""
    return [category_key(f, category_text(categories.get(f))) for f in CAT7]


def merkle_root(leaf_hexes: Sequence[str]) -> str:
    """Binary Merkle root, leaves under 0x00, nodes under 0x01, an odd node promoted unchanged."""
    level = [hashlib.sha256(b"\x00" + bytes.fromhex(h)).digest() for h in leaf_hexes]
    if not level:
        return hashlib.sha256(b"").hexdigest()
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level), 2):
            if i + 1 < len(level):
                nxt.append(hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest())
            else:
                nxt.append(level[i])
        level = nxt
    return level[0].hex()


def block_key(categories: Mapping[str, Any]) -> str:
    """The stock block key: `cmb-` + Merkle root over the seven category keys. Content only."""
    return "cmb-" + merkle_root(category_keys(categories))


def is_stock_key(key: object) -> bool:
    """Stock nodes accept exactly `cmb-` + 64 lowercase hex and refuse every other key form."""
    return isinstance(key, str) and STOCK_KEY_RE.fullmatch(key) is not None


def flat_root_key(categories: Mapping[str, Any]) -> str:
    """The pre-Merkle stock root address (flat preimage, `root` tag); seen only in old stores."""
    pre = bytearray(KEY_DOMAIN)
    for f in CAT7:
        pre += _lp(_nfc(category_text(categories.get(f))))
    pre += _lp("root")
    return "cmb-" + hashlib.sha256(bytes(pre)).hexdigest()


def categories_of(record: Mapping[str, Any]) -> Mapping[str, Any]:
    cats = record.get("categories")
    if isinstance(cats, str):
        raise StockEncryptedError("record categories are e2e ciphertext; decrypt before reading")
    if not isinstance(cats, Mapping):
        raise StockDialectError("record carries no categories object")
    return cats


def recompute_stock_key(record: Mapping[str, Any]) -> str:
    """The block key the record's categories address to (what `metadata.key` must equal)."""
    return block_key(categories_of(record))


def stock_key_for(cmb: CMB) -> str:
    """The stock block key of an internal CMB (same texts, same address on a stock node)."""
    return block_key({f: cmb.text(f) or NEUTRAL for f in CAT7})


# ── mmp-sig-v2 ────────────────────────────────────────────────────────────────────────────


def _utf8_sorted(items: Sequence[Any]) -> list[str]:
    return sorted((str(x) for x in items), key=lambda s: s.encode("utf-8"))


def _decimal(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 2**53 - 1:
        raise StockDialectError(f"mmp-sig-v2 needs a non-negative safe integer, got {value!r}")
    return str(value)


def category_parents_commitment(categories: Mapping[str, Any] | None) -> str:
    """`mmp-fp-v1`: per category lp(name), lp(count), lp(each parent, UTF-8 sorted); SHA-256 hex."""
    pre = bytearray(PARENTS_DOMAIN)
    for f in CAT7:
        value = categories.get(f) if isinstance(categories, Mapping) else None
        meta = value.get("meta") if isinstance(value, Mapping) else None
        parents = meta.get("parents") if isinstance(meta, Mapping) else None
        refs = _utf8_sorted(parents) if isinstance(parents, list) else []
        pre += _lp(f) + _lp(str(len(refs)))
        for ref in refs:
            pre += _lp(ref)
    return hashlib.sha256(bytes(pre)).hexdigest()


def stock_signing_payload(record: Mapping[str, Any]) -> bytes:
    """The `mmp-sig-v2` preimage: binds key, author, time, audience, parents and category descent.

    Nothing is defaulted except `room`/`to` (absent means broadcast/undirected), matching the
    stock signer; a record missing key, author or time is refused rather than signed.
    """
    meta = record.get("metadata")
    if not isinstance(meta, Mapping):
        raise StockDialectError("record has no metadata section")
    key = meta.get("key")
    if not is_stock_key(key):
        raise StockDialectError(f"not a stock block key: {key!r}")
    author = meta.get("createdBy")
    if not isinstance(author, str) or not author:
        raise StockDialectError("record has no author (metadata.createdBy)")
    lineage = meta.get("lineage")
    parents: list[Any] = []
    if lineage is not None:
        if not isinstance(lineage, Mapping):
            raise StockDialectError("metadata.lineage must be an object or null")
        raw = lineage.get("parents")
        if raw is not None and not isinstance(raw, list):
            raise StockDialectError("metadata.lineage.parents must be a list")
        parents = raw or []
    ordered = _utf8_sorted(parents)
    room = meta.get("room")
    to = meta.get("to")
    cats = record.get("categories")
    out = bytearray(SIG_SUITE.encode("ascii") + b"\n")
    out += _lp(key) + _lp(_nfc(author)) + _lp(_decimal(meta.get("createdTimestamp")))
    out += _lp(_nfc("" if room is None else str(room)))
    out += _lp(_nfc("" if to is None else str(to)))
    out += _lp(str(len(ordered)))
    for parent in ordered:
        out += _lp(parent)
    out += _lp(category_parents_commitment(cats if isinstance(cats, Mapping) else None))
    return bytes(out)


def sign_stock_record(record: dict[str, Any], identity: NodeIdentity) -> dict[str, Any]:
    """Set `metadata.sig` (base64url, unpadded) and `metadata.sigAlg` in place; returns the record."""
    signature = identity.sign(stock_signing_payload(record))
    record["metadata"]["sig"] = b64url_encode(signature)
    record["metadata"]["sigAlg"] = SIG_ALG
    return record


def public_key_bytes(public_key: bytes | str) -> bytes | None:
    """The 32 raw ed25519 key bytes, from bytes or base64url; None when it is not such a key."""
    if isinstance(public_key, bytes):
        return public_key if len(public_key) == 32 else None
    try:
        raw = b64url_decode(public_key)
    except (ValueError, UnicodeEncodeError):
        return None
    return raw if len(raw) == 32 else None


def verify_stock_record(
    record: Mapping[str, Any], public_key: bytes | str, *, check_content: bool = True
) -> bool:
    """True iff the record is signed by `public_key` under mmp-sig-v2 AND its key matches its texts.

    Ed25519 is pinned: a `sigAlg` other than "ed25519" is refused, never followed. Ciphertext
    categories cannot be content-checked (the key needs the texts): decrypt first. With
    `check_content=False` only the signature is checked, which is all a relay-side observer of
    an e2e record can do (exact when no category carries descent parents).
    """
    if not isinstance(record, Mapping):
        return False
    meta = record.get("metadata")
    if not isinstance(meta, Mapping) or meta.get("sigAlg") != SIG_ALG:
        return False
    sig = meta.get("sig")
    raw_key = public_key_bytes(public_key)
    if not isinstance(sig, str) or raw_key is None:
        return False
    try:
        payload = stock_signing_payload(record)
        signature = b64url_decode(sig)
        if check_content and recompute_stock_key(record) != meta.get("key"):
            return False
    except (StockDialectError, ValueError, UnicodeEncodeError):
        return False
    return verify_signature(raw_key, payload, signature)


def check_stock_audience(record: Mapping[str, Any], room: str, node_id: str) -> str | None:
    """None if the record is addressed to us, else the reason a stock node would give."""
    meta = record.get("metadata") if isinstance(record, Mapping) else None
    if not isinstance(meta, Mapping):
        return "unreadable-audience"
    if not is_stock_key(meta.get("key")):
        return "unclassifiable-key"
    rec_room = meta.get("room")
    if rec_room not in (None, "") and _nfc(str(rec_room)) != _nfc(room):
        return "wrong-audience"
    to = meta.get("to")
    if to not in (None, "") and _nfc(str(to)) != _nfc(node_id):
        return "wrong-recipient"
    return None
