"""The offline adapter: a deterministic stand-in model for demos, tests and dry runs. No network, no cost.

It answers the trigger (the admitted CMB's field texts) on the fields its role cares about, plus a
perspective naming the role. It never fills `commitment`: a commitment exempts a reply from cycle
detection, and an offline mesh of echoing peers relies on cycles being cut.
"""

from __future__ import annotations

from xmesh_agent.models.base import ModelRequest, ModelResponse, PermanentModelError, Usage
from xmesh_agent.models.common import estimate_tokens
from xmesh_agent.roles import CAT7, preset_weights, priority_fields

OFFLINE_MODEL = "offline-echo"
FALLBACK_FIELDS = ("focus",)
"""What a role without priorities (e.g. generic) answers on, besides perspective."""
SUBJECT_CHARS = 80


def _shorten(text: str, limit: int = SUBJECT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def reply_fields(role: str) -> list[str]:
    """The fields a role answers on, in CAT7 order: its priority fields and perspective, never commitment."""
    weights = preset_weights(role or "generic") or {}
    chosen = [f for f in priority_fields(weights) if f != "commitment"] or list(FALLBACK_FIELDS)
    chosen.append("perspective")
    return [f for f in CAT7 if f in chosen]


class OfflineAdapter:
    """Builds a CAT7 reply from `request.trigger` and `request.role`; equal requests get equal replies."""

    name = "offline"

    def __init__(self, model: str = OFFLINE_MODEL) -> None:
        self.model = OFFLINE_MODEL

    def __repr__(self) -> str:
        return "OfflineAdapter()"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        if not request.messages:
            raise PermanentModelError("offline: a model call needs at least one message")
        trigger = {
            k: v
            for k, v in request.trigger.items()
            if k in CAT7 and isinstance(v, str) and v.strip() and v.strip().lower() != "neutral"
        }
        role = (request.role or "generic").strip() or "generic"
        subject = _shorten(
            trigger.get("focus")
            or next((trigger[f] for f in CAT7 if f in trigger), "")
            or request.messages[-1].content
            or "the last message"
        )
        fields = {f: self._text(f, role, subject, trigger) for f in reply_fields(role)}
        prompt = request.system + "".join(m.content for m in request.messages)
        usage = Usage(
            input_tokens=estimate_tokens(prompt), output_tokens=estimate_tokens("".join(fields.values()))
        )
        return ModelResponse(
            fields=fields,
            text="",
            stop_reason="tool_use",
            usage=usage,
            cost_usd=0.0,
            model=OFFLINE_MODEL,
            adapter=self.name,
        )

    @staticmethod
    def _text(field: str, role: str, subject: str, trigger: dict[str, str]) -> str:
        about = f"'{subject}'"
        if field == "focus":
            return f"{role} takes up {about}"
        if field == "issue":
            if "issue" in trigger:
                return f"{role} checks the open issue in {about}: {_shorten(trigger['issue'], 60)}"
            return f"{role} sees no stated risk in {about} yet; edge cases unchecked"
        if field == "intent":
            return f"{role} will work on {about} next"
        if field == "motivation":
            why = _shorten(trigger.get("motivation") or trigger.get("intent") or "keep the thread moving", 60)
            return f"because: {why}"
        if field == "perspective":
            return f"{role}'s view of {about}"
        if field == "mood":
            return "steady"
        return ""

    async def aclose(self) -> None:
        return None
