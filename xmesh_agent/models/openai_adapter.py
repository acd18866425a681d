"""OpenAI, or any OpenAI-compatible server (vLLM, llama.cpp, LM Studio...), through the `openai` SDK.

The model answers by calling the emit_cmb function; `max_retries=0` leaves retries to the wake's
Temporal retry policy.
"""

from __future__ import annotations

import json

import openai

from xmesh_agent.models.base import (
    EMIT_TOOL_NAME,
    ModelError,
    ModelRequest,
    ModelResponse,
    PermanentModelError,
    TransientModelError,
    Usage,
)
from xmesh_agent.models.common import EMIT_FUNCTION, clean_fields, sdk_error
from xmesh_agent.models.pricing import cost_usd

COMPLETION_TOKEN_FAMILIES = ("o1", "o3", "o4", "gpt-5")
"""Reasoning models that reject `max_tokens` and want `max_completion_tokens`."""


def uses_completion_tokens(model: str) -> bool:
    name = model.lower().rsplit("/", 1)[-1]
    return any(name == f or name.startswith(f + "-") for f in COMPLETION_TOKEN_FAMILIES)


class OpenAIAdapter:
    """One chat-completions model; `complete` maps every SDK failure onto the shared error taxonomy."""

    name = "openai"
    key_env = "OPENAI_API_KEY"
    default_base_url: str | None = None
    """None: the SDK's own (OpenAI, or OPENAI_BASE_URL)."""

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
        base_url = base_url or self.default_base_url
        self.base_url = base_url
        self.timeout = timeout
        self._key = api_key
        self._prices = (price_input, price_output)
        self._client = openai.AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        if not request.messages:
            raise PermanentModelError(f"{self.name}: a model call needs at least one message")
        messages = [{"role": "system", "content": request.system}]
        messages += [{"role": m.role, "content": m.content} for m in request.messages]
        limit = self._token_limit(request.max_tokens)
        try:
            completion = await self._client.chat.completions.create(
                model=self.model, messages=messages, tools=[EMIT_FUNCTION], tool_choice="auto", **limit
            )
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes one of our two classes
            raise self._map_error(exc) from None
        try:
            return self._response(completion)
        except (AttributeError, TypeError, ValueError, IndexError) as exc:
            raise TransientModelError(f"{self.name}: malformed response ({type(exc).__name__})") from None

    def _token_limit(self, max_tokens: int) -> dict[str, int]:
        if uses_completion_tokens(self.model):
            return {"max_completion_tokens": max_tokens}
        return {"max_tokens": max_tokens}

    def _response(self, completion: object) -> ModelResponse:
        if not isinstance(completion, openai.types.chat.ChatCompletion):
            # the SDK hands back a bare string when the body is not JSON
            raise TypeError("not a chat completion")
        choice = completion.choices[0]
        message = choice.message
        fields: dict[str, str] | None = None
        stop_reason = choice.finish_reason
        for call in message.tool_calls or []:
            function = getattr(call, "function", None)
            if function is None or function.name != EMIT_TOOL_NAME:
                continue
            arguments = function.arguments
            try:
                # some OpenAI-compatible servers (Mistral) send the arguments as an object, not a string
                parsed = arguments if isinstance(arguments, dict) else json.loads(arguments or "{}")
                fields = clean_fields(parsed)
            except ValueError:
                stop_reason = "invalid_tool_arguments"  # the model wrote broken JSON: nothing to emit
            break
        u = completion.usage
        usage = Usage(
            input_tokens=int(getattr(u, "prompt_tokens", 0) or 0),
            output_tokens=int(getattr(u, "completion_tokens", 0) or 0),
        )
        return ModelResponse(
            fields=fields,
            text=message.content or "",
            stop_reason=stop_reason,
            usage=usage,
            cost_usd=cost_usd(self.model, usage, self.name, *self._prices),
            model=self.model,
            adapter=self.name,
        )

    def _map_error(self, exc: Exception) -> ModelError:
        return sdk_error(openai, self.name, exc, self.timeout, (self._key,), self.key_env)

    async def aclose(self) -> None:
        await self._client.close()
