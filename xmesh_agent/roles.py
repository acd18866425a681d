"""Role presets: the α weights over the seven CAT7 fields that suit each role."""

from __future__ import annotations

CAT7 = ("focus", "issue", "intent", "motivation", "commitment", "perspective", "mood")

# α order: focus, issue, intent, motivation, commitment, perspective, mood
_PRESETS: dict[str, tuple[float, ...]] = {
    "writer": (2.0, 1.0, 2.5, 1.5, 1.0, 0.5, 0.6),
    "reviewer": (1.0, 2.5, 1.2, 0.8, 2.0, 0.5, 0.6),
    "test-writer": (1.2, 2.0, 1.0, 0.8, 2.5, 0.5, 0.6),
    "auditor": (1.0, 2.0, 0.8, 0.8, 1.5, 2.5, 0.6),
    "security-reviewer": (1.0, 2.5, 0.8, 0.8, 1.5, 2.5, 0.6),
    "doc-writer": (2.5, 1.0, 2.0, 1.5, 2.0, 1.0, 0.5),
    "spec-drafter": (2.5, 1.5, 2.5, 2.0, 1.5, 0.8, 0.5),
    "generator": (2.5, 1.0, 2.0, 1.2, 1.0, 0.5, 0.6),
    "generic": (1.0,) * 7,
}

# §19.2 profiles: (freshness in seconds: SVAF's τ for temporal drift; memory in days: how long a stored
# CMB keeps anchoring admission). Every preset is a coding role: the spec's coding profile, 2 h / 7 d.
CODING_PROFILE = (7200.0, 7.0)
_PROFILES: dict[str, tuple[float, float]] = {role: CODING_PROFILE for role in _PRESETS}

HIGH_WEIGHT = 1.5
"""Fields weighted at or above this are the role's priorities (named in the model's preamble)."""


def known_roles() -> list[str]:
    return sorted(_PRESETS)


def preset_weights(role: str) -> dict[str, float] | None:
    weights = _PRESETS.get(role.lower())
    return dict(zip(CAT7, weights, strict=True)) if weights else None


def priority_fields(weights: dict[str, float]) -> list[str]:
    return [f for f in CAT7 if weights.get(f, 0.0) >= HIGH_WEIGHT]


def profile(role: str) -> tuple[float, float]:
    """(freshness_seconds, memory_days) of a role; roles without a preset get the coding profile."""
    return _PROFILES.get(role.lower(), CODING_PROFILE)
