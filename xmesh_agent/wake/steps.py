"""The steps of one wake, over a peer's parts (config, identity, store, node, model, ledgers).

Plain async Python with no Temporal import: `activities/` wraps each method as an activity.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Protocol

from xmesh_agent.clock import now_ms
from xmesh_agent.config import AgentConfig
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.admission.encoder import admit_stored, config_for
from xmesh_agent.mmp.admission.semantic import encoder_named
from xmesh_agent.mmp.admission.svaf import SvafConfig
from xmesh_agent.mmp.cmb import CAT7, CMB, NEUTRAL, content_key, mint, minted_texts
from xmesh_agent.mmp.store import CMBStore
from xmesh_agent.models.base import CircuitOpenError, ModelAdapter, ModelError, PermanentModelError
from xmesh_agent.observability import NO_METRICS, PeerMetrics, span
from xmesh_agent.safety import choose_route, clamp_max_tokens, detect_cycle
from xmesh_agent.wake import approval
from xmesh_agent.wake.context import plan_context, render_request
from xmesh_agent.wake.events import EventLog, no_log, wake_events
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
from xmesh_agent.wake.safety_state import SafetyState


class Mesh(Protocol):
    """What the wake needs of the mesh node."""

    async def publish(self, cmb: CMB) -> int: ...

    def peers(self) -> list: ...


ANCHOR_WINDOW = 50
"""How many of the peer's CMBs stored just before an inbound one SVAF compares it against."""


async def admission(
    store: CMBStore, config: AgentConfig, cmb_key: str, node_id: str | None = None
) -> AdmitResult:
    """SVAF per-field drift with the peer's α weights, against what it held when the CMB arrived.

    The anchors are the group's CMBs stored before this one (store order), judged at its arrival
    time: the same decision however late it is asked, so the listener may decide at arrival (a
    rejected CMB's wake then only records it) and a wake's admit step, or a replay, decides the same.
    Anchors stored more than the profile's `memory_days` before the CMB arrived no longer count
    (§19.2). A CMB directed to `node_id` (this peer) is admitted whatever SVAF says (§9.2.2); SVAF's
    verdict is kept beside it as the memory decision.
    """
    view = store.admission_view(cmb_key, config.group, ANCHOR_WINDOW)
    if view is None:
        raise LookupError(f"CMB {cmb_key} is not in {config.name}'s store")
    trigger, anchors = view
    if config.mesh.memory_days:
        oldest = trigger.received_at - int(config.mesh.memory_days * 86_400_000)
        anchors = [a for a in anchors if a.received_at >= oldest]
    svaf = SvafConfig(**{**vars(config_for(config.weights)), "freshness_seconds": _freshness(config)})
    if config.mesh.encoder == "lexical":
        result = admit_stored(trigger, anchors, config.weights, config=svaf)
    else:  # a model call (and its first load): off the event loop the mesh node shares
        encoder = encoder_named(config.mesh.encoder)
        semantic = config_for(config.weights, encoder)
        svaf = SvafConfig(**{**vars(semantic), "freshness_seconds": _freshness(config)})
        result = await asyncio.to_thread(
            admit_stored, trigger, anchors, config.weights, encoder=encoder, config=svaf
        )
    to = trigger.cmb.to
    directed = bool(to) and to in (node_id, config.name)
    verdict = f"SVAF {result.decision} (drift {result.total_drift:.3f})"
    if directed:
        memory = "kept in memory" if result.accepted else "delivered only, not kept in memory"
        reason = f"directed to this peer; {verdict}: {memory}"
    else:
        reason = "" if result.accepted else verdict
    return AdmitResult(
        admitted=result.accepted or directed,
        decision=result.decision,
        drift=round(result.total_drift, 4),
        reason=reason,
        directed=directed,
        remixed=result.accepted,
    )


def _freshness(config: AgentConfig) -> float:
    return float(config.mesh.freshness_seconds or SvafConfig().freshness_seconds)


@dataclass
class WakeSteps:
    config: AgentConfig
    identity: NodeIdentity
    store: CMBStore
    ledger: WakeLedger
    mesh: Mesh
    adapter: ModelAdapter
    safety: SafetyState
    log: EventLog = field(default=no_log)
    """Where the steps report what they decided (the peer's structured log); a no-op by default."""
    fallbacks: list[ModelAdapter] = field(default_factory=list)
    """The [model] fallback adapters, in chain order; `adapter` is the primary."""
    metrics: PeerMetrics = field(default=NO_METRICS)
    """The peer's Prometheus metrics (a no-op unless [observability] metrics is set)."""

    @property
    def adapters(self) -> list[ModelAdapter]:
        return [self.adapter, *self.fallbacks]

    def _cmb(self, key: str) -> CMB:
        cmb = self.store.get(key)
        if cmb is None:
            raise LookupError(f"CMB {key} is not in {self.config.name}'s store")
        return cmb

    async def _admit(self, cmb_key: str) -> AdmitResult:
        return await admission(self.store, self.config, cmb_key, self.identity.node_id)

    async def _reserve(self, wake_id: str, at_ms: int | None = None, chain: bool = False) -> ReserveResult:
        """Cost caps, then the wake budget, then the breaker: a wake that may not run says why.

        `at_ms` is the wake's own clock (the workflow's time), so budget and cost windows follow it.
        `chain`: the wake has fallback models; it is refused only when every model's breaker is open, and
        each model call claims its own breaker (a half-open probe) when it runs.
        """
        env, now = self.safety, at_ms or now_ms()
        cost = env.check_cost(now)
        if not cost.allowed:
            return ReserveResult(allowed=False, outcome=Outcome.COST_CAP, reason=cost.reason or "cost cap")
        budget = env.budget.reserve(wake_id, now)
        if not budget.allowed:
            counts = budget.counts
            return ReserveResult(
                allowed=False,
                outcome=Outcome.BUDGET_EXCEEDED,
                reason=f"{budget.reason} (minute={counts.minute} hour={counts.hour} day={counts.day})",
            )
        if chain:
            snaps = [b.snapshot(now) for b in env.breakers]
            if all(snap.state == "open" for snap in snaps):
                return ReserveResult(
                    allowed=False,
                    outcome=Outcome.CIRCUIT_OPEN,
                    reason=f"circuit open for all {len(snaps)} models of the chain",
                )
            permit = None
        else:
            permit = env.breaker.allow(now)
        if permit is not None and not permit.allowed:
            snap = permit.snapshot
            return ReserveResult(
                allowed=False,
                outcome=Outcome.CIRCUIT_OPEN,
                reason=f"circuit open after {snap.consecutive_failures} model failures",
            )
        warning = f"wake budget at 80% of the {budget.soft_warning} cap" if budget.soft_warning else None
        return ReserveResult(allowed=True, warning=warning)

    async def assemble_context(self, cmb_key: str) -> ContextPlan:
        return plan_context(self.store, self.config, cmb_key)

    async def _call_model(
        self,
        wake_id: str,
        plan: ContextPlan,
        attempt: int = 1,
        at_ms: int | None = None,
        model_index: int | None = None,
    ) -> ModelReply:
        """`at_ms`: when this attempt was scheduled (server time); the cost is charged at that time.

        `model_index` (a wake with fallbacks): which model of the chain to call; its own breaker must allow
        the call first, else CircuitOpenError sends the wake on to the next model without a request.
        """
        at = at_ms or now_ms()
        index = model_index or 0
        if index >= len(self.adapters):
            raise PermanentModelError(f"model {index} is not in this peer's chain of {len(self.adapters)}")
        adapter, breaker = self.adapters[index], self.safety.breakers[index]
        label = f"{adapter.name}/{adapter.model}"
        if model_index is not None:
            permit = breaker.allow(at)
            if not permit.allowed:
                snap = permit.snapshot
                self.metrics.model_call(label, "circuit-open", 0.0)
                raise CircuitOpenError(
                    f"{adapter.name}/{adapter.model}: circuit {snap.state} after "
                    f"{snap.consecutive_failures} consecutive failures; not called"
                )
        request = render_request(self.store, self.config, plan)
        trigger = self._cmb(plan.cmb_key)
        request.role = self.config.identity.role or ""
        request.trigger = trigger.texts()
        request.max_tokens = clamp_max_tokens(request.max_tokens, self.config.model.max_tokens_per_call)
        started = time.monotonic()
        try:
            with span("model.call", {"xmesh.model": label, "xmesh.attempt": attempt}):
                response = await adapter.complete(request)
        except ModelError as exc:
            kind = "transient" if exc.transient else "permanent"
            self.metrics.model_call(label, kind, time.monotonic() - started)
            self.metrics.breaker(label, breaker.record_failure(at, transient=exc.transient).state)
            raise
        self.metrics.breaker(label, breaker.record_success(at).state)
        self.metrics.model_call(
            label,
            "ok",
            time.monotonic() - started,
            response.usage.input_tokens,
            response.usage.output_tokens,
            response.cost_usd,
        )
        self.safety.cost.record(
            wake_id,
            attempt if index == 0 else f"m{index}-{attempt}",
            response.cost_usd,
            at,
            input_tokens=response.usage.input_tokens,
            output_tokens=response.usage.output_tokens,
            model=response.model,
        )
        self.safety.check_cost(at)  # says so now if this call reached a cost cap
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
            adapter=response.adapter or adapter.name,
            model_index=index,
        )

    async def _check_safety(self, wake_id: str, cmb_key: str, fields: dict[str, str]) -> SafetyVerdict:
        """Empty replies, cycles back to this peer (unless it commits to something), approval gates."""
        if not fields:
            return SafetyVerdict(action="block", outcome=Outcome.SUPPRESSED_EMPTY, reason="no field text")
        trigger = self._cmb(cmb_key)
        cycle = detect_cycle(
            fields,
            [trigger.key, *trigger.ancestors],
            self.config.name,
            self.config.safety.cycle_depth,
            resolver=self.store.get,
        )
        if cycle.suspect:
            return SafetyVerdict(
                action="block",
                outcome=Outcome.SUPPRESSED_CYCLE,
                rule="self-ancestor",
                reason=f"own CMB {cycle.hit_key} at depth {cycle.hit_depth}",
            )
        gate = self.safety.gates.check(fields)
        if gate.action == "pass":
            return SafetyVerdict(action="pass")
        reason = f"rule {gate.rule} on {gate.field}: {gate.excerpt}"
        if gate.action == "block":
            return SafetyVerdict(
                action="block", outcome=Outcome.SUPPRESSED_GATE, rule=gate.rule or "", reason=reason
            )
        key = self.identity.public_key_b64url
        return SafetyVerdict(action="approve", rule=gate.rule or "", reason=reason, approver_key=key)

    async def _emit(self, wake_id: str, cmb_key: str, fields: dict[str, str]) -> EmitResult:
        """Mint, store and send the reply. Idempotent: a retried emit re-sends the same CMB."""
        trigger = self._cmb(cmb_key)
        peers = list(self.mesh.peers())
        route = choose_route(
            self.config.routing.response_routing, trigger.created_by, [p.name for p in peers]
        )
        to = next((p.node_id for p in peers if p.name == route.to), None) if route.to else None
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
                to=to,
            )
            self.store.put(cmb, source="own")
        self.ledger.record_emission(wake_id, cmb.key)
        with span("mmp.publish", {"mmp.cmb.key": cmb.key, "mmp.to": route.to}) as current:
            delivered = await self.mesh.publish(cmb)
            if current is not None:
                current.set_attribute("mmp.delivered_to", delivered)
        kind = "targeted" if cmb.to else "broadcast"
        return EmitResult(key=cmb.key, route=kind, to=route.to if cmb.to else None, delivered_to=delivered)

    # -- the entry points the activities call: each step, then its log event -----------------------

    async def admit(self, cmb_key: str) -> AdmitResult:
        return wake_events.admit(self.log, cmb_key, await self._admit(cmb_key))

    async def reserve(self, wake_id: str, at_ms: int | None = None, chain: bool = False) -> ReserveResult:
        return wake_events.reserve(self.log, wake_id, await self._reserve(wake_id, at_ms, chain))

    async def call_model(
        self,
        wake_id: str,
        plan: ContextPlan,
        attempt: int = 1,
        at_ms: int | None = None,
        model_index: int | None = None,
    ) -> ModelReply:
        with wake_events.model_errors(self.log, wake_id, attempt):
            reply = await self._call_model(wake_id, plan, attempt, at_ms, model_index)
            return wake_events.model_call(self.log, wake_id, reply)

    async def check_safety(self, wake_id: str, cmb_key: str, fields: dict[str, str]) -> SafetyVerdict:
        verdict = await self._check_safety(wake_id, cmb_key, fields)
        if verdict.action == "approve":
            approval.announce(self.config.name, wake_id, verdict, fields)
        return wake_events.safety(self.log, wake_id, verdict)

    async def emit(self, wake_id: str, cmb_key: str, fields: dict[str, str]) -> EmitResult:
        return wake_events.emitted(self.log, wake_id, await self._emit(wake_id, cmb_key, fields), fields)
