"""Signed approval decisions (xmesh_agent.wake.approval): what the wake's validator accepts and refuses."""

from __future__ import annotations

import pytest

from xmesh_agent.identity import NodeIdentity
from xmesh_agent.wake import approval

WID, RUN, NOW = "wake-p-cmb1-" + "ab" * 32, "run-1", 1_800_000_000_000


@pytest.fixture
def operator() -> NodeIdentity:
    return NodeIdentity.generate("p")


def _signed(identity: NodeIdentity, **kw) -> approval.ApprovalDecision:
    args = {"approved": True, "by": "alice", "reason": "", "now_ms": NOW} | kw
    return approval.sign(identity, WID, RUN, **args)


def test_the_operators_decision_for_this_run_is_taken(operator: NodeIdentity) -> None:
    key = operator.public_key_b64url
    assert approval.refusal(_signed(operator), WID, RUN, key, "p", NOW + 1000) is None
    assert approval.refusal(_signed(operator, approved=False, reason="no"), WID, RUN, key, "p", NOW) is None


def test_every_other_decision_is_refused_with_its_reason(operator: NodeIdentity) -> None:
    key = operator.public_key_b64url
    good = _signed(operator)
    cases = {
        "not signed": good.model_copy(update={"signature": ""}),
        "does not verify": good.model_copy(update={"reason": "edited after signing"}),
        "not base64url": good.model_copy(update={"signature": "!!!"}),
    }
    for why, decision in cases.items():
        refused = approval.refusal(decision, WID, RUN, key, "p", NOW)
        assert refused and why in refused and "only the operator of peer p" in refused
    other_key = _signed(NodeIdentity.generate("p"))
    assert "does not verify with p's key" in (approval.refusal(other_key, WID, RUN, key, "p", NOW) or "")
    assert "does not verify" in (approval.refusal(good, WID, "run-2", key, "p", NOW) or "")
    assert "does not verify" in (approval.refusal(good, WID + "0", RUN, key, "p", NOW) or "")
    stale = approval.refusal(good, WID, RUN, key, "p", NOW + approval.MAX_SKEW_MS + 1)
    assert stale and "10 minutes" in stale
    assert "trusts no key" in (approval.refusal(good, WID, RUN, "", "p", NOW) or "")


def test_short_ref_is_the_trigger_key_prefix() -> None:
    assert approval.short_ref(WID) == "ab" * 6
    assert approval.short_ref("wake-x") == "wake-x"
    assert approval.decide_commands(WID) == (
        f'xmesh-agent approve {"ab" * 6}   |   xmesh-agent deny {"ab" * 6} --reason "…"'
    )
