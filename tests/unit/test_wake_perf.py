"""What keeps a wake cheap: SVAF trusts the vectors it made itself, and a peer loads only its own adapter."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.admission import svaf
from xmesh_agent.mmp.admission.encoder import DEFAULT_ENCODER, HashedNgramEncoder, admit, config_for
from xmesh_agent.mmp.admission.svaf import SvafConfig, UnitVector, evaluate
from xmesh_agent.mmp.cmb import CMB, mint

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_751_000_000_000
WORDS = [
    "relay",
    "auth",
    "timeout",
    "token",
    "bucket",
    "limiter",
    "docs",
    "review",
    "rocket",
    "billing",
    "search",
    "upload",
    "export",
    "cache",
]


class PlainEncoder:
    """The default kernel behind the bare FieldEncoder protocol: SVAF must treat its lists as outside input."""

    def __init__(self) -> None:
        self.kernel_id, self.dim = DEFAULT_ENCODER.kernel_id, DEFAULT_ENCODER.dim

    def encode(self, text: str) -> list[float]:
        return DEFAULT_ENCODER.encode(text)


def _store(n: int, seed: int = 7) -> list[CMB]:
    rng = random.Random(seed)
    who = NodeIdentity.generate("seed")
    out = []
    for i in range(n):
        fields = {f: " ".join(rng.sample(WORDS, rng.randint(1, 4))) for f in ("focus", "issue", "intent")}
        if i % 4 == 0:
            fields["mood"] = "neutral"
        out.append(mint(fields, identity=who, group="g", created_at=NOW - rng.randint(0, 5_000_000)))
    return out


def test_fast_path_decides_like_the_checked_path() -> None:
    store, incoming = _store(60), _store(20, seed=8)
    weights = {"focus": 2.0}
    decisions = set()
    for k, cmb in enumerate(incoming):
        anchors = store[k : k + 5 * (k % 10)]
        fast = admit(cmb, anchors, weights, NOW)
        slow = admit(cmb, anchors, weights, NOW, encoder=PlainEncoder(), config=config_for(weights))
        decisions.add(fast.decision)
        assert fast.decision == slow.decision
        assert fast.total_drift == pytest.approx(slow.total_drift, abs=1e-12)
        assert fast.max_nearest_drift == pytest.approx(slow.max_nearest_drift, abs=1e-12)
        assert {n: d.anchors for n, d in fast.per_field.items()} == {
            n: d.anchors for n, d in slow.per_field.items()
        }
    assert len(decisions) >= 2  # the store exercises more than one band


def test_own_vectors_are_not_rechecked_but_outside_ones_are(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = svaf._finite

    def counting(value: object) -> bool:
        calls["n"] += 1
        return real(value)

    monkeypatch.setattr(svaf, "_finite", counting)
    store = _store(51)
    admit(store[0], store[1:], None, NOW)
    trusted = calls["n"]
    calls["n"] = 0
    admit(store[0], store[1:], None, NOW, encoder=PlainEncoder())
    # the default kernel's vectors: only ages, confidences and weights are checked (a few per anchor);
    # the same vectors through a foreign encoder: all 512 floats of every anchor field
    assert trusted < 400
    assert calls["n"] > 50 * 512


def test_a_list_that_merely_looks_unit_is_still_checked() -> None:
    bad = {"focus": [float("nan"), 1.0]}
    result = evaluate(bad, [({"focus": UnitVector([1.0, 0.0])}, 0)], SvafConfig())
    assert result.per_field == {}
    unnormalised = evaluate({"focus": [3.0, 4.0]}, [({"focus": UnitVector([0.6, 0.8])}, 0)], SvafConfig())
    assert unnormalised.per_field["focus"].nearest_drift == pytest.approx(0.0, abs=1e-12)


def test_encoder_unit_is_cached_and_encode_still_returns_a_fresh_list() -> None:
    enc = HashedNgramEncoder(dim=64)
    unit = enc.unit("token bucket limiter")
    assert isinstance(unit, UnitVector) and unit is enc.unit("token bucket limiter")
    assert enc.unit(" ... ") is None and enc.encode(" ... ") == [0.0] * 64
    listed = enc.encode("token bucket limiter")
    assert type(listed) is list and listed == list(unit)
    listed[0] = 99.0
    assert enc.encode("token bucket limiter")[0] != 99.0
    # the cached vector is one read-only float64 array: SVAF's matrix products take it as it is
    assert unit.array.dtype.name == "float64" and not unit.array.flags.writeable
    assert unit.array.tolist() == list(unit)


def _modules_after(statement: str) -> set[str]:
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_offline_peer_does_not_load_vendor_sdks() -> None:
    loaded = _modules_after(
        "import xmesh_agent.workers.peer\n"
        "from xmesh_agent.config import ModelConfig\n"
        "from xmesh_agent.models.factory import build_adapter\n"
        "build_adapter(ModelConfig(adapter='offline'))"
    )
    assert "xmesh_agent.workers.peer" in loaded and "xmesh_agent.models.offline" in loaded
    assert not {"anthropic", "openai", "httpx"} & loaded


def test_cli_help_path_imports_nothing_heavy() -> None:
    loaded = _modules_after("import xmesh_agent.cli.app")
    assert not {"anthropic", "openai", "httpx", "temporalio.worker", "xmesh_agent.workers.peer"} & loaded


def test_anthropic_adapter_still_builds_on_demand() -> None:
    loaded = _modules_after(
        "from xmesh_agent.config import ModelConfig\n"
        "from xmesh_agent.models.factory import build_adapter\n"
        "adapter = build_adapter(ModelConfig(adapter='anthropic', api_key='k'))\n"
        "assert type(adapter).__name__ == 'AnthropicAdapter'"
    )
    assert "anthropic" in loaded and "openai" not in loaded
