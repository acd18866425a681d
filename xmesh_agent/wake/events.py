"""The wake's event vocabulary: what the wake steps and the listener log, and the hook they log through.

Events are built from the step results, never from field text: gate verdicts carry only the gates'
masked excerpt, and that is all a suppressed event shows. Where the events are written (the peer's
JSONL file) is `xmesh_agent.logs`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from xmesh_agent.roles import CAT7

EventLog = Callable[..., None]
"""What the runtime's parts log through: (evt, data=None, level="info"); a PeerLog or `no_log`."""


def no_log(evt: str, data: dict[str, Any] | None = None, level: str = "info") -> None:
    """The default hook of WakeSteps / WakeStarter: logging is optional for them."""


class wake_events:  # noqa: N801 - a namespace of the wake steps' log events
    """The wake steps' events, one builder per step result."""

    @staticmethod
    def admit(log: EventLog, cmb_key: str, result: Any) -> Any:
        data = {"cmbKey": cmb_key, "decision": result.decision, "drift": result.drift}
        if result.admitted:
            log("admitted", data)
        else:
            log("rejected", {**data, "reason": result.reason})
        return result

    @staticmethod
    def reserve(log: EventLog, wake_id: str, result: Any) -> Any:
        if not result.allowed:
            outcome = getattr(result.outcome, "value", result.outcome)
            log("suppressed", {"wakeId": wake_id, "outcome": outcome, "reason": result.reason}, "warn")
        elif result.warning:
            log("budget-warning", {"wakeId": wake_id, "warning": result.warning}, "warn")
        return result

    @staticmethod
    @contextlib.contextmanager
    def model_errors(log: EventLog, wake_id: str, attempt: int) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            transient = getattr(exc, "transient", None)
            log(
                "model-error",
                {"wakeId": wake_id, "attempt": attempt, "error": str(exc)[:300], "transient": transient},
                "error",
            )
            raise

    @staticmethod
    def model_call(log: EventLog, wake_id: str, reply: Any) -> Any:
        log(
            "model-call",
            {
                "wakeId": wake_id,
                "model": reply.model,
                "adapter": reply.adapter,
                "fallback": reply.model_index,
                "inputTokens": reply.input_tokens,
                "outputTokens": reply.output_tokens,
                "costUsd": reply.cost_usd,
                "stopReason": reply.stop_reason,
                "fields": sorted(reply.fields) if reply.fields else [],
            },
        )
        return reply

    @staticmethod
    def safety(log: EventLog, wake_id: str, verdict: Any) -> Any:
        data = {"wakeId": wake_id, "rule": verdict.rule, "reason": verdict.reason}
        if verdict.action == "block":
            outcome = getattr(verdict.outcome, "value", verdict.outcome)
            log("suppressed", {**data, "outcome": outcome}, "warn")
        elif verdict.action == "approve":
            log("approval-requested", data, "warn")
        return verdict

    @staticmethod
    def emitted(log: EventLog, wake_id: str, result: Any, fields: dict[str, str] | None = None) -> Any:
        log(
            "emitted",
            {
                "wakeId": wake_id,
                "key": result.key,
                "route": result.route,
                "to": result.to,
                "deliveredTo": result.delivered_to,
                "text": text_preview(fields or {}),
            },
        )
        return result


PREVIEW_CHARS = 240
NEUTRAL = "neutral"


def text_preview(fields: dict[str, str], limit: int = PREVIEW_CHARS) -> str:
    """The reply's text in short: `focus: ... | intent: ...`, the fields that carry text, CAT7 order."""
    parts = [
        f"{name}: {' '.join(fields[name].split())}"
        for name in CAT7
        if isinstance(fields.get(name), str) and fields[name].strip().casefold() not in ("", NEUTRAL)
    ]
    text = " | ".join(parts)
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
