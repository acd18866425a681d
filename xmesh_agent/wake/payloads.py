"""What crosses the workflow boundary: small pydantic models, keys instead of whole contexts."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class Outcome(StrEnum):
    REJECTED = "rejected"
    BUDGET_EXCEEDED = "budget-exceeded"
    COST_CAP = "cost-cap"
    CIRCUIT_OPEN = "circuit-open"
    NO_EMIT = "no-emit"
    SUPPRESSED_EMPTY = "suppressed-empty"
    SUPPRESSED_CYCLE = "suppressed-cycle"
    SUPPRESSED_GATE = "suppressed-gate"
    DENIED = "denied"
    EMITTED = "emitted"
    FAILED = "failed"


class AdmitResult(BaseModel):
    """Whether the CMB surfaces (wakes the peer), and SVAF's verdict on it.

    A broadcast surfaces when SVAF admits it. A CMB directed to this peer (MMP §9.2.2) always
    surfaces; SVAF's `decision` then only says whether it joins memory: `remixed` (the spec's
    ingestion indicator) is True when SVAF admitted it, False for delivery without admission.
    """

    admitted: bool
    decision: str
    drift: float = 0.0
    reason: str = ""
    directed: bool = False
    remixed: bool | None = None


class WakeInput(BaseModel):
    """The trigger of a wake: which peer, which CMB (by key; the peer's store holds the body)."""

    peer: str
    group: str
    cmb_key: str
    trigger_author: str
    approval_timeout_seconds: int = 3600
    replay_of: str | None = Field(default=None, description="Workflow id this wake re-runs.")
    rejected: AdmitResult | None = Field(
        default=None,
        description="Set by the listener when SVAF rejected the trigger at arrival: the wake only records it.",
    )
    model: str = Field(
        default="", description="The model as adapter/model: the call-model step's summary in the Web UI."
    )
    models: list[str] = Field(
        default_factory=list,
        description="The model chain as adapter/model labels when [model] has fallbacks; empty: one model.",
    )


class AdmitInput(BaseModel):
    cmb_key: str


class ReserveInput(BaseModel):
    wake_id: str
    at_ms: int | None = Field(default=None, description="The workflow's clock; budget windows follow it.")
    chain: bool = Field(default=False, description="The wake has fallback models (each checks its breaker).")


class ReserveResult(BaseModel):
    allowed: bool
    outcome: Outcome | None = None
    reason: str = ""
    warning: str | None = None


class ContextPlan(BaseModel):
    """Which CMBs the model will see, by key; call_model renders them from the store."""

    cmb_key: str
    lineage_keys: list[str] = Field(default_factory=list)
    own_keys: list[str] = Field(default_factory=list)
    group_keys: list[str] = Field(default_factory=list)
    dropped_sections: list[str] = Field(default_factory=list)
    estimated_tokens: int = 0


class ModelCallInput(BaseModel):
    wake_id: str
    plan: ContextPlan
    model_index: int | None = Field(
        default=None, description="Which model of the chain (a wake with fallbacks); None: the one model."
    )


class ModelReply(BaseModel):
    fields: dict[str, str] | None = None
    text_excerpt: str = ""
    stop_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    model: str = ""
    adapter: str = ""
    model_index: int = Field(default=0, description="0: the [model] itself; n: its n-th fallback.")

    @property
    def label(self) -> str:
        return f"{self.adapter}/{self.model}" if self.adapter else self.model


class SafetyInput(BaseModel):
    wake_id: str
    cmb_key: str
    fields: dict[str, str]


class SafetyVerdict(BaseModel):
    action: str = Field(description="pass | block | approve")
    outcome: Outcome | None = None
    rule: str = ""
    reason: str = ""
    approver_key: str = Field(
        default="",
        description="approve: the peer's public key (base64url); only decisions signed with it are taken.",
    )


class EmitInput(BaseModel):
    wake_id: str
    cmb_key: str
    fields: dict[str, str]


class EmitResult(BaseModel):
    key: str
    route: str
    to: str | None = None
    delivered_to: int = 0


class ApprovalDecision(BaseModel):
    approved: bool
    by: str = "operator"
    reason: str = ""
    signed_at_ms: int = 0
    signature: str = Field(default="", description="ed25519 by the peer's key (xmesh_agent.wake.approval).")


class WakeResult(BaseModel):
    outcome: Outcome
    reason: str = ""
    emitted_key: str | None = None
    cost_usd: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    admission: str = ""
    model: str = Field(default="", description="adapter/model of the model that answered.")
    model_errors: list[str] = Field(
        default_factory=list, description="Why each model before it in the chain did not answer."
    )
    directed: bool = Field(default=False, description="The trigger was directed to this peer (§9.2.2).")
    remixed: bool | None = Field(
        default=None, description="SVAF admitted the trigger to memory (False: delivered only)."
    )


def rejected_result(verdict: AdmitResult) -> WakeResult:
    """The result of a wake whose trigger SVAF rejected: what its workflow returns and its memo holds."""
    return WakeResult(
        outcome=Outcome.REJECTED, reason=verdict.reason or verdict.decision, admission=verdict.decision
    )
