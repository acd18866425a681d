"""The steps of one wake, over a peer's parts (config, identity, store, node, model, ledgers).

Plain async Python with no Temporal import: `activities/` wraps each method as an activity.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from xmesh_agent.config import AgentConfig
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import CAT7, CMB, NEUTRAL, content_key, mint, minted_texts
from xmesh_agent.mmp.store import CMBStore
from xmesh_agent.models.base import ModelAdapter
from xmesh_agent.wake.context import plan_context, render_request
from xmesh_agent.wake.ledger import WakeLedger
from xmesh_agent.wake.payloads import (
    AdmitResult,
    ContextPlan,
    EmitResult,
    ModelReply,
    Outcome,
    ReserveResult,
    SafetyVerdict,
)


class Mesh(Protocol):
    """What the wake needs of the mesh node."""

    async def publish(self, cmb: CMB) -> int: ...

    def peers(self) -> list: ...


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class WakeSteps:
    config: AgentConfig
    identity: NodeIdentity
    store: CMBStore
    ledger: WakeLedger
    mesh: Mesh
    adapter: ModelAdapter

    def _cmb(self, key: str) -> CMB:
        cmb = self.store.get(key)
        if cmb is None:
            raise LookupError(f"CMB {key} is not in {self.config.name}'s store")
        return cmb

    async def admit(self, cmb_key: str) -> AdmitResult:
        self._cmb(cmb_key)
        return AdmitResult(admitted=True, decision="aligned")

    async def reserve(self, wake_id: str) -> ReserveResult:
        return ReserveResult(allowed=True)

    async def assemble_context(self, cmb_key: str) -> ContextPlan:
        return plan_context(self.store, self.config, cmb_key)

    async def call_model(self, wake_id: str, plan: ContextPlan) -> ModelReply:
        request = render_request(self.store, self.config, plan)
        trigger = self._cmb(plan.cmb_key)
        request.role = self.config.identity.role or ""
        request.trigger = trigger.texts()
        response = await self.adapter.complete(request)
        fields = None
        if response.fields is not None:
            fields = {
                f: v.strip()
                for f, v in response.fields.items()
                if f in CAT7 and isinstance(v, str) and v.strip() and v.strip() != NEUTRAL
            }
        return ModelReply(
            fields=fields,
            text_excerpt=response.text[:200],
            stop_reason=response.stop_reason,
            input_tokens=response.usage.input_tokens,
            output_tokens=response.usage.output_tokens,
            cost_usd=response.cost_usd,
            model=response.model,
        )

    async def check_safety(self, wake_id: str, cmb_key: str, fields: dict[str, str]) -> SafetyVerdict:
        if not fields:
            return SafetyVerdict(action="block", outcome=Outcome.SUPPRESSED_EMPTY, reason="no field text")
        return SafetyVerdict(action="pass")

    async def emit(self, wake_id: str, cmb_key: str, fields: dict[str, str]) -> EmitResult:
        """Mint, store and send the reply. Idempotent: a retried emit re-sends the same CMB."""
        trigger = self._cmb(cmb_key)
        key = self.ledger.emission_of(wake_id) or content_key(
            minted_texts(fields), [trigger.key], self.identity.node_id
        )
        cmb = self.store.get(key)
        if cmb is None:
            cmb = mint(
                fields,
                identity=self.identity,
                group=self.config.group,
                created_at=now_ms(),
                parents=[trigger],
            )
            self.store.put(cmb, source="own")
        self.ledger.record_emission(wake_id, cmb.key)
        delivered = await self.mesh.publish(cmb)
        return EmitResult(key=cmb.key, route="broadcast", to=cmb.to, delivered_to=delivered)
