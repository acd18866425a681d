"""Field encoders (text -> unit vector) and the `admit` helper the wake's admission step calls.

The default kernel, `HashedNgramEncoder`, is lexical and dependency-free: word tokens plus character
trigrams, feature-hashed with a keyed BLAKE2b into a fixed dimension with random signs, then
L2-normalised. Identical texts give identical vectors; texts sharing no words or trigrams land near
orthogonal (the signed hashing makes collisions cancel on average, noise ≈ 1/√dim). It measures word
overlap, not meaning, so its thresholds are its own (the spec: thresholds are meaningful only within a
pinned encoder, §9.2). A semantic encoder can replace it through the `FieldEncoder` protocol.

Thresholds of the default kernel (`LEXICAL_CONFIG`), calibrated on CAT7-style texts (see
tests/unit/test_svaf_encoder.py):
- redundant: an exact or near-exact repeat (every evaluable field within δ_near < 0.10, i.e. cosine
  > 0.9 to some anchor: same words, at most a word changed in a long text);
- aligned (totalDrift ≤ 0.35): the fields share the topic: same key words or word stems as something in
  the store (paraphrases score δ_f ≈ 0.15–0.5, so a fresh block lands at 0.7·δ ≈ 0.1–0.35);
- guarded (≤ 0.50, the spec's T_guarded): partial lexical contact, or on-topic but stale;
- rejected (> 0.50): nothing in common (unrelated fields score δ_f ≈ 0.85–1.0, i.e. ≥ 0.6 even fresh).
Only fields that carry content are evaluated: an empty or "neutral" field is not evidence of anything,
so it is left out of the aggregate and of the redundancy test (§9.2.1 invariant 4).
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from xmesh_agent.mmp.admission.anchors import StoredCMB
from xmesh_agent.mmp.admission.svaf import SvafConfig, SvafResult, UnitVector, evaluate, evaluate_units
from xmesh_agent.mmp.cmb import CAT7, CMB, NEUTRAL

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_STOPWORD_TEXT = (
    "a an the and or but if of to in on at by for with from into onto as is are was were be been being it its"
    " this that these those there here we you he she they i me my our your his her their them us do does did"
    " has have had so not no than then too very can will would should could may might must just about over"
    " after before when while which who what where why how all any each some such only own same"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())

TEXT_CACHE = 1024
"""Texts whose vectors are kept (4 KiB each): a wake's admission re-reads the texts of the 50 anchors
before it (at most 350), so the cache holds several admissions' worth; 4,096 kept 16 MiB of vectors."""
FEATURE_CACHE = 2048
"""Word and trigram hashes kept (~250 bytes each): trigrams and a group's common words recur, so most
features of a new text are looked up, not hashed (a miss costs ~0.5 µs). A cache that fills slowly is
memory that grows for days: every number and name a mesh says is a new word (65,536 entries grew a
peer by ~2 MB per 8,000 wakes; 2,048 are full within the first few hundred wakes)."""

LEXICAL_THRESHOLDS = {"stable_threshold": 0.35, "guarded_threshold": 0.50, "redundant_threshold": 0.10}
"""The default kernel's bands (see the module docstring); λ and τ keep the spec's defaults."""


@runtime_checkable
class FieldEncoder(Protocol):
    """Maps one field's text to a unit vector; `kernel_id` names encoder + dimension (§15.8)."""

    kernel_id: str
    dim: int

    def encode(self, text: str) -> list[float]: ...


class HashedNgramEncoder:
    """Hashed word + character-trigram features, signed, L2-normalised. Deterministic across runs."""

    def __init__(self, dim: int = 512, *, word_weight: float = 1.0, trigram_weight: float = 0.5):
        if dim < 8:
            raise ValueError("dimension must be at least 8")
        self.dim = dim
        self.kernel_id = f"ngram-h{dim}"
        self._word_weight = word_weight
        self._trigram_weight = trigram_weight
        self._cached = functools.lru_cache(maxsize=TEXT_CACHE)(self._encode)
        self._buckets = functools.lru_cache(maxsize=FEATURE_CACHE)(self._bucket)

    def _features(self, text: str) -> Iterable[tuple[str, float]]:
        words = _WORD.findall(unicodedata.normalize("NFKC", text).casefold())
        content = [w for w in words if w not in _STOPWORDS]
        for word in content or words:
            yield "w:" + word, self._word_weight
            padded = f"^{word}$"
            for i in range(len(padded) - 2):
                yield "t:" + padded[i : i + 3], self._trigram_weight

    def encode(self, text: str) -> list[float]:
        """The unit vector of `text`; the zero vector when it has no word characters."""
        return list(self._cached(text) or [0.0] * self.dim)

    def unit(self, text: str) -> UnitVector | None:
        """The cached unit vector of `text` as SVAF takes it (no re-check, no copy); None when zero."""
        return self._cached(text)

    def _bucket(self, feature: str) -> tuple[int, float]:
        digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8, person=b"xmesh-ngram").digest()
        return int.from_bytes(digest[:4], "big") % self.dim, 1.0 if digest[4] & 1 else -1.0

    def _encode(self, text: str) -> UnitVector | None:
        # per bucket, the same additions in the same order as a dense accumulation: the same floats
        acc: dict[int, float] = {}
        bucket_of = self._buckets
        for feature, weight in self._features(text):
            bucket, sign = bucket_of(feature)
            acc[bucket] = acc.get(bucket, 0.0) + sign * weight
        norm = math.sqrt(math.fsum(v * v for v in acc.values()))
        if norm <= 0:
            return None
        vec = np.zeros(self.dim)
        vec[list(acc)] = np.array(list(acc.values())) / norm
        return UnitVector(vec)


DEFAULT_ENCODER = HashedNgramEncoder()


def config_for(weights: Mapping[str, float] | None, encoder: FieldEncoder | None = None) -> SvafConfig:
    """The admission config for a receiver's α weights, with the thresholds that suit `encoder`."""
    fw = {f: float((weights or {}).get(f, 1.0)) for f in CAT7}
    enc = encoder or DEFAULT_ENCODER
    if isinstance(enc, HashedNgramEncoder):
        return SvafConfig(field_weights=fw, **LEXICAL_THRESHOLDS)
    # an encoder may carry its own calibrated bands (the semantic kernel does); else the spec's
    return SvafConfig(field_weights=fw, **(getattr(enc, "svaf_thresholds", None) or {}))


def _carries(text: str) -> bool:
    stripped = text.strip()
    return bool(stripped) and stripped.casefold() != NEUTRAL


def encode_fields(texts: Mapping[str, str], encoder: FieldEncoder | None = None) -> dict[str, list[float]]:
    """Vectors of the CAT7 fields that carry content (empty and "neutral" fields are left out)."""
    enc = encoder or DEFAULT_ENCODER
    out: dict[str, list[float]] = {}
    for name in CAT7:
        text = texts.get(name) or ""
        if _carries(text):
            vec = enc.encode(text)
            if any(vec):
                out[name] = vec
    return out


def _admission_fields(texts: Mapping[str, str], encoder: FieldEncoder) -> Mapping[str, Sequence[float]]:
    """Like `encode_fields`, but the default kernel's cached unit vectors go to SVAF as they are.

    An encoder with a batch `units(texts)` (the semantic kernel) gets the fields in one call; SVAF takes
    its `UnitVector`s as they are and checks anything else. Any other encoder is outside code: its
    vectors are copied and SVAF checks every one of them.
    """
    batch = getattr(encoder, "units", None)
    if callable(batch) and not isinstance(encoder, HashedNgramEncoder):
        names = [n for n in CAT7 if _carries(texts.get(n) or "")]
        vectors = batch([texts[n] for n in names]) if names else []
        return {n: v for n, v in zip(names, vectors, strict=True) if v is not None}
    if not isinstance(encoder, HashedNgramEncoder):
        return encode_fields(texts, encoder)
    out: dict[str, UnitVector] = {}
    for name in CAT7:
        text = texts.get(name) or ""
        if _carries(text):
            vec = encoder.unit(text)
            if vec is not None:
                out[name] = vec
    return out


def admit(
    cmb: CMB,
    anchors_cmbs: Iterable[CMB],
    weights: Mapping[str, float] | None,
    now_ms: int,
    *,
    encoder: FieldEncoder | None = None,
    config: SvafConfig | None = None,
) -> SvafResult:
    """SVAF decision for `cmb` against the receiver's stored CMBs (its anchors).

    Ages come from `created_at` (ms) against `now_ms`. The incoming block itself (same key, author and
    time; the node stores it before the wake) is skipped: a block is never its own baseline (§9.2.1).
    The same content held from another author or time stays an anchor, so a repeat is redundant.
    `config` overrides the encoder's defaults; otherwise `config_for(weights, encoder)` applies.
    """
    enc = encoder or DEFAULT_ENCODER
    cfg = config or config_for(weights, enc)
    anchors_cmbs = list(anchors_cmbs)
    batch = getattr(enc, "units", None)
    if callable(batch) and not isinstance(enc, HashedNgramEncoder):
        # one model call for all field texts of this admission; the per-block lookups then hit the cache
        batch([t for c in [cmb, *anchors_cmbs] for t in c.texts().values() if _carries(t or "")])
    anchors = []
    for anchor in anchors_cmbs:
        if (anchor.key, anchor.created_by, anchor.created_at) == (cmb.key, cmb.created_by, cmb.created_at):
            continue
        vectors = _admission_fields(anchor.texts(), enc)
        if vectors:
            anchors.append((vectors, max(0.0, (now_ms - anchor.created_at) / 1000.0)))
    incoming = _admission_fields(cmb.texts(), enc)
    judge = evaluate_units if _trusted(enc) else evaluate
    return judge(incoming, anchors, cfg, age_s=max(0.0, (now_ms - cmb.created_at) / 1000.0))


def _stored_fields(entry: StoredCMB, encoder: FieldEncoder) -> Mapping[str, Sequence[float]]:
    """The entry's field vectors from `encoder`, made once per entry and kernel and kept on it."""
    vectors = entry.vectors.get(encoder.kernel_id)
    if vectors is None:
        vectors = entry.vectors[encoder.kernel_id] = _admission_fields(entry.cmb.texts(), encoder)
    return vectors


def admit_stored(
    trigger: StoredCMB,
    anchors: Sequence[StoredCMB],
    weights: Mapping[str, float] | None,
    *,
    encoder: FieldEncoder | None = None,
    config: SvafConfig | None = None,
) -> SvafResult:
    """SVAF decision for a stored CMB against the anchors the store gave it (`CMBStore.admission_view`).

    Ages are taken at the trigger's arrival (`received_at`), so with the store-order anchors the
    decision is the same whenever it is asked: at once, late, or in a replayed wake.
    """
    enc = encoder or DEFAULT_ENCODER
    cfg = config or config_for(weights, enc)
    batch = getattr(enc, "units", None)
    if callable(batch) and not isinstance(enc, HashedNgramEncoder):
        kernel = enc.kernel_id
        todo = [t for e in [trigger, *anchors] if kernel not in e.vectors for t in e.cmb.texts().values()]
        if todo:  # one model call for every text not yet encoded
            batch([t for t in todo if _carries(t or "")])
    now = trigger.received_at
    parts = []
    for entry in anchors:
        vectors = _stored_fields(entry, enc)
        if vectors:
            parts.append((vectors, max(0.0, (now - entry.cmb.created_at) / 1000.0)))
    incoming = _stored_fields(trigger, enc)
    judge = evaluate_units if _trusted(enc) else evaluate
    return judge(incoming, parts, cfg, age_s=max(0.0, (now - trigger.cmb.created_at) / 1000.0))


def _trusted(encoder: FieldEncoder) -> bool:
    """Does `_admission_fields` hand SVAF this encoder's own `UnitVector`s (nothing to re-check)?"""
    return isinstance(encoder, HashedNgramEncoder) or callable(getattr(encoder, "units", None))
