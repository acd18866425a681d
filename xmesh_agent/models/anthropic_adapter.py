"""Claude through the `anthropic` SDK, answering with the emit_cmb tool.

The SDK never retries (`max_retries=0`): retries belong to the wake's Temporal retry policy, which reads
the error class this adapter raises.
"""

from __future__ import annotations

import anthropic

from xmesh_agent.models.base import (
    EMIT_TOOL_DESCRIPTION,
    EMIT_TOOL_NAME,
    EMIT_TOOL_SCHEMA,
    ModelError,
    ModelRequest,
    ModelResponse,
    PermanentModelError,
    TransientModelError,
    Usage,
)
from xmesh_agent.models.common import clean_fields, sdk_error
from xmesh_agent.models.pricing import cost_usd

EMIT_TOOL = {"name": EMIT_TOOL_NAME, "description": EMIT_TOOL_DESCRIPTION, "input_schema": EMIT_TOOL_SCHEMA}


class AnthropicAdapter:
    """One Claude model; `complete` maps every SDK failure onto the shared error taxonomy."""

    name = "anthropic"

    def __init__(
        self,
        model: str,
        api_key: str,
        *,
        base_url: str | None = None,
        timeout: float = 60.0,
        price_input: float | None = None,
        price_output: float | None = None,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self.timeout = timeout
        self._key = api_key
        self._prices = (price_input, price_output)
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0
        )

    def __repr__(self) -> str:
        return f"AnthropicAdapter(model={self.model!r}, base_url={self.base_url!r})"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        if not request.messages:
            raise PermanentModelError("anthropic: a model call needs at least one message")
        try:
            message = await self._client.messages.create(
                model=self.model,
                system=request.system,
                messages=[{"role": m.role, "content": m.content} for m in request.messages],
                max_tokens=request.max_tokens,
                tools=[EMIT_TOOL],
            )
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes one of our two classes
            raise self._map_error(exc) from None
        try:
            return self._response(message)
        except (AttributeError, TypeError, ValueError) as exc:
            raise TransientModelError(f"anthropic: malformed response ({type(exc).__name__})") from None

    def _response(self, message: anthropic.types.Message) -> ModelResponse:
        texts: list[str] = []
        fields: dict[str, str] | None = None
        for block in message.content or []:
            kind = getattr(block, "type", None)
            if kind == "text":
                texts.append(block.text)
            elif kind == "tool_use" and block.name == EMIT_TOOL_NAME and fields is None:
                fields = clean_fields(block.input)
        usage = Usage(
            input_tokens=int(message.usage.input_tokens or 0),
            output_tokens=int(message.usage.output_tokens or 0),
        )
        return ModelResponse(
            fields=fields,
            text="".join(texts),
            stop_reason=message.stop_reason,
            usage=usage,
            cost_usd=cost_usd(self.model, usage, self.name, *self._prices),
            model=self.model,
            adapter=self.name,
        )

    def _map_error(self, exc: Exception) -> ModelError:
        return sdk_error(anthropic, "anthropic", exc, self.timeout, (self._key,), "ANTHROPIC_API_KEY")

    async def aclose(self) -> None:
        await self._client.close()
