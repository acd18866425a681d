"""WakeWorkflow: one inbound CMB, one durable wake of one peer.

admit -> reserve -> assemble_context -> call_model -> check_safety -> (await approval) -> emit.
Rejections and suppressions end the wake successfully with a readable outcome; only what a retry
or a replay could fix (the model failing past its retries) fails it.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, FailureError

with workflow.unsafe.imports_passed_through():
    from xmesh_agent.activities.wake import (
        CIRCUIT_OPEN_ERROR,
        MODEL_HEARTBEAT_TIMEOUT,
        PERMANENT_MODEL_ERROR,
        WakeActivities,
    )
    from xmesh_agent.observability import WAKES_METRIC
    from xmesh_agent.roles import CAT7
    from xmesh_agent.secret_shapes import mask_secrets
    from xmesh_agent.wake import approval
    from xmesh_agent.wake.payloads import (
        AdmitInput,
        ApprovalDecision,
        ContextPlan,
        EmitInput,
        ModelCallInput,
        ModelReply,
        Outcome,
        ReserveInput,
        SafetyInput,
        SafetyVerdict,
        WakeInput,
        WakeResult,
        rejected_result,
    )
    from xmesh_agent.workflows import search

LOCAL = {"start_to_close_timeout": timedelta(seconds=30)}
REPLY_FIELD_CHARS = 1000


def reply_lines(fields: dict[str, str]) -> str:
    """The emitted reply as the wake page's details show it: one line per field that carries text."""
    lines = []
    for name in CAT7:
        text = " ".join((fields.get(name) or "").split())
        if text and text.casefold() != "neutral":
            lines.append(f"- **{name}**: {text[:REPLY_FIELD_CHARS]}\n")
    return "**The reply it emitted:**\n\n" + "".join(lines)


LEAN_STAGES_PATCH = "lean-stage-upserts"
"""Wakes started by code with this patch upsert XmStage only at the stages a query can catch a wake in
(every upsert adds a history event and a sandbox round trip to the workflow task). Wakes recorded
before it replay with an upsert per stage, as they ran."""
VISIBLE_STAGES = frozenset({"model", "awaiting-approval"})
"""The stages a wake can wait in for long (the model call, an operator); the rest pass within one
workflow task and would be overwritten before any visibility query saw them. "done" is set at the end."""
HELD_MEMO_PATCH = "held-reply-memo"
"""Wakes held at an approval gate by code with this patch put what they hold in their memo (`held`: rule,
reason, the reply with secret shapes masked), where `wakes`, `status` and the Web UI read it."""
MODEL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=6,
    non_retryable_error_types=[PERMANENT_MODEL_ERROR],
)
MODEL_FALLBACK_PATCH = "model-fallback"
"""Wakes with [model] fallbacks call the models of their chain one after another until one answers."""
BEFORE_FALLBACK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=3,
    non_retryable_error_types=[PERMANENT_MODEL_ERROR, CIRCUIT_OPEN_ERROR],
)
"""A model with a fallback after it gets 3 attempts (~3 s of transient failures), not 6 (~31 s)."""


@workflow.defn(name="WakeWorkflow")
class WakeWorkflow:
    def __init__(self) -> None:
        self._stage = "received"
        self._decision: ApprovalDecision | None = None
        self._awaiting_approval = False
        self._approver_key = ""
        self._peer = ""
        self._lean_stages = False
        self._model_errors: list[str] = []
        self._directed = False
        self._remixed: bool | None = None

    @workflow.run
    async def run(self, wake: WakeInput) -> WakeResult:
        if wake.rejected is not None:
            # SVAF rejected the trigger at arrival (the listener's decision, by store order the one the
            # admit step would reach); the start already put the outcome in search attributes, memo and
            # details. Only wakes started so have this input, so the branch is deterministic on replay.
            self._stage = "done"
            self._count(Outcome.REJECTED)
            return rejected_result(wake.rejected)
        wake_id = workflow.info().workflow_id
        key = wake.cmb_key
        self._lean_stages = workflow.patched(LEAN_STAGES_PATCH)
        chain = bool(wake.models) and workflow.patched(MODEL_FALLBACK_PATCH)

        self._enter("admission")
        admission = await workflow.execute_local_activity_method(
            WakeActivities.admit, AdmitInput(cmb_key=key), summary="admit (SVAF)", **LOCAL
        )
        self._directed, self._remixed = admission.directed, admission.remixed
        if not admission.admitted:
            return self._finish(Outcome.REJECTED, admission.reason or admission.decision, admission.decision)

        self._enter("reserve")
        reservation = await workflow.execute_local_activity_method(
            WakeActivities.reserve,
            ReserveInput(wake_id=wake_id, at_ms=int(workflow.now().timestamp() * 1000), chain=chain),
            summary="reserve budget",
            **LOCAL,
        )
        if not reservation.allowed:
            outcome = reservation.outcome or Outcome.BUDGET_EXCEEDED
            return self._finish(outcome, reservation.reason, admission.decision)

        self._enter("context")
        plan = await workflow.execute_local_activity_method(
            WakeActivities.assemble_context, AdmitInput(cmb_key=key), summary="assemble context", **LOCAL
        )

        self._enter("model")
        if chain:
            reply = await self._call_chain(wake_id, plan, wake.models)
            if reply is None:
                return self._finish(Outcome.CIRCUIT_OPEN, "; ".join(self._model_errors), admission.decision)
        else:
            try:
                reply = await workflow.execute_activity_method(
                    WakeActivities.call_model,
                    ModelCallInput(wake_id=wake_id, plan=plan),
                    start_to_close_timeout=timedelta(minutes=5),
                    heartbeat_timeout=MODEL_HEARTBEAT_TIMEOUT,
                    retry_policy=MODEL_RETRY,
                    summary=f"call model {wake.model}".rstrip(),
                )
            except ActivityError as err:
                self._tag(Outcome.FAILED)
                raise ApplicationError(
                    f"model call failed: {err.cause or err}", type="ModelCallFailed"
                ) from err
        if reply.fields is None:
            return self._finish(Outcome.NO_EMIT, reply.text_excerpt[:120], admission.decision, reply)

        self._enter("safety")
        verdict = await workflow.execute_local_activity_method(
            WakeActivities.check_safety,
            SafetyInput(wake_id=wake_id, cmb_key=key, fields=reply.fields),
            summary="check safety",
            **LOCAL,
        )
        if verdict.action == "block":
            outcome = verdict.outcome or Outcome.SUPPRESSED_GATE
            return self._finish(outcome, verdict.reason, admission.decision, reply)
        if verdict.action == "approve":
            decision = await self._await_approval(verdict, wake, reply.fields)
            if not decision.approved:
                return self._finish(Outcome.DENIED, decision.reason or "denied", admission.decision, reply)

        self._enter("emit")
        emitted = await workflow.execute_local_activity_method(
            WakeActivities.emit,
            EmitInput(wake_id=wake_id, cmb_key=key, fields=reply.fields),
            summary="emit",
            **LOCAL,
        )
        return self._finish(Outcome.EMITTED, emitted.route, admission.decision, reply, emitted.key)

    async def _call_chain(self, wake_id: str, plan: ContextPlan, models: list[str]) -> ModelReply | None:
        """Each model of the chain as its own `call model` activity, until one answers.

        A model falls through to the next on a permanent error (retired id, quota, bad key), an open
        breaker (not called at all) or transient failures past its attempts. None: every breaker was open.
        Fails the wake (ModelCallFailed) when every model failed otherwise.
        """
        circuit_open = 0
        for index, label in enumerate(models):
            last = index == len(models) - 1
            try:
                return await workflow.execute_activity_method(
                    WakeActivities.call_model,
                    ModelCallInput(wake_id=wake_id, plan=plan, model_index=index),
                    start_to_close_timeout=timedelta(minutes=5),
                    heartbeat_timeout=MODEL_HEARTBEAT_TIMEOUT,
                    retry_policy=MODEL_RETRY if last else BEFORE_FALLBACK_RETRY,
                    summary=f"call model {label}" + (f" (fallback {index})" if index else ""),
                )
            except ActivityError as err:
                cause = err.cause
                if isinstance(cause, CancelledError):
                    raise
                kind = cause.type if isinstance(cause, ApplicationError) else type(cause).__name__
                circuit_open += kind == CIRCUIT_OPEN_ERROR
                message = cause.message if isinstance(cause, FailureError) else str(err)
                self._model_errors.append(f"{label}: {message}"[:300])
        if circuit_open == len(models):
            return None
        self._tag(Outcome.FAILED)
        raise ApplicationError(
            "every model of the chain failed: " + "; ".join(self._model_errors), type="ModelCallFailed"
        )

    async def _await_approval(
        self, verdict: SafetyVerdict, wake: WakeInput, fields: dict[str, str]
    ) -> ApprovalDecision:
        self._enter("awaiting-approval")
        self._awaiting_approval = True
        self._approver_key, self._peer = verdict.approver_key, wake.peer
        timeout_s = wake.approval_timeout_seconds
        reply = {name: mask_secrets(text) for name, text in fields.items() if text}
        if workflow.patched(HELD_MEMO_PATCH):
            workflow.upsert_memo({"held": {"rule": verdict.rule, "reason": verdict.reason, "reply": reply}})
        ref = approval.short_ref(workflow.info().workflow_id)
        workflow.set_current_details(
            f"**Awaiting approval** — {verdict.reason}\n\n"
            "**The reply it would emit:**\n\n"
            + "".join(f"- **{name}**: {text}\n" for name, text in reply.items())
            + f"\nApprove: `xmesh-agent approve {ref}` (or `xmesh-agent approve --peer {wake.peer}`)\n\n"
            f'Deny: `xmesh-agent deny {ref} --reason "…"`\n\n'
            f"Only the operator of {wake.peer} decides: the decision is signed with its key."
        )
        try:
            await workflow.wait_condition(
                lambda: self._decision is not None,
                timeout=timedelta(seconds=timeout_s),
                timeout_summary=f"awaiting approval ({verdict.rule}): xmesh-agent approve {ref}; "
                f"denied after {timeout_s} s",
            )
        except TimeoutError:
            self._decision = ApprovalDecision(approved=False, by="timeout", reason="approval timed out")
        self._awaiting_approval = False
        assert self._decision is not None
        return self._decision

    @workflow.update(name="decide")
    async def decide(self, decision: ApprovalDecision) -> str:
        self._decision = decision
        return "approved" if decision.approved else "denied"

    @decide.validator
    def _validate_decision(self, decision: ApprovalDecision) -> None:
        if not self._awaiting_approval or self._decision is not None:
            raise ValueError("this wake is not awaiting approval")
        info = workflow.info()
        now_ms = int(workflow.now().timestamp() * 1000)
        refused = approval.refusal(
            decision, info.workflow_id, info.run_id, self._approver_key, self._peer, now_ms
        )
        if refused:
            raise ValueError(f"refused: {refused}")

    @workflow.query(name="stage")
    def stage(self) -> str:
        return self._stage

    def _enter(self, stage: str) -> None:
        self._stage = stage  # the `stage` query always sees every stage
        if not self._lean_stages or stage in VISIBLE_STAGES:
            workflow.upsert_search_attributes([search.STAGE.value_set(stage)])

    def _count(self, outcome: Outcome) -> None:
        """xmesh_wakes_total{outcome}: Temporal's workflow meter records it once, never on replay."""
        meter = workflow.metric_meter()
        meter.create_counter(WAKES_METRIC, "Wakes by outcome").add(1, {"outcome": outcome.value})

    def _tag(self, outcome: Outcome) -> None:
        self._count(outcome)
        workflow.upsert_search_attributes(
            [search.OUTCOME.value_set(outcome.value), search.STAGE.value_set("done")]
        )

    def _finish(
        self,
        outcome: Outcome,
        reason: str,
        admission: str,
        reply: ModelReply | None = None,
        emitted_key: str | None = None,
    ) -> WakeResult:
        result = WakeResult(
            outcome=outcome,
            reason=reason,
            emitted_key=emitted_key,
            admission=admission,
            cost_usd=reply.cost_usd if reply else None,
            input_tokens=reply.input_tokens if reply else 0,
            output_tokens=reply.output_tokens if reply else 0,
            model=reply.label if reply else "",
            model_errors=self._model_errors,
            directed=self._directed,
            remixed=self._remixed,
        )
        self._count(outcome)
        updates = [search.OUTCOME.value_set(outcome.value), search.STAGE.value_set("done")]
        if reply:
            updates.append(search.TOKENS.value_set(reply.input_tokens + reply.output_tokens))
            if reply.cost_usd is not None:
                updates.append(search.COST.value_set(reply.cost_usd))
        workflow.upsert_search_attributes(updates)
        workflow.upsert_memo({"result": result.model_dump(mode="json")})
        details = f"**{outcome.value}**" + (f" — {reason}" if reason else "")
        if self._directed:
            memory = "kept in memory" if self._remixed else "delivered only, not kept in memory"
            details += f"\n\ndirected to this peer (§9.2.2); SVAF {admission}: {memory}"
        if emitted_key:
            details += f"\n\nemitted `{emitted_key}`"
            if reply and reply.fields:
                details += "\n\n" + reply_lines(reply.fields)
        if reply and reply.model_index:
            details += f"\n\nanswered by `{reply.label}` (fallback {reply.model_index})"
        for error in self._model_errors:
            details += f"\n\n- {error}"
        workflow.set_current_details(details)
        return result
