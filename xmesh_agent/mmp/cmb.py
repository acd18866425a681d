"""The Cognitive Memory Block: CAT7 fields, content address, lineage and signature.

One internal model. On the wire it travels in the spec v1.1 shape (`to_wire`/`from_wire`);
other dialects (the stock node's record) are codecs at the edge of this package.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from xmesh_agent.identity import NodeIdentity, b64url_decode, b64url_encode, verify_signature

CAT7: tuple[str, ...] = (
    "focus",
    "issue",
    "intent",
    "motivation",
    "commitment",
    "perspective",
    "mood",
)
NEUTRAL = "neutral"
SIG_ALG = "ed25519"


class CMBField(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: str
    valence: float | None = Field(default=None, ge=-1, le=1)
    arousal: float | None = Field(default=None, ge=-1, le=1)
    vector: list[float] | None = None


class Lineage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    parents: list[str] = Field(default_factory=list)
    ancestors: list[str] = Field(default_factory=list)
    method: str | None = None


class CMB(BaseModel):
    """A CMB as the runtime holds it. Field names follow the spec's JSON (camelCase aliases)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    key: str
    created_by: str = Field(alias="createdBy")
    created_at: int = Field(alias="createdAt")
    fields: dict[str, CMBField]
    group: str | None = None
    to: str | None = None
    lineage: Lineage | None = None
    sig: str | None = None
    sig_alg: str | None = Field(default=None, alias="sigAlg")

    def text(self, field: str) -> str:
        f = self.fields.get(field)
        return f.text if f else ""

    def texts(self) -> dict[str, str]:
        return {f: self.text(f) for f in CAT7}

    @property
    def parents(self) -> list[str]:
        return list(self.lineage.parents) if self.lineage else []

    @property
    def ancestors(self) -> list[str]:
        return list(self.lineage.ancestors) if self.lineage else []

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> CMB:
        return cls.model_validate(data)


def _lp(value: str) -> bytes:
    raw = value.encode("utf-8")
    return str(len(raw)).encode("ascii") + b":" + raw


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def minted_texts(texts: Mapping[str, str]) -> dict[str, str]:
    """All seven fields, empty ones minted as "neutral" (spec §8.3)."""
    out = {}
    for field in CAT7:
        value = texts.get(field) or ""
        out[field] = value if value.strip() else NEUTRAL
    return out


def content_key(texts: Mapping[str, str], parents: Sequence[str] = (), receiver: str | None = None) -> str:
    """The `cmb1-` content address (§8.2.1): root form without parents, remix form with them."""
    pre = bytearray(b"mmp-cmb-v1\n")
    for field in CAT7:
        pre += _lp(_nfc(texts.get(field, "")))
    if parents:
        if receiver is None:
            raise ValueError("a remix key binds the receiving node's id")
        ordered = sorted(parents, key=lambda k: k.encode("utf-8"))
        pre += _lp("remix") + _lp(str(len(ordered)))
        for parent in ordered:
            pre += _lp(parent)
        pre += _lp(receiver)
    else:
        pre += _lp("root")
    return "cmb1-" + hashlib.sha256(bytes(pre)).hexdigest()


def legacy_key(texts: Mapping[str, str]) -> str:
    """The legacy `cmb-` key (SHA-256/128 over the pipe-joined texts); verified, never minted."""
    joined = "|".join(texts.get(field, "") for field in CAT7)
    return "cmb-" + hashlib.sha256(joined.encode("utf-8")).hexdigest()[:32]


def key_matches(cmb: CMB, receiver_of_remix: str | None = None) -> bool:
    """Does the key still match the fields? Remix keys bind the minting node's id."""
    texts = cmb.texts()
    if cmb.key.startswith("cmb1-"):
        if not cmb.parents:
            return content_key(texts) == cmb.key
        candidates = [receiver_of_remix] if receiver_of_remix else []
        return any(content_key(texts, cmb.parents, r) == cmb.key for r in candidates if r)
    if cmb.key.startswith("cmb-") and len(cmb.key) == 36:
        return legacy_key(texts) == cmb.key
    return False


def signing_payload(key: str, created_by: str, created_at: int, group: str, to: str | None) -> bytes:
    """`mmp-sig-v1` payload (§18.3.1): binds key, author, time and audience."""
    return b"mmp-sig-v1\n" + _lp(key) + _lp(created_by) + _lp(str(created_at)) + _lp(group) + _lp(to or "")


def sign_cmb(cmb: CMB, identity: NodeIdentity) -> CMB:
    payload = signing_payload(cmb.key, cmb.created_by, cmb.created_at, cmb.group or "", cmb.to)
    return cmb.model_copy(update={"sig": b64url_encode(identity.sign(payload)), "sig_alg": SIG_ALG})


def verify_cmb_signature(cmb: CMB, public_key: bytes) -> bool:
    """Verify with ed25519 whatever `sigAlg` claims (the algorithm is pinned, never trusted)."""
    if not cmb.sig:
        return False
    try:
        signature = b64url_decode(cmb.sig)
    except (ValueError, UnicodeEncodeError):
        return False
    payload = signing_payload(cmb.key, cmb.created_by, cmb.created_at, cmb.group or "", cmb.to)
    return verify_signature(public_key, payload, signature)


def mint(
    texts: Mapping[str, str],
    *,
    identity: NodeIdentity,
    group: str,
    created_at: int,
    parents: Iterable[CMB] = (),
    to: str | None = None,
    mood: tuple[float, float] | None = None,
) -> CMB:
    """Mint and sign a CMB authored by `identity`; ancestors = union of parents' ancestors + parents."""
    parent_list = list(parents)
    full = minted_texts(texts)
    parent_keys = [p.key for p in parent_list]
    key = content_key(full, parent_keys, identity.node_id if parent_keys else None)
    fields = {f: CMBField(text=t) for f, t in full.items()}
    if mood is not None:
        fields["mood"] = CMBField(text=full["mood"], valence=mood[0], arousal=mood[1])
    lineage = None
    if parent_keys:
        ancestors: list[str] = []
        for parent in parent_list:
            for k in [*parent.ancestors, parent.key]:
                if k not in ancestors:
                    ancestors.append(k)
        lineage = Lineage(parents=parent_keys, ancestors=ancestors, method="SVAF-v2")
    cmb = CMB(
        key=key,
        created_by=identity.name,
        created_at=created_at,
        fields=fields,
        group=group,
        to=to,
        lineage=lineage,
    )
    return sign_cmb(cmb, identity)
