"""USD prices per million tokens, so every wake can charge its cost against the budget.

An unknown model is never silently free: its cost is None (unknown), and it is warned about once.
A config may override either side of the price (`price_input_per_mtok` / `price_output_per_mtok`).
"""

from __future__ import annotations

import logging

from xmesh_agent.models.base import Usage

log = logging.getLogger(__name__)

PRICES: dict[str, tuple[float, float]] = {
    # Anthropic (input, output)
    "claude-opus-4-7": (15.0, 75.0),
    "claude-opus-4-6": (15.0, 75.0),
    "claude-sonnet-4-6": (3.0, 15.0),
    "claude-haiku-4-5-20251001": (0.80, 4.0),
    # OpenAI
    "gpt-5": (10.0, 40.0),
    "gpt-5-mini": (1.0, 4.0),
    "gpt-4o": (2.5, 10.0),
    "gpt-4o-mini": (0.15, 0.60),
    "o1": (15.0, 60.0),
    # Mistral (La Plateforme list prices, checked 2026-12-02). Keys without "-latest" price the
    # dated ids too (mistral-small-2506); the older Large 2 ids keep their own, higher price.
    "mistral-large-2411": (2.0, 6.0),
    "mistral-large-2407": (2.0, 6.0),
    "mistral-large": (0.5, 1.5),
    "mistral-medium": (0.4, 2.0),
    "mistral-small": (0.1, 0.3),
    "magistral-medium": (2.0, 5.0),
    "magistral-small": (0.5, 1.5),
    "devstral-medium": (0.4, 2.0),
    "devstral-small": (0.1, 0.3),
    "codestral": (0.3, 0.9),
    "ministral-8b": (0.1, 0.1),
    "ministral-3b": (0.04, 0.04),
    "open-mistral-nemo": (0.15, 0.15),
    "pixtral-large": (2.0, 6.0),
}

LOCAL_ADAPTERS = frozenset({"ollama", "offline"})
"""Adapters that run on the user's own machine: no per-token price."""

_warned: set[str] = set()


def _family(model: str) -> str | None:
    """`claude-<tier>-<major>`, the part of an Anthropic id that names its price family."""
    parts = model.split("-")
    return "-".join(parts[:3]) if model.startswith("claude-") and len(parts) >= 3 else None


def lookup_price(model: str, adapter: str = "") -> tuple[float, float] | None:
    """(input, output) USD per million tokens: exact id, Claude family, then longest prefix; else None."""
    if adapter in LOCAL_ADAPTERS:
        return (0.0, 0.0)
    name = model.strip().lower()
    if name in PRICES:
        return PRICES[name]
    family = _family(name)
    if family:
        for key in PRICES:  # dict order: the newest model of a family is listed first
            if key.startswith(family + "-") or key == family:
                return PRICES[key]
    best = max((key for key in PRICES if name.startswith(key)), key=len, default=None)
    return PRICES[best] if best else None


def is_known(model: str, adapter: str = "") -> bool:
    return lookup_price(model, adapter) is not None


def resolve_price(
    model: str,
    adapter: str = "",
    price_input: float | None = None,
    price_output: float | None = None,
) -> tuple[float, float] | None:
    """The table price with either side replaced by a config override; None when a side stays unknown."""
    table = lookup_price(model, adapter)
    p_in = price_input if price_input is not None else (table[0] if table else None)
    p_out = price_output if price_output is not None else (table[1] if table else None)
    if p_in is None or p_out is None:
        if model not in _warned:
            _warned.add(model)
            log.warning(
                "no price known for model %r: its cost is reported as unknown; set "
                "[model] price_input_per_mtok and price_output_per_mtok in agent.toml to track it",
                model,
            )
        return None
    return (p_in, p_out)


def cost_usd(
    model: str,
    usage: Usage,
    adapter: str = "",
    price_input: float | None = None,
    price_output: float | None = None,
) -> float | None:
    """What one call cost in USD, or None when the model's price is unknown."""
    price = resolve_price(model, adapter, price_input, price_output)
    if price is None:
        return None
    return usage.input_tokens / 1e6 * price[0] + usage.output_tokens / 1e6 * price[1]
