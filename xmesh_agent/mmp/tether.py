"""Lineage tether (spec §15.8): does a remix still descend, in content, from its lineage root?

The check is content-only (no temporal term) and made within one kernel: per shared field with
vectors of equal dimension, δ_f = 1 − cos(remix_f, anchor_f) clamped to [0, 1]; the drift is the
α-weighted mean. The remix is severed when that drift lands in the reject band (> T_guarded), and a
comparison with no comparable field is unchecked, which never severs. The integrator records its
verdict as a signed `mmp-tether-v1` attestation (length-prefixed like §8.2.1, drift fixed to six
fractional digits so the signed bytes do not depend on float printing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from xmesh_agent.identity import NodeIdentity, b64url_decode, b64url_encode, verify_signature
from xmesh_agent.mmp.cmb import CMB, SIG_ALG

TETHER_DOMAIN = b"mmp-tether-v1\n"
DEFAULT_GUARDED_THRESHOLD = 0.5
Verdict = Literal["tethered", "severed"]


@dataclass(frozen=True)
class TetherCheck:
    checked: bool
    tethered: bool
    drift: float | None


def _unit(vector: Any) -> list[float] | None:
    if not isinstance(vector, Sequence) or isinstance(vector, str) or not vector:
        return None
    try:
        values = [float(v) for v in vector]
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in values):
        return None
    norm = math.sqrt(math.fsum(v * v for v in values))
    return [v / norm for v in values] if norm > 0 else None


def tether_drift(
    remix_fields: Mapping[str, Sequence[float]],
    anchor_fields: Mapping[str, Sequence[float]],
    weights: Mapping[str, float] | None = None,
    guarded_threshold: float = DEFAULT_GUARDED_THRESHOLD,
) -> TetherCheck:
    """Content-only α-weighted drift of a remix from its anchor; unchecked when nothing compares."""
    num = den = 0.0
    for name, vector in remix_fields.items():
        alpha = float((weights or {}).get(name, 1.0))
        if not math.isfinite(alpha) or alpha <= 0 or name not in anchor_fields:
            continue
        a, b = _unit(vector), _unit(anchor_fields[name])
        if a is None or b is None or len(a) != len(b):
            continue
        cos = math.fsum(x * y for x, y in zip(a, b, strict=True))
        num += alpha * min(1.0, max(0.0, 1.0 - cos))
        den += alpha
    if den == 0:
        return TetherCheck(checked=False, tethered=True, drift=None)
    drift = num / den
    return TetherCheck(checked=True, tethered=drift <= guarded_threshold, drift=drift)


def check_tether(
    remix: CMB,
    anchor: CMB,
    weights: Mapping[str, float] | None = None,
    *,
    encoder: Any = None,
    guarded_threshold: float = DEFAULT_GUARDED_THRESHOLD,
) -> TetherCheck:
    """Encode both blocks' texts in one kernel (default: the lexical one) and run `tether_drift`."""
    from xmesh_agent.mmp.admission.encoder import DEFAULT_ENCODER, encode_fields

    enc = encoder or DEFAULT_ENCODER
    return tether_drift(
        encode_fields(remix.texts(), enc), encode_fields(anchor.texts(), enc), weights, guarded_threshold
    )


def _lp(value: str) -> bytes:
    raw = value.encode("utf-8")
    return str(len(raw)).encode("ascii") + b":" + raw


def format_drift(drift: float) -> str:
    """Six fractional digits, as signed."""
    return f"{float(drift):.6f}"


def attestation_payload(record: Mapping[str, Any]) -> bytes:
    """The `mmp-tether-v1` bytes of a record {of, anchor, kernelId, drift, verdict, by, at}."""
    return (
        TETHER_DOMAIN
        + _lp(str(record["of"]))
        + _lp(str(record["anchor"]))
        + _lp(str(record["kernelId"]))
        + _lp(format_drift(record["drift"]))
        + _lp(str(record["verdict"]))
        + _lp(str(record["by"]))
        + _lp(str(int(record["at"])))
    )


def make_attestation(
    *,
    of: str,
    anchor: str,
    kernel_id: str,
    check: TetherCheck,
    identity: NodeIdentity,
    at_ms: int,
    by: str | None = None,
) -> dict[str, Any] | None:
    """A signed attestation of a checked verdict (None for an unchecked one: nothing to attest)."""
    if not check.checked or check.drift is None:
        return None
    record: dict[str, Any] = {
        "of": of,
        "anchor": anchor,
        "kernelId": kernel_id,
        "drift": round(check.drift, 6),
        "verdict": "tethered" if check.tethered else "severed",
        "by": by if by is not None else identity.node_id,
        "at": int(at_ms),
    }
    return sign_attestation(record, identity)


def sign_attestation(record: Mapping[str, Any], identity: NodeIdentity) -> dict[str, Any]:
    signature = identity.sign(attestation_payload(record))
    return {**record, "sig": b64url_encode(signature), "sigAlg": SIG_ALG}


def verify_attestation(record: Mapping[str, Any], public_key: bytes) -> bool:
    """Ed25519 whatever `sigAlg` says; a malformed record is simply unverified."""
    try:
        payload = attestation_payload(record)
        signature = b64url_decode(str(record["sig"]))
    except (KeyError, TypeError, ValueError, UnicodeEncodeError):
        return False
    if record.get("verdict") not in ("tethered", "severed"):
        return False
    return verify_signature(public_key, payload, signature)


def comparable(kernel_a: str, kernel_b: str) -> bool:
    """Tether verdicts compare only within one kernel (§15.8)."""
    return kernel_a == kernel_b
