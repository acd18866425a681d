"""The lexical field encoder, the `admit` helper on real CMB text, and SVAF invariants beyond the vectors."""

from __future__ import annotations

import math

import pytest

from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.admission.encoder import (
    DEFAULT_ENCODER,
    FieldEncoder,
    HashedNgramEncoder,
    admit,
    config_for,
    encode_fields,
)
from xmesh_agent.mmp.admission.svaf import SvafConfig, evaluate
from xmesh_agent.mmp.cmb import mint
from xmesh_agent.roles import preset_weights

NOW = 1_751_000_000_000
MIN = 60_000


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def bob() -> NodeIdentity:
    return NodeIdentity.generate("bob")


# --- encoder ---------------------------------------------------------------------------------------


def test_encoder_is_deterministic_unit_and_fixed_dimension() -> None:
    enc = HashedNgramEncoder(dim=256)
    assert isinstance(enc, FieldEncoder)
    a = enc.encode("Refactor the relay server's auth timeout")
    assert a == HashedNgramEncoder(dim=256).encode("Refactor the relay server's auth timeout")
    assert len(a) == 256 and enc.kernel_id == "ngram-h256"
    assert math.isclose(math.sqrt(sum(v * v for v in a)), 1.0)


def test_encoder_normalises_case_and_unicode() -> None:
    assert DEFAULT_ENCODER.encode("CAFÉ Relay") == DEFAULT_ENCODER.encode("cafe\u0301 relay")


def test_encoder_empty_text_is_zero_vector() -> None:
    assert not any(DEFAULT_ENCODER.encode("  ... "))
    with pytest.raises(ValueError):
        HashedNgramEncoder(dim=2)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            "fix the race condition in the relay client reconnect loop",
            "bake sourdough with cold fermentation",
        ),
        ("write unit tests for the store retention", "quarterly marketing budget for the sales team"),
        ("ed25519 signature verification", "watering tomatoes in summer"),
    ],
)
def test_unrelated_texts_are_near_orthogonal(a: str, b: str) -> None:
    assert abs(_cos(DEFAULT_ENCODER.encode(a), DEFAULT_ENCODER.encode(b))) < 0.15


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            "refactor the authentication middleware to use JWT",
            "authentication middleware should validate JWT",
        ),
        ("ship the release by Friday", "the release must ship by Friday afternoon"),
        ("user is tired after debugging", "user is exhausted after debugging for hours"),
    ],
)
def test_texts_sharing_the_topic_are_close(a: str, b: str) -> None:
    assert _cos(DEFAULT_ENCODER.encode(a), DEFAULT_ENCODER.encode(b)) > 0.55


def test_encode_fields_skips_neutral_and_empty() -> None:
    vectors = encode_fields({"focus": "relay", "issue": "", "mood": "neutral", "intent": "Neutral "})
    assert set(vectors) == {"focus"}


# --- admit on real text ----------------------------------------------------------------------------

TOPIC = {
    "focus": "relay server authentication timeout handling",
    "issue": "clients that never send relay-auth hold sockets open",
    "intent": "close unauthenticated sockets after ten seconds",
    "commitment": "add a test for the auth timeout close code",
}


def _store(identity: NodeIdentity) -> list:
    return [
        mint(TOPIC, identity=identity, group="g", created_at=NOW - 5 * MIN),
        mint(
            {"focus": "CMB store retention policy", "issue": "old rows are never purged"},
            identity=identity,
            group="g",
            created_at=NOW - 20 * MIN,
        ),
    ]


def test_exact_repeat_is_redundant(bob: NodeIdentity) -> None:
    alice = NodeIdentity.generate("alice")
    repeat = mint(TOPIC, identity=alice, group="g", created_at=NOW)
    result = admit(repeat, _store(bob), preset_weights("reviewer"), NOW)
    assert result.decision == "redundant" and not result.accepted
    assert result.max_nearest_drift < 1e-9


def test_same_topic_other_words_is_admitted(bob: NodeIdentity) -> None:
    follow_up = mint(
        {
            "focus": "relay authentication timeout",
            "issue": "sockets stay open when clients never authenticate",
            "intent": "close the socket with the auth timeout code",
            "commitment": "test the relay auth timeout",
        },
        identity=bob,
        group="g",
        created_at=NOW,
    )
    result = admit(follow_up, _store(bob), preset_weights("reviewer"), NOW)
    assert result.accepted, result.to_json()
    assert result.decision in ("aligned", "guarded")
    assert result.max_nearest_drift >= 0.10


def test_unrelated_block_is_rejected(bob: NodeIdentity) -> None:
    foreign = mint(
        {"focus": "sourdough baking schedule", "issue": "crumb too dense", "intent": "longer proof"},
        identity=bob,
        group="g",
        created_at=NOW,
    )
    result = admit(foreign, _store(bob), preset_weights("reviewer"), NOW)
    assert result.decision == "rejected" and not result.accepted
    assert result.total_drift > 0.5


def test_empty_store_bootstraps(bob: NodeIdentity) -> None:
    cmb = mint({"focus": "anything"}, identity=bob, group="g", created_at=NOW)
    assert admit(cmb, [], None, NOW).decision == "aligned"


def test_block_is_never_its_own_anchor(bob: NodeIdentity) -> None:
    cmb = mint({"focus": "lonely block"}, identity=bob, group="g", created_at=NOW)
    result = admit(cmb, [cmb], None, NOW)
    assert result.decision == "aligned" and result.per_field == {}


def test_stale_on_topic_block_drops_a_band(bob: NodeIdentity) -> None:
    block = {"focus": "relay authentication timeout", "intent": "close sockets that never authenticate"}
    fresh = admit(mint(block, identity=bob, group="g", created_at=NOW), _store(bob), None, NOW)
    stale = admit(mint(block, identity=bob, group="g", created_at=NOW - 600 * MIN), _store(bob), None, NOW)
    assert stale.total_drift > fresh.total_drift + 0.2
    assert fresh.temporal_drift == 0.0


def test_config_for_uses_weights_and_lexical_bands() -> None:
    cfg = config_for({"focus": 3.0})
    assert cfg.field_weights["focus"] == 3.0 and cfg.field_weights["mood"] == 1.0
    assert cfg.stable_threshold == 0.35 and cfg.guarded_threshold == 0.5


# --- SVAF invariants on vectors --------------------------------------------------------------------


def test_orthogonal_field_counts_as_novel_not_missing() -> None:
    result = evaluate({"focus": [0.0, 1.0]}, [({"focus": [1.0, 0.0]}, 0)], SvafConfig())
    assert result.decision == "rejected"
    assert result.per_field["focus"].drift == 1.0


def test_field_absent_from_memory_is_excluded() -> None:
    result = evaluate({"focus": [1.0, 0.0], "mood": [0.0, 1.0]}, [({"focus": [1.0, 0.0]}, 0)], SvafConfig())
    assert set(result.per_field) == {"focus"}
    assert result.decision == "redundant"


def test_nearest_drift_never_grows_with_the_store() -> None:
    x = {"focus": [1.0, 0.2]}
    small = [({"focus": [0.3, 1.0]}, 0)]
    grown = [*small, ({"focus": [1.0, 0.0]}, 0)]
    assert evaluate(x, grown).max_nearest_drift <= evaluate(x, small).max_nearest_drift


@pytest.mark.parametrize(
    "bad",
    [
        {"focus": []},
        {"focus": [float("nan"), 1.0]},
        {"focus": ["a", "b"]},
        {"focus": [0.0, 0.0]},
        {"focus": [1.0, 0.0, 0.0]},
    ],
)
def test_bad_vectors_are_skipped_not_crashing(bad: dict) -> None:
    result = evaluate(bad, [({"focus": [1.0, 0.0]}, 0), ("junk", 1), ({"focus": [1.0, 0.0]}, "old")])
    assert result.decision == "aligned" and result.per_field == {}


def test_ancient_anchors_do_not_underflow() -> None:
    result = evaluate({"focus": [0.8, 0.6]}, [({"focus": [1.0, 0.0]}, 10**7)], SvafConfig())
    assert result.per_field["focus"].drift == pytest.approx(0.2)
