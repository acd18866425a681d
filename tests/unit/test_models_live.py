"""Smoke tests against the real paid APIs. Run with `pytest -m live`; skipped without the vendor's key."""

from __future__ import annotations

import os

import pytest

from xmesh_agent.config import ModelConfig
from xmesh_agent.models.base import ChatMessage, ModelRequest
from xmesh_agent.models.factory import build_adapter

pytestmark = pytest.mark.live

REQUEST = ModelRequest(
    system="You are a reviewer on a mesh of agents. Answer by calling the emit_cmb tool with a short issue.",
    messages=[
        ChatMessage(role="user", content="focus: a function that divides by len(items) without a check")
    ],
    max_tokens=200,
)


@pytest.mark.parametrize(
    ("adapter", "env"),
    [("anthropic", "ANTHROPIC_API_KEY"), ("openai", "OPENAI_API_KEY"), ("mistral", "MISTRAL_API_KEY")],
)
async def test_live_call(adapter: str, env: str):
    if not os.environ.get(env):
        pytest.skip(f"{env} not set")
    model = build_adapter(ModelConfig(adapter=adapter, timeout_seconds=60))
    try:
        resp = await model.complete(REQUEST)
    finally:
        await model.aclose()
    assert resp.usage.input_tokens > 0 and resp.usage.output_tokens > 0
    assert resp.cost_usd is not None and resp.cost_usd > 0
    assert resp.fields or resp.text
