"""The stock node's MMP v2.0 record: the `mmp-sig-v2.0` suite, its reader and its emitter.

A stock `sym` 0.12.x node with its v2.0 emitter switched on sends the same two-section record as
0.12.1 (same `cmb-` Merkle key, same categories, same e2e and handshake) plus five metadata
fields: `addressScheme`, `signatureSuite: "mmp-sig-v2.0"`, `createdByNodeId`, `application` and
`assertionId`. The signature is then over a different preimage, which additionally binds the
protocol version, the address scheme, the author's nodeId and a commitment to the optional
application section. A record names its own suite, so the dialect is read per record and learned
per connection (docs/interop.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from xmesh_agent.identity import NodeIdentity, b64url_decode, b64url_encode, verify_signature
from xmesh_agent.mmp.cmb import SIG_ALG
from xmesh_agent.mmp.dialects.stock_keys import (
    SIG_SUITE,
    StockDialectError,
    category_parents_commitment,
    is_stock_key,
    public_key_bytes,
    recompute_stock_key,
    verify_stock_record,
)

V2_SUITE = "mmp-sig-v2.0"
PROTOCOL_VERSION = "2.0"
ADDRESS_SCHEME = "mmp-cmb-merkle-v2"
APP_DOMAIN = b"mmp-app-v1\n"
MAX_APPLICATION_BYTES = 524288
ASSERTION_PREFIX = "asrt-"
_MEDIA_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+/-]*$")
_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]*$")
_V2_FIELDS = ("addressScheme", "signatureSuite", "createdByNodeId", "application", "assertionId")

__all__ = [
    "ADDRESS_SCHEME",
    "PROTOCOL_VERSION",
    "V2_SUITE",
    "application_commitment",
    "assertion_id",
    "sign_as_v2",
    "is_v2_record",
    "record_suite",
    "sign_v2_record",
    "to_v2_record",
    "v2_signing_payload",
    "verify_any_stock_record",
    "verify_v2_record",
]


def _lp(value: str | bytes) -> bytes:
    raw = value if isinstance(value, bytes) else value.encode("utf-8")
    return str(len(raw)).encode("ascii") + b":" + raw


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _decimal(value: object, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**53 - 1:
        raise StockDialectError(f"{V2_SUITE}: {what} must be a non-negative safe integer, got {value!r}")
    return str(value)


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ── which suite ───────────────────────────────────────────────────────────────────────────


def record_suite(record: Mapping[str, Any]) -> str | None:
    """The suite a record is signed under: V2_SUITE, SIG_SUITE (0.12.1, no tag), or None (unknown).

    The tag selects the preimage and is itself covered by the v2.0 preimage (its domain tag), so
    stripping it cannot make a v2.0 signature verify under the older suite.
    """
    meta = record.get("metadata") if isinstance(record, Mapping) else None
    if not isinstance(meta, Mapping):
        return None
    suite = meta.get("signatureSuite")
    if suite is None or suite == SIG_SUITE:
        return SIG_SUITE
    return V2_SUITE if suite == V2_SUITE else None


def is_v2_record(record: Mapping[str, Any]) -> bool:
    return record_suite(record) == V2_SUITE


# ── the preimage ──────────────────────────────────────────────────────────────────────────


def _b64url_bytes(text: str) -> bytes:
    if not _B64URL_RE.fullmatch(text):
        raise StockDialectError("mmp-app-v1: application data must be unpadded base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise StockDialectError("mmp-app-v1: application data is not base64url") from exc
    if base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=") != text:
        raise StockDialectError("mmp-app-v1: application data is not canonical base64url")
    return raw


def application_commitment(application: Mapping[str, Any] | None) -> str:
    """`mmp-app-v1`: the signed commitment to the optional application section (hex SHA-256).

    Absent -> a fixed sentinel, so "no application" differs from every present one. Present ->
    its media type, schema, encoding, length and digest; the digest must match the bytes carried.
    """
    if application is None:
        return _sha256_hex(APP_DOMAIN + _lp("0"))
    if not isinstance(application, Mapping):
        raise StockDialectError("mmp-app-v1: application must be an object or null")
    data, encoding = application.get("data"), application.get("encoding")
    if encoding != "base64url" or not isinstance(data, str):
        raise StockDialectError("mmp-app-v1: application data must be unpadded base64url")
    raw = _b64url_bytes(data)
    length = application.get("byteLength")
    if isinstance(length, bool) or not isinstance(length, int) or len(raw) != length:
        raise StockDialectError("mmp-app-v1: application byteLength mismatch")
    if length > MAX_APPLICATION_BYTES:
        raise StockDialectError(f"mmp-app-v1: application exceeds {MAX_APPLICATION_BYTES} bytes")
    digest = application.get("digest")
    if digest != "sha256-" + _sha256_hex(raw):
        raise StockDialectError("mmp-app-v1: application digest mismatch")
    media = application.get("mediaType")
    if not isinstance(media, str) or not _MEDIA_TYPE_RE.fullmatch(media):
        raise StockDialectError("mmp-app-v1: mediaType must be lowercase ASCII without parameters")
    schema = application.get("schema")
    if schema is not None and not isinstance(schema, str):
        raise StockDialectError("mmp-app-v1: schema must be a string")
    pre = APP_DOMAIN + _lp("1") + _lp(media) + _lp(_nfc(schema or "")) + _lp("base64url")
    pre += _lp(_decimal(length, "byteLength")) + _lp(digest)
    return _sha256_hex(pre)


_ABSENT = object()


def _room_text(value: Any) -> str:
    """`room` as the signer renders it: a string, or the literal text of JSON null / absence."""
    if value is _ABSENT:
        return "undefined"
    if value is None:
        return "null"
    if not isinstance(value, str):
        raise StockDialectError(f"{V2_SUITE}: metadata.room must be a string or null")
    return _nfc(value)


def v2_signing_payload(record: Mapping[str, Any]) -> bytes:
    """The `mmp-sig-v2.0` preimage, byte-exact with the stock signer; refuses what is not v2.0.

    Raw domain tag, then netstring-framed: protocol version, address scheme, key, author nodeId,
    author name (NFC), time, room (NFC), to, sorted block parents, the per-category parents
    commitment and the application commitment.
    """
    meta = record.get("metadata") if isinstance(record, Mapping) else None
    if not isinstance(meta, Mapping):
        raise StockDialectError(f"{V2_SUITE}: record has no metadata section")
    if meta.get("signatureSuite") != V2_SUITE:
        raise StockDialectError(f"{V2_SUITE}: signatureSuite must be {V2_SUITE}")
    if meta.get("addressScheme") != ADDRESS_SCHEME:
        raise StockDialectError(f"{V2_SUITE}: addressScheme must be {ADDRESS_SCHEME}")
    key = meta.get("key")
    if not is_stock_key(key):
        raise StockDialectError(f"{V2_SUITE}: not a stock block key: {key!r}")
    node_id, author = meta.get("createdByNodeId"), meta.get("createdBy")
    if not isinstance(node_id, str) or not node_id:
        raise StockDialectError(f"{V2_SUITE}: createdByNodeId is required")
    if not isinstance(author, str) or not author:
        raise StockDialectError(f"{V2_SUITE}: createdBy is required")
    to = meta.get("to")
    if to is not None and not isinstance(to, str):
        raise StockDialectError(f"{V2_SUITE}: metadata.to must be a string or null")
    lineage = meta.get("lineage")
    parents: Sequence[Any] = []
    if lineage is not None:
        if not isinstance(lineage, Mapping):
            raise StockDialectError(f"{V2_SUITE}: metadata.lineage must be an object or null")
        raw = lineage.get("parents")
        if raw is not None and not isinstance(raw, list):
            raise StockDialectError(f"{V2_SUITE}: metadata.lineage.parents must be a list")
        parents = raw or []
    if not all(isinstance(p, str) for p in parents):
        raise StockDialectError(f"{V2_SUITE}: lineage parents must be strings")
    ordered = sorted(parents, key=lambda s: s.encode("utf-8"))
    cats = record.get("categories")
    out = bytearray(V2_SUITE.encode("ascii") + b"\n")
    out += _lp(PROTOCOL_VERSION) + _lp(ADDRESS_SCHEME) + _lp(key) + _lp(node_id)
    out += _lp(_nfc(author)) + _lp(_decimal(meta.get("createdTimestamp"), "createdTimestamp"))
    out += _lp(_room_text(meta.get("room", _ABSENT))) + _lp(to or "")
    out += _lp(str(len(ordered)))
    for parent in ordered:
        out += _lp(parent)
    out += _lp(category_parents_commitment(cats if isinstance(cats, Mapping) else None))
    out += _lp(application_commitment(meta.get("application")))
    return bytes(out)


def assertion_id(record: Mapping[str, Any]) -> str:
    """Names which v2.0 assertion this is: `asrt-` + SHA-256 hex of its signing preimage."""
    return ASSERTION_PREFIX + _sha256_hex(v2_signing_payload(record))


# ── sign and verify ───────────────────────────────────────────────────────────────────────


def to_v2_record(record: Mapping[str, Any], node_id: str) -> dict[str, Any]:
    """An unsigned 0.12.1-shaped record made v2.0: the five fields appended in the stock order.

    Any old signature is dropped (a v2.0 signature replaces it, never sits beside it).
    """
    meta = {k: v for k, v in record["metadata"].items() if k not in ("sig", "sigAlg", *_V2_FIELDS)}
    meta.update(
        addressScheme=ADDRESS_SCHEME,
        signatureSuite=V2_SUITE,
        createdByNodeId=node_id,
        application=None,
    )
    out = dict(record)
    out["metadata"] = meta
    return out


def sign_v2_record(record: dict[str, Any], identity: NodeIdentity) -> dict[str, Any]:
    """Set `assertionId`, `sig` (base64url, unpadded) and `sigAlg` in place; returns the record."""
    meta = record["metadata"]
    if meta.get("createdByNodeId") != identity.node_id:
        raise StockDialectError(f"{V2_SUITE}: createdByNodeId must be the signer's nodeId")
    payload = v2_signing_payload(record)
    meta["assertionId"] = ASSERTION_PREFIX + _sha256_hex(payload)
    meta["sig"] = b64url_encode(identity.sign(payload))
    meta["sigAlg"] = SIG_ALG
    return record


def verify_v2_record(
    record: Mapping[str, Any],
    public_key: bytes | str,
    *,
    node_id: str | None = None,
    check_content: bool = True,
) -> bool:
    """True iff the record is a whole, genuine `mmp-sig-v2.0` record signed by `public_key`.

    Beyond the signature (Ed25519 pinned): `assertionId` must be present and re-derive from the
    preimage, `createdByNodeId` must be `node_id` when the caller knows whose key this is, and
    (with `check_content`) the block key must address the carried categories. Ciphertext
    categories can only be checked with `check_content=False` (decrypt first otherwise).
    """
    meta = record.get("metadata") if isinstance(record, Mapping) else None
    if not isinstance(meta, Mapping) or meta.get("sigAlg") != SIG_ALG:
        return False
    sig, raw_key = meta.get("sig"), public_key_bytes(public_key)
    if not isinstance(sig, str) or raw_key is None:
        return False
    if node_id is not None and meta.get("createdByNodeId") != node_id:
        return False
    try:
        payload = v2_signing_payload(record)
        signature = b64url_decode(sig)
        if check_content and recompute_stock_key(record) != meta.get("key"):
            return False
    except (StockDialectError, ValueError, UnicodeEncodeError):
        return False
    if meta.get("assertionId") != ASSERTION_PREFIX + _sha256_hex(payload):
        return False
    return verify_signature(raw_key, payload, signature)


def verify_any_stock_record(
    record: Mapping[str, Any],
    public_key: bytes | str,
    *,
    node_id: str | None = None,
    check_content: bool = True,
) -> bool:
    """Verify a stock record under the suite it names (0.12.1's or v2.0); unknown suites fail."""
    suite = record_suite(record)
    if suite == V2_SUITE:
        return verify_v2_record(record, public_key, node_id=node_id, check_content=check_content)
    if suite == SIG_SUITE:
        return verify_stock_record(record, public_key, check_content=check_content)
    return False


def sign_as_v2(record: dict[str, Any], identity: NodeIdentity) -> dict[str, Any]:
    """The signer `encode_stock_cmb` takes for a v2.0 peer: our nodeId into the record, then the
    mmp-sig-v2.0 signature."""
    return sign_v2_record(to_v2_record(record, identity.node_id), identity)
