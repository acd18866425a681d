"""USD prices per million tokens, so every wake can charge its cost against the budget.

An unknown model is never silently free nor guessed: its cost is None (unknown), and it is warned about
once. A config may override either side of the price (`price_input_per_mtok` / `price_output_per_mtok`).
Every row carries the date its vendor's price list was read (`Price.as_of`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from xmesh_agent.models.base import Usage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Price:
    """One row of the price list: USD per million tokens, and when the vendor's price page said so."""

    vendor: str
    input: float
    output: float
    as_of: str
    """ISO date the vendor's own price list was read for this row; re-check rows older than a quarter."""
    aliases: tuple[str, ...] = ()
    """Other ids of the same model at the same price (Anthropic's undated aliases)."""


ANTHROPIC_CHECKED = "2026-12-02"
"""platform.claude.com model pages and pricing (Opus 5.5 and Sonnet 5.5 current)."""
OPENAI_CHECKED = "2026-12-02"
"""OpenAI's API pricing page, as reported for March-November 2026 (GPT-5.4 current)."""
MISTRAL_CHECKED = "2026-12-02"
"""Mistral's La Plateforme list prices as published copies report them (Large 3, Medium 3, Small 3.2)."""


def _anthropic(price_in: float, price_out: float, *aliases: str) -> Price:
    return Price("anthropic", price_in, price_out, ANTHROPIC_CHECKED, aliases)


def _openai(price_in: float, price_out: float) -> Price:
    return Price("openai", price_in, price_out, OPENAI_CHECKED)


def _mistral(price_in: float, price_out: float) -> Price:
    return Price("mistral", price_in, price_out, MISTRAL_CHECKED)


PRICES: dict[str, Price] = {
    # Anthropic. Not listed, so unknown (flagged, never guessed): Haiku 5.5 (tiered, "from $0.10/$0.50"),
    # Fable 5.1 / Mythos (no API id confirmed), and retired models (Haiku 3, Haiku 3.5, Sonnet 3.x).
    "claude-opus-5-5": _anthropic(4.0, 20.0),
    "claude-sonnet-5-5": _anthropic(2.0, 10.0),
    "claude-opus-5": _anthropic(5.0, 25.0),
    "claude-sonnet-5": _anthropic(2.0, 10.0),
    "claude-opus-4-8": _anthropic(5.0, 25.0),
    "claude-opus-4-7": _anthropic(5.0, 25.0),
    "claude-opus-4-6": _anthropic(5.0, 25.0),
    "claude-sonnet-4-6": _anthropic(3.0, 15.0),
    "claude-opus-4-5-20251101": _anthropic(5.0, 25.0, "claude-opus-4-5"),
    "claude-sonnet-4-5-20250929": _anthropic(3.0, 15.0, "claude-sonnet-4-5"),
    "claude-haiku-4-5-20251001": _anthropic(1.0, 5.0, "claude-haiku-4-5"),
    "claude-opus-4-1-20250805": _anthropic(15.0, 75.0, "claude-opus-4-1"),
    "claude-opus-4-20250514": _anthropic(15.0, 75.0, "claude-opus-4-0"),
    "claude-sonnet-4-20250514": _anthropic(3.0, 15.0, "claude-sonnet-4-0"),
    # OpenAI. A dated snapshot is not assumed to cost what its alias costs (gpt-4o-2024-05-13 did not).
    "gpt-5.4": _openai(2.50, 15.0),
    "gpt-5.2": _openai(1.75, 14.0),
    "gpt-5.1": _openai(1.25, 10.0),
    "gpt-5": _openai(1.25, 10.0),
    "gpt-5-mini": _openai(0.25, 2.0),
    "gpt-5-nano": _openai(0.05, 0.40),
    "gpt-4.1": _openai(2.0, 8.0),
    "gpt-4.1-mini": _openai(0.40, 1.60),
    "gpt-4.1-nano": _openai(0.10, 0.40),
    "gpt-4o": _openai(2.50, 10.0),
    "gpt-4o-mini": _openai(0.15, 0.60),
    "o3": _openai(2.0, 8.0),
    "o3-mini": _openai(1.10, 4.40),
    "o4-mini": _openai(1.10, 4.40),
    "o1": _openai(15.0, 60.0),
    # Mistral: the ids configs name ("-latest" tracks the current version); dated ids other than
    # Large 2's are left unknown rather than assumed to cost what "-latest" costs today.
    "mistral-large-latest": _mistral(0.5, 1.5),
    "mistral-large-2411": _mistral(2.0, 6.0),
    "mistral-medium-latest": _mistral(0.4, 2.0),
    "mistral-small-latest": _mistral(0.1, 0.3),
    "magistral-medium-latest": _mistral(2.0, 5.0),
    "magistral-small-latest": _mistral(0.5, 1.5),
    "devstral-medium-latest": _mistral(0.4, 2.0),
    "devstral-small-latest": _mistral(0.1, 0.3),
    "codestral-latest": _mistral(0.3, 0.9),
    "ministral-8b-latest": _mistral(0.1, 0.1),
    "ministral-3b-latest": _mistral(0.04, 0.04),
    "open-mistral-nemo": _mistral(0.15, 0.15),
    "pixtral-large-latest": _mistral(2.0, 6.0),
}

LOCAL_ADAPTERS = frozenset({"ollama", "offline"})
"""Adapters that run on the user's own machine: no per-token price."""

_warned: set[str] = set()
_BY_ALIAS = {alias: row for row in PRICES.values() for alias in row.aliases}


def price_row(model: str) -> Price | None:
    """The row for this exact model id or one of its listed aliases; None for anything else.

    No family or prefix matching: a model the list does not name has an unknown price, reported as such,
    rather than the price of a neighbour it may not share (snapshots and newer versions often differ).
    """
    name = model.strip().lower()
    return PRICES.get(name) or _BY_ALIAS.get(name)


def lookup_price(model: str, adapter: str = "") -> tuple[float, float] | None:
    """(input, output) USD per million tokens from the list; (0, 0) for local adapters; else None."""
    if adapter in LOCAL_ADAPTERS:
        return (0.0, 0.0)
    row = price_row(model)
    return (row.input, row.output) if row else None


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
