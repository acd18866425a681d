"""SVAF admission math (spec §9.2, §9.2.1, §19.3–§19.6): the cosine-distance reference baseline.

Pure math on field vectors, no text: the encoder lives in `encoder.py`. This module reproduces the
normative `svaf-baseline.json` vectors, so its semantics are pinned by the spec, not chosen here:

- graded drift per field: δ_f = 1 − cos(fused_f, x_f), where fused_f is the attention-weighted readout
  of the anchors, w(a,f) = α_f · max(cos(x_f, v_a,f), 0) · exp(−age_a/τ) · conf_a;
- redundancy on the nearest-anchor basis: δ_f_near = 1 − max_a cos(x_f, v_a,f), redundant when the
  largest δ_f_near over evaluable fields is below T_redundant;
- totalDrift = (1 − λ)·Σα_f δ_f / Σα_f + λ·(1 − exp(−age/τ)), banded into aligned/guarded/rejected;
- empty memory (no evaluable field) admits as aligned, to bootstrap.

One choice the spec leaves open: a field that anchors do carry but which no anchor leans toward
(every cosine ≤ 0) has an empty readout. We score it δ_f = 1 (maximally novel) rather than excluding it,
so a wholly foreign block is rejected instead of slipping through the cold-start rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from xmesh_agent.roles import CAT7

Decision = Literal["redundant", "aligned", "guarded", "rejected"]
Vector = Sequence[float]
Fields = Mapping[str, Vector]
# (fields, age in seconds) or (fields, age in seconds, confidence in [0, 1])
Anchor = tuple[Fields, float] | tuple[Fields, float, float]


@dataclass(frozen=True)
class SvafConfig:
    """Thresholds and weights of one receiver; defaults are the spec's (§19.4, §19.6)."""

    stable_threshold: float = 0.25
    guarded_threshold: float = 0.50
    redundant_threshold: float = 0.10
    temporal_lambda: float = 0.3
    freshness_seconds: float = 1800.0
    field_weights: Mapping[str, float] = field(default_factory=lambda: dict.fromkeys(CAT7, 1.0))

    def weight(self, name: str) -> float:
        """α_f; a field the weights do not name counts with weight 1."""
        value = self.field_weights.get(name, 1.0)
        return float(value) if _finite(value) and value > 0 else 0.0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SvafConfig:
        """From the spec's camelCase config object (as in the conformance vectors)."""
        defaults = cls()
        return cls(
            stable_threshold=float(data.get("stableThreshold", defaults.stable_threshold)),
            guarded_threshold=float(data.get("guardedThreshold", defaults.guarded_threshold)),
            redundant_threshold=float(data.get("redundantThreshold", defaults.redundant_threshold)),
            temporal_lambda=float(data.get("temporalLambda", defaults.temporal_lambda)),
            freshness_seconds=float(data.get("freshnessSeconds", defaults.freshness_seconds)),
            field_weights=dict(data.get("fieldWeights") or defaults.field_weights),
        )


@dataclass(frozen=True)
class FieldDrift:
    """One evaluable field: graded drift, nearest-anchor drift, its α and how many anchors carried it."""

    drift: float
    nearest_drift: float
    weight: float
    anchors: int


@dataclass(frozen=True)
class SvafResult:
    accepted: bool
    decision: Decision
    total_drift: float
    max_nearest_drift: float
    per_field: dict[str, FieldDrift]
    field_drift: float = 0.0
    temporal_drift: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe summary (for activity results and logs)."""
        return {
            "accepted": self.accepted,
            "decision": self.decision,
            "totalDrift": round(self.total_drift, 9),
            "maxNearestDrift": round(self.max_nearest_drift, 9),
            "fieldDrift": round(self.field_drift, 9),
            "temporalDrift": round(self.temporal_drift, 9),
            "perField": {
                name: {"drift": round(d.drift, 9), "nearest": round(d.nearest_drift, 9), "weight": d.weight}
                for name, d in self.per_field.items()
            },
        }


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class UnitVector(Sequence[float]):
    """A finite, L2-normalised vector, checked once: `_unit` returns it as is instead of re-checking.

    The values live in a read-only float64 numpy array (`array`), so the drift math runs as matrix
    products instead of Python loops. Build one only from values known to be finite and of norm 1
    (`_unit`, or an encoder that normalised them itself); vectors from outside go through `_unit`.
    """

    __slots__ = ("array",)

    def __init__(self, values: Sequence[float] | np.ndarray):
        array = np.array(values, dtype=np.float64)
        array.flags.writeable = False
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index):  # type: ignore[override]
        item = self.array[index]
        return item.tolist()

    def __iter__(self):
        return iter(self.array.tolist())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, UnitVector):
            return bool(np.array_equal(self.array, other.array))
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"UnitVector(dim={len(self.array)})"


def _unit(vector: Any) -> UnitVector | None:
    """The L2-normalised vector, or None for anything that cannot be compared (empty, zero, non-numeric)."""
    if isinstance(vector, UnitVector):
        return vector
    if not isinstance(vector, Sequence) or isinstance(vector, str) or not vector:
        return None
    if not all(_finite(v) for v in vector):
        return None
    return _normalised([float(v) for v in vector])


def _normalised(values: Sequence[float]) -> UnitVector | None:
    """`values` (finite floats) scaled to norm 1; None for the zero vector or an overflowing norm."""
    norm = math.sqrt(math.fsum(v * v for v in values if v))
    if norm == 0.0 or not math.isfinite(norm):
        return None
    return UnitVector(np.array(values, dtype=np.float64) / norm)


def _clamp01(value: float) -> float:
    return min(1.0, max(0.0, value))


def temporal_drift(age_s: float, freshness_seconds: float) -> float:
    """1 − exp(−age/τ); future-dated signals count as fresh."""
    if freshness_seconds <= 0:
        return 1.0 if age_s > 0 else 0.0
    return 1.0 - math.exp(-max(0.0, float(age_s)) / freshness_seconds)


def drift_of_rows(
    x: np.ndarray, rows: np.ndarray, ages: np.ndarray, confs: np.ndarray, alpha: float, tau: float
) -> FieldDrift:
    """δ_f and δ_f_near of unit `x` against anchor unit `rows` (k × dim), their ages (s) and confidences.

    The vectorised core: one matrix-vector product for the cosines, one for the fused readout.
    """
    cosines = rows @ x
    nearest = _clamp01(1.0 - float(cosines.max()))
    # exp(−age/τ) relative to the youngest anchor: the readout is normalised, so a common factor
    # cancels, and old stores never underflow to an all-zero readout.
    relative = ages - ages.min()
    decay = np.exp(-relative / tau) if tau > 0 else (relative == 0.0).astype(np.float64)
    weights = alpha * np.maximum(cosines, 0.0) * decay * confs
    fused = weights @ rows
    norm = math.sqrt(float(fused @ fused))
    empty = norm == 0.0 or not math.isfinite(norm)  # no anchor leans toward x: maximally novel
    drift = 1.0 if empty else _clamp01(1.0 - float((fused / norm) @ x))
    return FieldDrift(drift=drift, nearest_drift=nearest, weight=alpha, anchors=len(rows))


def field_drift(
    x: Vector, anchors: Sequence[tuple[Vector, float, float]], alpha: float, tau: float
) -> FieldDrift | None:
    """δ_f and δ_f_near of one field against (vector, age_s, confidence) anchors; None if not evaluable."""
    xu = _unit(x)
    if xu is None or alpha <= 0:
        return None
    dim = len(xu)
    rows, ages, confs = [], [], []
    for vec, age, conf in anchors:
        vu = _unit(vec)
        if vu is not None and len(vu) == dim:
            rows.append(vu.array)
            ages.append(max(0.0, float(age)))
            confs.append(_clamp01(float(conf)))
    if not rows:
        return None
    return drift_of_rows(xu.array, np.stack(rows), np.array(ages), np.array(confs), alpha, tau)


def _anchor_parts(anchor: Any) -> tuple[Fields, float, float] | None:
    if not isinstance(anchor, tuple | list) or len(anchor) not in (2, 3):
        return None
    fields, age = anchor[0], anchor[1]
    conf = anchor[2] if len(anchor) == 3 else 1.0
    if not isinstance(fields, Mapping) or not _finite(age) or not _finite(conf):
        return None
    return fields, float(age), float(conf)


def evaluate(
    incoming: Fields, anchors: Sequence[Anchor], config: SvafConfig | None = None, *, age_s: float = 0.0
) -> SvafResult:
    """Admission decision for one incoming block against the receiver's prior anchors.

    `age_s` is the incoming block's age (evaluation time minus its creation time); each anchor carries
    its own age. The incoming block must not be among the anchors (§9.2.1 invariant 1).
    """
    cfg = config or SvafConfig()
    parts = [p for p in (_anchor_parts(a) for a in anchors) if p is not None]
    per_field: dict[str, FieldDrift] = {}
    for name, vector in incoming.items():
        carried = [(fields[name], age, conf) for fields, age, conf in parts if name in fields]
        result = field_drift(vector, carried, cfg.weight(name), cfg.freshness_seconds)
        if result is not None:
            per_field[name] = result
    return _decide(per_field, cfg, age_s)


def evaluate_units(
    incoming: Mapping[str, UnitVector],
    anchors: Sequence[tuple[Mapping[str, UnitVector], float]],
    config: SvafConfig | None = None,
    *,
    age_s: float = 0.0,
) -> SvafResult:
    """`evaluate` for vectors this runtime made itself: `UnitVector`s, finite ages, confidence 1.

    Nothing is re-checked value by value (a `UnitVector` was checked when it was made), so an
    admission costs a few matrix products per field. Same math, same results as `evaluate`.
    """
    cfg = config or SvafConfig()
    per_field: dict[str, FieldDrift] = {}
    for name, xu in incoming.items():
        alpha = cfg.weight(name)
        if alpha <= 0:
            continue
        x = xu.array
        dim = x.shape[0]
        rows, ages = [], []
        for fields, age in anchors:
            vu = fields.get(name)
            if vu is not None and vu.array.shape[0] == dim:
                rows.append(vu.array)
                ages.append(age)
        if rows:
            ones = np.ones(len(rows))
            matrix, age_arr = np.array(rows), np.maximum(np.array(ages, dtype=np.float64), 0.0)
            per_field[name] = drift_of_rows(x, matrix, age_arr, ones, alpha, cfg.freshness_seconds)
    return _decide(per_field, cfg, age_s)


def _decide(per_field: dict[str, FieldDrift], cfg: SvafConfig, age_s: float) -> SvafResult:
    """totalDrift from the per-field drifts and the block's age, banded into a decision."""
    if not per_field:
        return SvafResult(True, "aligned", 0.0, 0.0, {})
    total_alpha = math.fsum(d.weight for d in per_field.values())
    content = math.fsum(d.weight * d.drift for d in per_field.values()) / total_alpha
    temporal = temporal_drift(age_s, cfg.freshness_seconds)
    lam = _clamp01(cfg.temporal_lambda)
    total = (1.0 - lam) * content + lam * temporal
    max_near = max(d.nearest_drift for d in per_field.values())
    decision: Decision
    if max_near < cfg.redundant_threshold:
        decision = "redundant"
    elif total <= cfg.stable_threshold:
        decision = "aligned"
    elif total <= cfg.guarded_threshold:
        decision = "guarded"
    else:
        decision = "rejected"
    return SvafResult(
        accepted=decision in ("aligned", "guarded"),
        decision=decision,
        total_drift=total,
        max_nearest_drift=max_near,
        per_field=per_field,
        field_drift=content,
        temporal_drift=temporal,
    )
