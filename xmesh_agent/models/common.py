"""What every adapter shares: the error taxonomy over HTTP outcomes, Retry-After, redaction, field cleaning.

The wake's retry policy only reads `ModelError.transient` and `retry_after`, so each adapter funnels its
SDK's or httpx's failures through `error_from_status` / `sdk_error` and nothing else.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

from xmesh_agent.models.base import (
    EMIT_TOOL_DESCRIPTION,
    EMIT_TOOL_NAME,
    EMIT_TOOL_SCHEMA,
    ModelError,
    PermanentModelError,
    TransientModelError,
)
from xmesh_agent.roles import CAT7
from xmesh_agent.secret_shapes import mask_secrets

EMIT_FUNCTION = {
    "type": "function",
    "function": {
        "name": EMIT_TOOL_NAME,
        "description": EMIT_TOOL_DESCRIPTION,
        "parameters": EMIT_TOOL_SCHEMA,
    },
}
"""emit_cmb as an OpenAI-shaped function tool (the form both OpenAI-compatible servers and Ollama take)."""

TRANSIENT_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
"""Statuses worth retrying: rate limits, overload (529 is Anthropic's), gateway trouble, timeouts."""

TRANSIENT_HINTS = ("rate limit", "rate_limit", "too many requests", "overloaded", "try again later")
"""Words that mark a rate-limit or overload even when a server picks an unusual status code."""

PERMANENT_HINTS = (
    "insufficient_quota",
    "exceeded your current quota",
    "credit balance is too low",
    "billing_hard_limit",
)
"""A used-up quota or credit: it arrives as a 429 (OpenAI) or 400, and no retry within a wake can help,
so it is permanent and a wake with a fallback moves on to the next model at once."""

MAX_DETAIL = 200


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Remove every credential from text: the configured ones (short or empty secrets are ignored, they
    would mangle text), then anything shaped like a key, whole or echoed in part (`sk-proj-ab****yz`)."""
    for secret in secrets:
        if secret and len(secret) >= 6:
            text = text.replace(secret, "[redacted]")
    return mask_secrets(text)


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait, from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date; None if absent."""
    if not headers:
        return None
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms) / 1000.0
            if math.isfinite(value) and value >= 0:
                return value
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
        return value if math.isfinite(value) and value >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def error_detail(body: Any) -> str:
    """The human part of an error body: `error.message`, `message`, `error` or the raw text, shortened."""
    data = body
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            data = json.loads(body)
        except ValueError:
            data = body
    text: Any = data
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            text = err.get("message") or err.get("type") or err
        elif isinstance(err, str):
            text = err
        elif isinstance(data.get("message"), str):
            text = data["message"]
        elif data.get("message") or data.get("detail"):  # Mistral / FastAPI validation errors
            text = _validation_detail(data.get("message") or data)
    text = " ".join(str(text if text is not None else "").split())
    return text[:MAX_DETAIL] + ("…" if len(text) > MAX_DETAIL else "")


def _validation_detail(data: Any) -> Any:
    """`{"detail": [{"loc": [...], "msg": ...}]}` as `loc: msg; ...`, else the value as it came."""
    detail = data.get("detail") if isinstance(data, dict) else data
    if isinstance(detail, list):
        parts = [
            f"{'.'.join(str(x) for x in d.get('loc', []))}: {d.get('msg', '')}"
            if isinstance(d, dict)
            else str(d)
            for d in detail
        ]
        return "; ".join(parts)
    return detail if detail is not None else data


def error_from_status(
    provider: str,
    status: int,
    detail: str,
    headers: Mapping[str, str] | None = None,
    secrets: Iterable[str | None] = (),
    key_env: str = "",
    hint: str = "",
) -> TransientModelError | PermanentModelError:
    """Classify a non-2xx answer: retryable (429, 5xx, 529, rate limits) or permanent (auth, bad request)."""
    detail = redact(detail, secrets)
    message = f"{provider} HTTP {status}: {detail or 'no detail'}"
    if status in (401, 403):
        where = f"{key_env} or [model] api_key" if key_env else "[model] api_key"
        message += f" (check the API key in {where})"
    elif hint:
        message += f" ({hint})"
    retry_after = parse_retry_after(headers)
    lowered = detail.lower()
    transient = status in TRANSIENT_STATUSES or status >= 500
    if status not in (401, 403) and any(word in lowered for word in TRANSIENT_HINTS):
        transient = True
    if any(word in lowered for word in PERMANENT_HINTS):
        transient = False
        message += " (quota or credit used up: retrying will not help)"
    cls = TransientModelError if transient else PermanentModelError
    return cls(message, status=status, retry_after=retry_after if transient else None)


def sdk_error(
    sdk: Any, provider: str, exc: Exception, timeout: float, secrets: Iterable[str | None], key_env: str
) -> ModelError:
    """Map a failure of the `anthropic` or `openai` SDK (same exception classes) onto our two classes."""
    if isinstance(exc, sdk.APIStatusError):
        body = exc.body if exc.body is not None else exc.message
        return error_from_status(
            provider, exc.status_code, error_detail(body), exc.response.headers, secrets, key_env
        )
    if isinstance(exc, sdk.APITimeoutError):
        return TransientModelError(f"{provider}: no answer within {timeout:g} s")
    if isinstance(exc, sdk.APIConnectionError):
        return TransientModelError(redact(f"{provider}: cannot connect ({exc})", secrets))
    if isinstance(exc, sdk.APIResponseValidationError):
        return TransientModelError(f"{provider}: malformed response")
    if isinstance(exc, ValueError):  # an unparseable body surfaces as a JSON decode error
        return TransientModelError(f"{provider}: malformed response ({type(exc).__name__})")
    return PermanentModelError(redact(f"{provider}: {type(exc).__name__}: {exc}", secrets))


def clean_fields(raw: Any) -> dict[str, str] | None:
    """Keep only CAT7 keys with non-blank scalar values, as stripped strings; None when nothing is left."""
    if not isinstance(raw, dict):
        return None
    fields: dict[str, str] = {}
    for name in CAT7:
        value = raw.get(name)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, (int, float)):
            value = str(value)
        if isinstance(value, str) and value.strip():
            fields[name] = value.strip()
    return fields or None


def estimate_tokens(text: str) -> int:
    """A rough token count (four characters a token), for adapters whose server reports none."""
    return math.ceil(len(text) / 4)
