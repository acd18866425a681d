"""A local model served by Ollama, over its /api/chat endpoint with httpx.

Many small local models do not support tools: Ollama then answers HTTP 400 "does not support tools".
The adapter falls back to JSON mode (`format: "json"`, asking for the seven CAT7 keys) and remembers,
per server and model, not to offer tools again.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import urlsplit

import httpx

from xmesh_agent.models.base import (
    EMIT_TOOL_NAME,
    ModelError,
    ModelRequest,
    ModelResponse,
    PermanentModelError,
    TransientModelError,
    Usage,
)
from xmesh_agent.models.common import EMIT_FUNCTION, clean_fields, error_detail, error_from_status
from xmesh_agent.roles import CAT7

DEFAULT_HOST = "http://localhost:11434"
JSON_MODE_INSTRUCTIONS = (
    "\n\nAnswer with ONLY a JSON object. Its keys may be any of: "
    + ", ".join(CAT7)
    + ". Each value is a short string. Leave out the keys you have nothing to say about; "
    "answer {} if you have nothing to add."
)

_NO_TOOLS: set[tuple[str, str]] = set()
"""(base_url, model) pairs whose model told us it does not support tools."""


def ollama_base_url(configured: str | None = None) -> str:
    """Config base_url, else $OLLAMA_HOST (which may lack a scheme or port), else localhost:11434."""
    raw = (configured or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST).strip().rstrip("/")
    if "://" not in raw:
        raw = "http://" + raw
    parts = urlsplit(raw)
    if parts.port is None and parts.scheme == "http" and not parts.path:
        raw = f"{raw}:11434"
    return raw


def tools_unsupported(status: int, detail: str) -> bool:
    return status == 400 and "support" in detail.lower() and "tool" in detail.lower()


class OllamaAdapter:
    """One Ollama model; free to run, so every response costs 0."""

    name = "ollama"

    def __init__(self, model: str, *, base_url: str | None = None, timeout: float = 60.0) -> None:
        self.model = model
        self.base_url = ollama_base_url(base_url)
        self.timeout = timeout
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=timeout)

    def __repr__(self) -> str:
        return f"OllamaAdapter(model={self.model!r}, base_url={self.base_url!r})"

    @property
    def json_mode(self) -> bool:
        """True once the model said it cannot use tools."""
        return (self.base_url, self.model) in _NO_TOOLS

    async def complete(self, request: ModelRequest) -> ModelResponse:
        if not request.messages:
            raise PermanentModelError("ollama: a model call needs at least one message")
        if not self.json_mode:
            try:
                data = await self._chat(request, json_mode=False)
                return self._response(data, json_mode=False)
            except PermanentModelError as exc:
                if not getattr(exc, "tools_unsupported", False):
                    raise
                _NO_TOOLS.add((self.base_url, self.model))
        data = await self._chat(request, json_mode=True)
        return self._response(data, json_mode=True)

    async def _chat(self, request: ModelRequest, *, json_mode: bool) -> dict[str, Any]:
        system = request.system + (JSON_MODE_INSTRUCTIONS if json_mode else "")
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "system", "content": system}]
            + [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": False,
            "options": {"num_predict": request.max_tokens},
        }
        if json_mode:
            payload["format"] = "json"
        else:
            payload["tools"] = [EMIT_FUNCTION]
        try:
            resp = await self._client.post("/api/chat", json=payload)
        except httpx.TimeoutException:
            raise TransientModelError(f"ollama: no answer within {self.timeout:g} s") from None
        except httpx.TransportError as exc:  # refused / reset: the server may still be starting
            raise TransientModelError(
                f"ollama: cannot reach {self.base_url} ({type(exc).__name__}); is `ollama serve` running?"
            ) from None
        if resp.status_code >= 400:
            raise self._status_error(resp)
        try:
            data = resp.json()
        except ValueError:
            raise TransientModelError("ollama: malformed response (not JSON)") from None
        if not isinstance(data, dict):
            raise TransientModelError("ollama: malformed response (not an object)")
        return data

    def _status_error(self, resp: httpx.Response) -> ModelError:
        detail = error_detail(resp.text)
        hint = f"run `ollama pull {self.model}`" if resp.status_code == 404 else ""
        err = error_from_status("ollama", resp.status_code, detail, resp.headers, hint=hint)
        if tools_unsupported(resp.status_code, detail):
            err.tools_unsupported = True  # type: ignore[attr-defined]
        return err

    def _response(self, data: dict[str, Any], *, json_mode: bool) -> ModelResponse:
        message = data.get("message")
        if not isinstance(message, dict):
            raise TransientModelError("ollama: malformed response (no message)")
        content = message.get("content") if isinstance(message.get("content"), str) else ""
        fields: dict[str, str] | None = None
        if json_mode:
            try:
                fields = clean_fields(json.loads(content or "{}"))
            except ValueError:
                fields = None
        else:
            for call in message.get("tool_calls") or []:
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict) or function.get("name") != EMIT_TOOL_NAME:
                    continue
                arguments = function.get("arguments")
                if isinstance(arguments, str):
                    try:
                        arguments = json.loads(arguments)
                    except ValueError:
                        arguments = None
                fields = clean_fields(arguments)
                break
        usage = Usage(
            input_tokens=_count(data.get("prompt_eval_count")), output_tokens=_count(data.get("eval_count"))
        )
        stop = data.get("done_reason") or ("stop" if data.get("done") else None)
        return ModelResponse(
            fields=fields,
            text="" if json_mode and fields else content,
            stop_reason=str(stop) if stop is not None else None,
            usage=usage,
            cost_usd=0.0,
            model=self.model,
            adapter=self.name,
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0
