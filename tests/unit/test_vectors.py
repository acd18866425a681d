"""Every case of the MMP conformance vector files for what this runtime implements (key, signature,
SVAF), reproduced exactly. `tether-v1.json` (§15.8 remix tether) is kept as data: no code path checks it."""

from __future__ import annotations

import json

import pytest
from nacl.signing import SigningKey

from tests.mmp_data import mmp_path
from xmesh_agent.identity import NodeIdentity, b64url_decode, b64url_encode, verify_signature
from xmesh_agent.mmp.admission.svaf import SvafConfig, evaluate
from xmesh_agent.mmp.cmb import (
    CMB,
    content_key,
    minted_texts,
    sign_cmb,
    signing_payload,
    verify_cmb_signature,
)

VECTORS = mmp_path("vectors")


def _load(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


KEY = _load("cmb-key-v1.json")
SIG = _load("cmb-sig-v1.json")
SVAF = _load("svaf-baseline.json")


def _ids(cases: list[dict]) -> list[str]:
    return [c["label"] for c in cases]


def _texts(fields: dict) -> dict[str, str]:
    return {k: v if isinstance(v, str) else v["text"] for k, v in fields.items()}


def _test_identity() -> NodeIdentity:
    seed = bytes.fromhex(SIG["testKeypair"]["seedHex"])
    return NodeIdentity("vector-author", "vector-node", SigningKey(seed), "")


# --- cmb-key-v1 (§8.2.1) ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", KEY["cases"], ids=_ids(KEY["cases"]))
def test_cmb_key(case: dict) -> None:
    texts = minted_texts(_texts(case["fields"]))
    parents = case.get("parents", [])
    assert content_key(texts, parents, case.get("receiver")) == case["expectedKey"]


def test_cmb_key_nfc_forms_agree() -> None:
    base = minted_texts(_texts(KEY["cases"][1]["fields"]))
    decomposed = {**base, "focus": base["focus"].replace("é", "e\u0301")}
    assert decomposed["focus"] != base["focus"]
    assert content_key(decomposed) == content_key(base)


def test_remix_key_requires_receiver() -> None:
    with pytest.raises(ValueError):
        content_key(minted_texts({"focus": "x"}), ["cmb1-" + "a" * 64])


# --- cmb-sig-v1 (§18.3.1) --------------------------------------------------------------------------


def test_test_keypair_matches() -> None:
    identity = _test_identity()
    assert identity.public_key_b64url == SIG["testKeypair"]["publicKeyB64url"]
    assert b64url_encode(bytes(identity.signing_key)) == SIG["testKeypair"]["privateKeyB64url"]


@pytest.mark.parametrize("case", SIG["cases"], ids=_ids(SIG["cases"]))
def test_cmb_signature(case: dict) -> None:
    c = case["cmb"]
    payload = signing_payload(c["key"], c["createdBy"], c["createdAt"], c["group"], c.get("to"))
    assert payload.hex() == case["signingPayloadHex"]
    identity = _test_identity()
    cmb = CMB(
        key=c["key"],
        created_by=c["createdBy"],
        created_at=c["createdAt"],
        group=c["group"],
        to=c.get("to"),
        fields={},
    )
    signed = sign_cmb(cmb, identity)
    assert signed.sig == case["expectedSig"]
    assert signed.sig_alg == case["sigAlg"]
    public = b64url_decode(SIG["testKeypair"]["publicKeyB64url"])
    assert verify_signature(public, payload, b64url_decode(case["expectedSig"]))
    assert verify_cmb_signature(signed, public)
    # the signature binds the audience: retargeting it breaks verification
    moved = signed.model_copy(update={"to": "someone-else"})
    assert not verify_cmb_signature(moved, public)


# --- svaf-baseline (§9.2, §9.2.1) ------------------------------------------------------------------


@pytest.mark.parametrize("case", SVAF["cases"], ids=_ids(SVAF["cases"]))
def test_svaf_baseline(case: dict) -> None:
    age = case["ageSeconds"]
    anchors = [(a, age) for a in case["anchors"]]
    result = evaluate(case["incoming"], anchors, SvafConfig.from_json(case["config"]), age_s=age)
    expected = case["expected"]
    assert result.accepted is expected["accepted"]
    assert result.decision == expected["decision"]
    # the vectors print nine fractional digits
    assert result.total_drift == pytest.approx(expected["totalDrift"], abs=1e-9)
    if "maxNearestDrift" in expected:
        assert result.max_nearest_drift == pytest.approx(expected["maxNearestDrift"], abs=1e-9)


@pytest.mark.parametrize("anchor_age", [0, 600, 36000])
def test_svaf_flip_window_depends_on_signal_age_not_anchor_age(anchor_age: int) -> None:
    case = SVAF["cases"][4]
    cfg = SvafConfig.from_json(case["config"])
    fresh = evaluate(case["incoming"], [(case["anchors"][0], anchor_age)], cfg, age_s=0)
    stale = evaluate(case["incoming"], [(case["anchors"][0], anchor_age)], cfg, age_s=36000)
    assert fresh.decision == "guarded"
    assert stale.decision == "rejected"
