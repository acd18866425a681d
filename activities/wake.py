"""The wake's activities. Each is a one-line hop into WakeSteps plus error translation."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError

from xmesh_agent.models.base import ModelError
from xmesh_agent.wake.payloads import (
    AdmitInput,
    AdmitResult,
    ContextPlan,
    EmitInput,
    EmitResult,
    ModelCallInput,
    ModelReply,
    ReserveInput,
    ReserveResult,
    SafetyInput,
    SafetyVerdict,
)
from xmesh_agent.wake.steps import WakeSteps

PERMANENT_MODEL_ERROR = "PermanentModelError"
CIRCUIT_OPEN_ERROR = "CircuitOpenError"
"""A model of a wake's chain whose breaker is open: not retried, the wake moves to the next model."""
MODEL_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
"""How soon a lost model call (its worker died) is retried; the workflow sets it on call_model."""
HEARTBEAT_EVERY = timedelta(seconds=2)


class WakeActivities:
    """Bound to one peer's WakeSteps; registered on that peer's task queue only."""

    def __init__(self, steps: WakeSteps):
        self.steps = steps

    @activity.defn(name="admit")
    async def admit(self, inp: AdmitInput) -> AdmitResult:
        return await self.steps.admit(inp.cmb_key)

    @activity.defn(name="reserve")
    async def reserve(self, inp: ReserveInput) -> ReserveResult:
        return await self.steps.reserve(inp.wake_id, inp.at_ms, inp.chain)

    @activity.defn(name="assemble_context")
    async def assemble_context(self, inp: AdmitInput) -> ContextPlan:
        return await self.steps.assemble_context(inp.cmb_key)

    @activity.defn(name="call_model")
    async def call_model(self, inp: ModelCallInput) -> ModelReply:
        """The model call, heartbeating while it runs: a worker that dies mid-call (SIGKILL, OOM) is
        noticed within the heartbeat timeout and the call retried elsewhere, not after start-to-close."""
        info = activity.info()
        scheduled = int(info.current_attempt_scheduled_time.timestamp() * 1000)
        call = asyncio.ensure_future(
            self.steps.call_model(inp.wake_id, inp.plan, info.attempt, scheduled, inp.model_index)
        )
        try:
            while not call.done():
                await asyncio.wait({call}, timeout=HEARTBEAT_EVERY.total_seconds())
                if not call.done():
                    activity.heartbeat()
            return call.result()
        except ModelError as exc:
            delay = timedelta(seconds=exc.retry_after) if exc.retry_after else None
            raise ApplicationError(
                str(exc),
                type=type(exc).__name__,
                non_retryable=not exc.transient,
                next_retry_delay=delay,
            ) from None
        finally:
            call.cancel()  # a no-op once done; stops the HTTP call when the activity is cancelled

    @activity.defn(name="check_safety")
    async def check_safety(self, inp: SafetyInput) -> SafetyVerdict:
        return await self.steps.check_safety(inp.wake_id, inp.cmb_key, inp.fields)

    @activity.defn(name="emit")
    async def emit(self, inp: EmitInput) -> EmitResult:
        return await self.steps.emit(inp.wake_id, inp.cmb_key, inp.fields)

    def all(self) -> list:
        return [
            self.admit,
            self.reserve,
            self.assemble_context,
            self.call_model,
            self.check_safety,
            self.emit,
        ]
