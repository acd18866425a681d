"""From a [model] config section to a ready adapter, and the dry-run checks that tell a user what is missing.

Credentials come from the config's api_key or the vendor's env variable; a missing one is a
PermanentModelError whose message says what to export. No message ever contains a key.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from xmesh_agent.config import ModelConfig
from xmesh_agent.models.base import ModelAdapter, PermanentModelError
from xmesh_agent.models.pricing import is_known, price_row

# Each adapter is imported when a config names it: the vendor SDKs (anthropic alone is ~40 MB of RSS)
# and httpx stay out of a peer that runs offline or on Ollama, and out of every CLI command.

KEY_ENV = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY", "mistral": "MISTRAL_API_KEY"}
"""The vendor adapters that need an API key, and the variable each reads it from."""
BASE_URL_ENV = {"anthropic": "ANTHROPIC_BASE_URL", "openai": "OPENAI_BASE_URL", "mistral": "MISTRAL_BASE_URL"}
KEY_PAGES = {
    "anthropic": "https://console.anthropic.com/settings/keys",
    "openai": "https://platform.openai.com/api-keys",
    "mistral": "https://console.mistral.ai/api-keys",
}
LOCAL_PLACEHOLDER_KEY = "no-key-needed"
"""Sent to an OpenAI-compatible server on this machine, which checks no key (the SDK insists on one)."""
OLLAMA_CHECK_TIMEOUT = 2.0


def _base_url(cfg: ModelConfig) -> str | None:
    env = BASE_URL_ENV.get(cfg.adapter)
    return cfg.base_url or (os.environ.get(env) if env else None) or None


def _is_loopback(url: str | None) -> bool:
    host = urlsplit(url).hostname if url else None
    return host in ("localhost", "127.0.0.1", "::1")


def resolve_key(cfg: ModelConfig) -> str | None:
    """The key to use: config api_key, else the vendor's env variable; None when neither is set."""
    env = KEY_ENV.get(cfg.adapter)
    return (cfg.api_key or (os.environ.get(env) if env else None) or "").strip() or None


def missing_key_message(adapter: str) -> str:
    env = KEY_ENV[adapter]
    return (
        f"no {adapter} API key: export {env}=<your key> (get one at {KEY_PAGES[adapter]}), "
        f"or set api_key under [model] in agent.toml"
    )


def missing_keys(cfg: ModelConfig) -> list[str]:
    """One line per model of the chain ([model], then each fallback) that has no API key to use."""
    problems = []
    for i, model in enumerate(cfg.chain()):
        local = model.adapter == "openai" and _is_loopback(_base_url(model))
        if model.adapter in KEY_ENV and not resolve_key(model) and not local:
            where = "[model]" if i == 0 else f"[model] fallback {i} ({model.label})"
            problems.append(f"{where}: {missing_key_message(model.adapter)}")
    return problems


def build_adapter(cfg: ModelConfig) -> ModelAdapter:
    """The adapter the config names. Raises PermanentModelError when a needed key is missing."""
    model = cfg.model_name or ""
    prices = {"price_input": cfg.price_input_per_mtok, "price_output": cfg.price_output_per_mtok}
    if cfg.adapter == "offline":
        from xmesh_agent.models.offline import OfflineAdapter

        return OfflineAdapter()
    if cfg.adapter == "ollama":
        from xmesh_agent.models.ollama_adapter import OllamaAdapter

        return OllamaAdapter(model, base_url=cfg.base_url, timeout=cfg.timeout_seconds)
    base_url = _base_url(cfg)
    key = resolve_key(cfg)
    if key is None and cfg.adapter == "openai" and _is_loopback(base_url):
        key = LOCAL_PLACEHOLDER_KEY
    if key is None:
        raise PermanentModelError(missing_key_message(cfg.adapter))
    if cfg.adapter == "anthropic":
        from xmesh_agent.models.anthropic_adapter import AnthropicAdapter

        return AnthropicAdapter(model, key, base_url=base_url, timeout=cfg.timeout_seconds, **prices)
    if cfg.adapter == "openai":
        from xmesh_agent.models.openai_adapter import OpenAIAdapter

        return OpenAIAdapter(model, key, base_url=base_url, timeout=cfg.timeout_seconds, **prices)
    if cfg.adapter == "mistral":
        from xmesh_agent.models.mistral_adapter import MistralAdapter

        return MistralAdapter(model, key, base_url=base_url, timeout=cfg.timeout_seconds, **prices)
    raise PermanentModelError(f"unknown model adapter {cfg.adapter!r}")


def check_adapter(cfg: ModelConfig) -> list[tuple[str, bool, str]]:
    """Dry-run checks as (name, ok, detail); only ollama touches the network (its local host, 2 s)."""
    checks: list[tuple[str, bool, str]] = []
    model = cfg.model_name or ""
    if cfg.adapter == "offline":
        return [("model adapter", True, "offline (deterministic, no network, cost 0)")]
    if cfg.adapter in KEY_ENV:
        base_url = _base_url(cfg)
        key = resolve_key(cfg)
        where = "config api_key" if cfg.api_key else KEY_ENV[cfg.adapter]
        if key:
            checks.append(("model key", True, f"{cfg.adapter} {model} (key present in {where})"))
        elif cfg.adapter == "openai" and _is_loopback(base_url):
            checks.append(("model key", True, f"openai-compatible server at {base_url} (no key needed)"))
        else:
            checks.append(("model key", False, missing_key_message(cfg.adapter)))
        if base_url:
            checks.append(("model endpoint", True, f"base_url {base_url}"))
    else:
        checks.extend(_check_ollama(cfg))
    if cfg.adapter != "ollama":
        priced = cfg.price_input_per_mtok is not None and cfg.price_output_per_mtok is not None
        row = price_row(model)
        if priced:
            checks.append(("model price", True, f"{model}: priced by [model] price_*_per_mtok"))
        elif row is None and is_known(model, cfg.adapter):
            checks.append(("model price", True, f"{model} has a known price"))
        elif row is not None:
            detail = f"{model}: ${row.input:g} in / ${row.output:g} out per MTok ({row.vendor} list of {row.as_of})"
            checks.append(("model price", True, detail))
        else:
            checks.append(
                (
                    "model price",
                    True,
                    f"(warn) no price known for {model}: cost will be reported as unknown; "
                    "set price_input_per_mtok / price_output_per_mtok under [model]",
                )
            )
    return checks


def _check_ollama(cfg: ModelConfig) -> list[tuple[str, bool, str]]:
    import httpx

    from xmesh_agent.models.ollama_adapter import ollama_base_url

    base = ollama_base_url(cfg.base_url)
    model = cfg.model_name or ""
    try:
        resp = httpx.get(f"{base}/api/tags", timeout=OLLAMA_CHECK_TIMEOUT)
        resp.raise_for_status()
        names = {m.get("name") for m in resp.json().get("models", []) if isinstance(m, dict)}
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        detail = f"cannot reach Ollama at {base} ({type(exc).__name__}); start it with `ollama serve`"
        return [("ollama host", False, detail)]
    checks = [("ollama host", True, f"{base} answers ({len(names)} model(s))")]
    present = model in names or f"{model}:latest" in names
    detail = f"{model} is pulled" if present else f"{model} is not pulled: run `ollama pull {model}`"
    checks.append(("ollama model", present, detail))
    return checks
