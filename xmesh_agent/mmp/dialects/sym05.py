"""The sym 0.5.x dialect: what peers of the original xmesh-agent runtime (Node, sym 0.5.8) speak.

Those peers announce `version: "0.2.3"` like stock 0.12 nodes, but carry their group as `group`
(0.12 says `room`) and send the flat v0.2 CMB: `{key, createdBy, createdAt, fields: {<f>: {text,
vector}}, lineage: {parents, ancestors, method}}` with a legacy `cmb-` key (SHA-256/128 over the
`|`-joined texts) and NO signature. When both sides announced `e2ePublicKey`, `fields` is replaced
by base64(AES-256-GCM(JSON) ‖ tag) with the nonce in `_e2e.nonce`: the stock scheme, applied to
`fields` instead of `categories`. The dialect is picked per connection from the handshake; no
setting chooses it. See docs/interop.md ("sym 0.5.8 / original xmesh-agent peers").

Trust: the blocks are unsigned, so the verifier treats them as legacy unsigned blocks: `tofu` and
`open` accept them (tofu pins the delivering peer's handshake key), `strict` refuses them
(`untrusted-key`), and any identity that has ever signed to us is refused (`downgrade`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from xmesh_agent.clock import now_ms
from xmesh_agent.mmp.cmb import CAT7, CMB, NEUTRAL, CMBField, Lineage, content_key, legacy_key, minted_texts
from xmesh_agent.mmp.e2e import E2EError, E2EUnavailableError, decrypt_categories, encrypt_categories
from xmesh_agent.mmp.verify import ExternalSig

REMIX_METHOD = "SVAF-v2"
_MAX_KEY = 128
_MAX_LIST = 256
_NUMBER = (int, float)
# Unsigned: nothing to verify, and our own cmb1- address is recomputed from the texts, so it
# always matches; the verifier's unsigned-block policy (tofu/open accept, strict refuses) decides.
UNSIGNED = ExternalSig(signed=False, verify=lambda _key: False, content_ok=True)


class Sym05Error(ValueError):
    """Not a readable sym 0.5 `cmb` frame."""


class Sym05EncryptedError(Sym05Error):
    """Encrypted `fields` we cannot open (no shared secret, or failed authentication)."""


@dataclass
class Sym05Decoded:
    """A decoded sym 0.5 CMB: our CMB plus the sender's own key and frame context."""

    cmb: CMB
    key: str
    key_matches: bool
    parents: list[str] = field(default_factory=list)
    timestamp: int | None = None
    anchor: bool = False
    encrypted: bool = False

    @property
    def aliases(self) -> dict[str, str]:
        return {self.key: self.cmb.key}


def _field_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("text"), str):
        return value["text"]
    return ""


def _str_list(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [v for v in value[:_MAX_LIST] if isinstance(v, str) and 0 < len(v) <= _MAX_KEY]


def open_fields(body: Mapping[str, Any], secret: bytes | None) -> tuple[dict[str, Any], bool]:
    """(plaintext fields, was it encrypted). Raises Sym05EncryptedError / Sym05Error."""
    fields = body.get("fields")
    if isinstance(fields, Mapping):
        return dict(fields), False
    if not isinstance(fields, str):
        raise Sym05Error("cmb has no fields")
    e2e = body.get("_e2e")
    nonce = e2e.get("nonce") if isinstance(e2e, Mapping) else None
    if not isinstance(nonce, str):
        raise Sym05Error("string fields without an _e2e nonce")
    if secret is None:
        raise Sym05EncryptedError("encrypted fields but no shared secret with this peer")
    try:
        return decrypt_categories(fields, nonce, secret), True
    except (E2EError, E2EUnavailableError) as exc:
        raise Sym05EncryptedError(str(exc)) from exc


def decode_sym05_cmb(
    frame: Mapping[str, Any],
    *,
    secret: bytes | None = None,
    author_node_id: str | None = None,
    aliases: Mapping[str, str] | None = None,
) -> Sym05Decoded:
    """A sym 0.5 `cmb` frame (or bare record) as our CMB, keyed by our `cmb1-` address.

    A remix address binds the minting node's id (`author_node_id`; the author's name when its id
    is unknown, e.g. a replayed third-party anchor). Parents go through `aliases` (their key ->
    ours) where known. Missing fields become "neutral"; at least one text must carry content.
    """
    if not isinstance(frame, Mapping):
        raise Sym05Error("frame must be a JSON object")
    body: Any = frame.get("cmb") if frame.get("type") == "cmb" else frame
    if not isinstance(body, Mapping) or "metadata" in body:
        raise Sym05Error("not a sym 0.5 cmb record")
    raw_fields, encrypted = open_fields(body, secret)
    key = body.get("key")
    if not isinstance(key, str) or not key.startswith("cmb-") or len(key) > _MAX_KEY:
        raise Sym05Error(f"not a sym 0.5 key: {str(key)[:80]!r}")
    author = body.get("createdBy")
    if not isinstance(author, str) or not 0 < len(author) <= 256:
        raise Sym05Error("cmb has no author")
    ts = frame.get("timestamp") if frame is not body else None
    created = body.get("createdAt")
    if isinstance(created, bool) or not isinstance(created, int):
        if isinstance(ts, int) and not isinstance(ts, bool):
            created = ts
        else:
            raise Sym05Error("cmb has no integer createdAt")

    raw_texts = {f: _field_text(raw_fields.get(f)) for f in CAT7}
    if not any(t.strip() and t != NEUTRAL for t in raw_texts.values()):
        raise Sym05Error("cmb carries no CAT7 text")
    texts = minted_texts(raw_texts)
    fields: dict[str, CMBField] = {f: CMBField(text=texts[f]) for f in CAT7}
    mood = raw_fields.get("mood")
    if isinstance(mood, Mapping):
        v, a = mood.get("valence"), mood.get("arousal")
        if isinstance(v, _NUMBER) and isinstance(a, _NUMBER) and -1 <= v <= 1 and -1 <= a <= 1:
            fields["mood"] = CMBField(text=texts["mood"], valence=float(v), arousal=float(a))

    lineage = body.get("lineage") if isinstance(body.get("lineage"), Mapping) else {}
    parents = _str_list(lineage.get("parents"))
    alias = aliases or {}
    ours = [alias.get(p, p) for p in parents]
    method = lineage.get("method")
    if ours:
        cmb_key = content_key(texts, ours, author_node_id or author)
        ancestors = [alias.get(a, a) for a in _str_list(lineage.get("ancestors"))] or list(ours)
        lin = Lineage(
            parents=ours, ancestors=ancestors, method=method if isinstance(method, str) else REMIX_METHOD
        )
    else:
        cmb_key, lin = content_key(texts), None
    cmb = CMB(key=cmb_key, created_by=author, created_at=created, fields=fields, lineage=lin)
    return Sym05Decoded(
        cmb=cmb,
        key=key,
        key_matches=legacy_key(raw_texts) == key,
        parents=parents,
        timestamp=ts if isinstance(ts, int) and not isinstance(ts, bool) else None,
        anchor=frame.get("_anchor") is True,
        encrypted=encrypted,
    )


def build_sym05_fields(cmb: CMB) -> dict[str, Any]:
    """The `fields` a sym 0.5 node reads: all seven texts (neutral when empty), mood affect kept.

    No per-field `vector`: a vector is only meaningful in the sender's own encoder space, and a
    0.5 receiver encodes texts itself when it needs one.
    """
    texts = minted_texts(cmb.texts())
    out: dict[str, Any] = {}
    for f in CAT7:
        entry: dict[str, Any] = {"text": texts[f]}
        fld = cmb.fields.get(f)
        if f == "mood" and fld is not None and fld.valence is not None and fld.arousal is not None:
            entry["valence"] = int(fld.valence) if float(fld.valence).is_integer() else fld.valence
            entry["arousal"] = int(fld.arousal) if float(fld.arousal).is_integer() else fld.arousal
        out[f] = entry
    return out


def encode_sym05_cmb(
    cmb: CMB,
    *,
    parents: Sequence[str] = (),
    ancestors: Sequence[str] = (),
    secret: bytes | None = None,
    timestamp: int | None = None,
    anchor: bool = False,
) -> dict[str, Any]:
    """The `cmb` frame a sym 0.5 node accepts, keyed as it keys the same texts (legacy `cmb-`).

    `parents`/`ancestors` are keys in the receiver's terms. With `secret` the fields travel
    encrypted as the receiver expects once both sides announced e2e keys.
    """
    fields = build_sym05_fields(cmb)
    parent_list = list(parents)
    record: dict[str, Any] = {
        "key": legacy_key({f: v["text"] for f, v in fields.items()}),
        "createdBy": cmb.created_by,
        "createdAt": cmb.created_at,
        "fields": fields,
        "lineage": {
            "parents": parent_list,
            "ancestors": list(dict.fromkeys([*ancestors, *parent_list])),
            "method": REMIX_METHOD if parent_list else None,
        },
    }
    if secret is not None:
        ciphertext, nonce = encrypt_categories(fields, secret)
        record["fields"] = ciphertext
        record["_e2e"] = {"nonce": nonce}
    frame: dict[str, Any] = {
        "type": "cmb",
        "timestamp": now_ms() if timestamp is None else timestamp,
        "cmb": record,
    }
    if anchor:
        frame["_anchor"] = True
    return frame
