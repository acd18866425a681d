"""The stock reference node's CMB record: keys, the `mmp-sig-v2` suite, and a codec to our CMB.

Stock `sym` 0.12.x nodes do not send the spec's flat CMB. A `cmb` frame carries a two-section
record: `categories` (CAT7 texts, each with its own 64-hex key and descent) and `metadata`
(block key `cmb-` + 64 hex, author NAME, time, audience, signature), plus a receiver-local
top-level `lineage`. This module converts between that record and our one internal model
(`xmesh_agent.mmp.cmb.CMB`, keyed by our `cmb1-` address). See docs/interop.md.

Key mapping: the stock block key is a pure function of the seven texts (content-only, no
author, no parents), so `stock_key_for(cmb)` recomputes it from any internal CMB and no
persistent table is required; `StockDecoded.aliases` gives the {stock key: cmb1 key} pair
for stores that want to resolve stock-keyed lineage parents.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import CAT7, CMB, NEUTRAL, CMBField, Lineage, content_key
from xmesh_agent.mmp.dialects.stock_keys import (
    SIG_SUITE,
    StockDialectError,
    StockEncryptedError,
    block_key,
    categories_of,
    category_key,
    category_keys,
    category_parents_commitment,
    category_text,
    check_stock_audience,
    flat_root_key,
    is_stock_key,
    merkle_root,
    recompute_stock_key,
    sign_stock_record,
    stock_key_for,
    stock_signing_payload,
    verify_stock_record,
)

__all__ = [
    "SIG_SUITE",
    "Signer",
    "StockDecoded",
    "StockDialectError",
    "StockEncryptedError",
    "block_key",
    "build_stock_categories",
    "build_stock_record",
    "category_key",
    "category_keys",
    "category_parents_commitment",
    "check_stock_audience",
    "decode_stock_cmb",
    "encode_stock_cmb",
    "encode_stock_record",
    "flat_root_key",
    "is_stock_key",
    "merkle_root",
    "recompute_stock_key",
    "sign_stock_record",
    "stock_key_for",
    "stock_signing_payload",
    "verify_stock_record",
]

Signer = Callable[[dict[str, Any], NodeIdentity], dict[str, Any]]
REMIX_METHOD = "SVAF-v2"


# ── codec ─────────────────────────────────────────────────────────────────────────────────

_NUMBER = (int, float)


def _js_number(value: float | int) -> float | int:
    """JS prints integral numbers without a fraction; keep them ints so re-encoding is byte-exact."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@dataclass
class StockDecoded:
    """A decoded stock `cmb`: our CMB plus everything needed to answer the stock peer in kind."""

    cmb: CMB
    record: dict[str, Any]
    key: str
    cmb1_key: str
    sig: str | None
    sig_alg: str | None
    parents: list[str] = field(default_factory=list)
    category_parents: dict[str, list[str]] = field(default_factory=dict)
    timestamp: int | None = None
    anchor: bool = False
    directed_to: str | None = None
    relayed_from: str | None = None
    relayed_from_name: str | None = None
    key_matches: bool = False

    @property
    def aliases(self) -> dict[str, str]:
        return {self.key: self.cmb1_key}


def _unwrap(frame_or_record: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(record, context) from a relay envelope, a `cmb` frame, or a bare record."""
    ctx: dict[str, Any] = {}
    obj: Any = frame_or_record
    if isinstance(obj, Mapping) and "payload" in obj and isinstance(obj.get("payload"), Mapping):
        ctx["from"] = obj.get("from")
        ctx["fromName"] = obj.get("fromName")
        obj = obj["payload"]
    if isinstance(obj, Mapping) and obj.get("type") == "cmb":
        ctx["timestamp"] = obj.get("timestamp")
        ctx["anchor"] = obj.get("_anchor") is True
        ctx["to"] = obj.get("to") if obj.get("directed") is True else None
        obj = obj.get("cmb")
    if not isinstance(obj, Mapping) or "metadata" not in obj:
        raise StockDialectError("not a stock cmb frame or record (no metadata section)")
    return dict(obj), ctx


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def decode_stock_cmb(
    frame_or_record: Mapping[str, Any],
    *,
    author_node_id: str | None = None,
    aliases: Mapping[str, str] | None = None,
) -> StockDecoded:
    """Decode a stock record (or `cmb` frame, or relay envelope) into our CMB.

    The CMB's key is our `cmb1-` address over the same texts. For a remix that address binds
    the minting node's id (`author_node_id`, e.g. the handshake peer), and parents are mapped
    through `aliases` (stock key -> cmb1 key) where known, else kept as stock keys. The CMB
    carries no signature: the stock one is over a different payload and is kept in `sig`.
    Raises StockEncryptedError for ciphertext categories and StockDialectError for bad shape.
    """
    if not isinstance(frame_or_record, Mapping):
        raise StockDialectError("frame must be a JSON object")
    record, ctx = _unwrap(frame_or_record)
    cats = categories_of(record)
    meta = record["metadata"]
    if not isinstance(meta, Mapping):
        raise StockDialectError("metadata must be an object")
    key = meta.get("key")
    if not is_stock_key(key):
        raise StockDialectError(f"not a stock block key: {key!r}")
    author = meta.get("createdBy")
    created = meta.get("createdTimestamp")
    if not isinstance(author, str) or not author:
        raise StockDialectError("record has no author")
    if isinstance(created, bool) or not isinstance(created, int):
        raise StockDialectError("record has no integer createdTimestamp")

    fields: dict[str, CMBField] = {}
    category_parents: dict[str, list[str]] = {}
    for f in CAT7:
        value = cats.get(f)
        text = category_text(value) or NEUTRAL
        valence = arousal = None
        if f == "mood" and isinstance(value, Mapping):
            v, a = value.get("valence"), value.get("arousal")
            if isinstance(v, _NUMBER) and isinstance(a, _NUMBER) and -1 <= v <= 1 and -1 <= a <= 1:
                valence, arousal = float(v), float(a)
        fields[f] = CMBField(text=text, valence=valence, arousal=arousal)
        cmeta = value.get("meta") if isinstance(value, Mapping) else None
        cparents = cmeta.get("parents") if isinstance(cmeta, Mapping) else None
        if isinstance(cparents, list) and cparents:
            category_parents[f] = [str(p) for p in cparents]

    lineage = meta.get("lineage")
    raw_parents = lineage.get("parents") if isinstance(lineage, Mapping) else None
    parents = [p for p in raw_parents if isinstance(p, str) and p] if isinstance(raw_parents, list) else []
    method = lineage.get("method") if isinstance(lineage, Mapping) else None
    alias = aliases or {}
    internal_parents = [alias.get(p, p) for p in parents]
    texts = {f: fields[f].text for f in CAT7}
    if internal_parents:
        if not author_node_id:
            raise StockDialectError("a remix record needs author_node_id for its cmb1- address")
        cmb1 = content_key(texts, internal_parents, author_node_id)
    else:
        cmb1 = content_key(texts)

    top = record.get("lineage")
    ancestors: list[str] = []
    if isinstance(top, Mapping) and isinstance(top.get("ancestors"), list):
        ancestors = [alias.get(a, a) for a in top["ancestors"] if isinstance(a, str) and a]
    cmb = CMB(
        key=cmb1,
        created_by=author,
        created_at=created,
        fields=fields,
        group=_opt_str(meta.get("room")),
        to=_opt_str(meta.get("to")),
        lineage=Lineage(
            parents=internal_parents,
            ancestors=ancestors or list(internal_parents),
            method=method if isinstance(method, str) else REMIX_METHOD,
        )
        if internal_parents
        else None,
    )
    try:
        matches = recompute_stock_key(record) == key
    except StockDialectError:
        matches = False
    ts = ctx.get("timestamp")
    return StockDecoded(
        cmb=cmb,
        record=record,
        key=key,
        cmb1_key=cmb1,
        sig=_opt_str(meta.get("sig")),
        sig_alg=_opt_str(meta.get("sigAlg")),
        parents=parents,
        category_parents=category_parents,
        timestamp=ts if isinstance(ts, int) and not isinstance(ts, bool) else None,
        anchor=bool(ctx.get("anchor")),
        directed_to=_opt_str(ctx.get("to")),
        relayed_from=_opt_str(ctx.get("from")),
        relayed_from_name=_opt_str(ctx.get("fromName")),
        key_matches=matches,
    )


def build_stock_categories(
    cmb: CMB, category_parents: Mapping[str, Sequence[str]] | None = None
) -> dict[str, Any]:
    """The `categories` section a stock node would mint for these texts (CAT7 order)."""
    cparents = category_parents or {}
    out: dict[str, Any] = {}
    for f in CAT7:
        fld = cmb.fields.get(f)
        text = (fld.text if fld else "") or NEUTRAL
        entry: dict[str, Any] = {"text": text}
        if f == "mood" and fld is not None and (fld.valence is not None or fld.arousal is not None):
            entry["valence"] = _js_number(fld.valence or 0)
            entry["arousal"] = _js_number(fld.arousal or 0)
        entry["meta"] = {"key": category_key(f, text), "parents": list(cparents.get(f, []))}
        out[f] = entry
    return out


def build_stock_record(
    cmb: CMB,
    created_by: str,
    room: str | None,
    to: str | None = None,
    *,
    parents: Sequence[str] | None = None,
    category_parents: Mapping[str, Sequence[str]] | None = None,
    ancestors: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The UNSIGNED stock record for these texts, in stock field order (sign it next).

    `parents` are STOCK keys (use `stock_key_for` on the parent CMBs). The top-level `lineage`
    mirrors what a stock store attaches before sending: parents, then known ancestors.
    """
    categories = build_stock_categories(cmb, category_parents)
    parent_keys = list(parents or [])
    for p in parent_keys:
        if not is_stock_key(p):
            raise StockDialectError(f"stock lineage parents must be stock keys, got {p!r}")
    return {
        "categories": categories,
        "metadata": {
            "key": block_key(categories),
            "createdBy": created_by,
            "createdTimestamp": cmb.created_at,
            "lineage": {"parents": parent_keys, "method": REMIX_METHOD} if parent_keys else None,
            "room": room,
            "to": to,
        },
        "lineage": {
            "parents": parent_keys,
            "ancestors": list(dict.fromkeys([*parent_keys, *(ancestors or [])])),
            "method": REMIX_METHOD if parent_keys else None,
        },
    }


def encode_stock_record(
    cmb: CMB,
    identity: NodeIdentity,
    room: str,
    to: str | None = None,
    *,
    parents: Sequence[str] | None = None,
    category_parents: Mapping[str, Sequence[str]] | None = None,
    ancestors: Sequence[str] | None = None,
    sign: Signer = sign_stock_record,
) -> dict[str, Any]:
    """A stock record for our CMB signed by `identity` (createdBy = its name): under mmp-sig-v2 by
    default, under mmp-sig-v2.0 with `sign=sign_as_v2` (dialects/v2.py)."""
    record = build_stock_record(
        cmb,
        identity.name,
        room,
        to,
        parents=parents,
        category_parents=category_parents,
        ancestors=ancestors,
    )
    return sign(record, identity)


def encode_stock_cmb(
    cmb: CMB,
    identity: NodeIdentity,
    room: str,
    to: str | None = None,
    *,
    timestamp: int | None = None,
    anchor: bool = False,
    parents: Sequence[str] | None = None,
    category_parents: Mapping[str, Sequence[str]] | None = None,
    sign: Signer = sign_stock_record,
) -> dict[str, Any]:
    """The whole `cmb` frame a stock node accepts: {type, timestamp, cmb: record[, to, directed]},
    its record signed by `sign` (mmp-sig-v2 by default; `sign_as_v2` for a v2.0 peer).

    A directed send also marks the frame with `to` + `directed: true`, which is what makes a
    stock receiver surface it to its agent even when SVAF declines to store it.
    """
    record = encode_stock_record(
        cmb, identity, room, to, parents=parents, category_parents=category_parents, sign=sign
    )
    return stock_cmb_frame(record, cmb.created_at if timestamp is None else timestamp, to, anchor=anchor)


def stock_cmb_frame(
    record: dict[str, Any], timestamp: int, to: str | None = None, *, anchor: bool = False
) -> dict[str, Any]:
    """The frame around a signed record: {type, timestamp, cmb: record[, _anchor][, to, directed]}."""
    frame: dict[str, Any] = {"type": "cmb", "timestamp": timestamp, "cmb": record}
    if anchor:
        frame["_anchor"] = True
    if to:
        frame["to"] = to
        frame["directed"] = True
    return frame
