"""The Mistral adapter through the real `openai` SDK against a loopback server speaking Mistral's API."""

from __future__ import annotations

import pytest

from tests.fakes.model_servers import FakeMistralServer, Reply
from xmesh_agent.config import ModelConfig
from xmesh_agent.models.base import ChatMessage, ModelRequest, PermanentModelError, TransientModelError
from xmesh_agent.models.factory import build_adapter, check_adapter
from xmesh_agent.models.mistral_adapter import MISTRAL_BASE_URL, MistralAdapter

FAKE_KEY = "mistral-FAKEKEY-1234567890-do-not-leak"
REQUEST = ModelRequest(
    system="You are a reviewer.", messages=[ChatMessage(role="user", content="review it")], max_tokens=64
)


@pytest.fixture
def server():
    with FakeMistralServer() as srv:
        yield srv


@pytest.fixture
async def adapter(server):
    a = MistralAdapter("mistral-small-latest", FAKE_KEY, base_url=server.base_url, timeout=0.5)
    yield a
    await a.aclose()


async def test_tool_call_with_object_arguments_gives_fields_usage_and_cost(server, adapter):
    server.script(FakeMistralServer.tool_call({"issue": "no input check", "commitment": "block merge"}))
    resp = await adapter.complete(REQUEST)
    assert resp.fields == {"issue": "no input check", "commitment": "block merge"}
    assert resp.adapter == "mistral" and resp.model == "mistral-small-latest"
    assert resp.cost_usd == pytest.approx(120 / 1e6 * 0.1 + 30 / 1e6 * 0.3)
    sent = server.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {FAKE_KEY}"
    assert sent.json["model"] == "mistral-small-latest"
    assert sent.json["messages"][0] == {"role": "system", "content": "You are a reviewer."}
    assert sent.json["tools"][0]["function"]["name"] == "emit_cmb" and sent.json["tool_choice"] == "auto"
    assert sent.json["max_tokens"] == 64 and "max_completion_tokens" not in sent.json


async def test_tool_call_with_string_arguments_and_broken_json(server, adapter):
    server.script(
        FakeMistralServer.tool_call('{"focus": "the parser"}'),
        FakeMistralServer.tool_call('{"focus": "unterminated'),
    )
    assert (await adapter.complete(REQUEST)).fields == {"focus": "the parser"}
    broken = await adapter.complete(REQUEST)
    assert broken.fields is None and broken.stop_reason == "invalid_tool_arguments"


async def test_reasoning_named_models_still_get_max_tokens(server):
    a = MistralAdapter("o3-lookalike", FAKE_KEY, base_url=server.base_url, timeout=0.5)
    try:
        await a.complete(REQUEST)
    finally:
        await a.aclose()
    assert server.requests[0].json["max_tokens"] == 64


async def test_401_is_permanent_names_the_variable_and_hides_the_key(server, adapter):
    server.script(FakeMistralServer.error(401, f"Unauthorized: {FAKE_KEY}"))
    with pytest.raises(PermanentModelError) as info:
        await adapter.complete(REQUEST)
    assert "MISTRAL_API_KEY" in str(info.value) and "mistral HTTP 401" in str(info.value)
    assert FAKE_KEY not in str(info.value) and FAKE_KEY not in repr(adapter)


async def test_429_is_transient_with_retry_after(server, adapter):
    server.script(FakeMistralServer.error(429, "Requests rate limit exceeded", retry_after="7"))
    with pytest.raises(TransientModelError) as info:
        await adapter.complete(REQUEST)
    assert info.value.status == 429 and info.value.retry_after == 7.0


async def test_422_validation_error_is_permanent_and_readable(server, adapter):
    server.script(
        FakeMistralServer.validation_error(["body", "tool_choice"], "Extra inputs are not permitted")
    )
    with pytest.raises(PermanentModelError) as info:
        await adapter.complete(REQUEST)
    assert info.value.status == 422
    assert "body.tool_choice: Extra inputs are not permitted" in str(info.value)


async def test_5xx_and_malformed_body_are_transient(server, adapter):
    server.script(FakeMistralServer.error(503, "Service unavailable"), Reply.malformed())
    with pytest.raises(TransientModelError):
        await adapter.complete(REQUEST)
    with pytest.raises(TransientModelError, match="mistral: malformed"):
        await adapter.complete(REQUEST)


def test_factory_builds_it_from_config_and_env(monkeypatch):
    monkeypatch.delenv("MISTRAL_API_KEY", raising=False)
    cfg = ModelConfig(adapter="mistral", model_name="mistral-small-latest")
    with pytest.raises(PermanentModelError, match="export MISTRAL_API_KEY"):
        build_adapter(cfg)
    assert check_adapter(cfg)[0][:2] == ("model key", False)
    monkeypatch.setenv("MISTRAL_API_KEY", FAKE_KEY)
    adapter = build_adapter(cfg)
    assert isinstance(adapter, MistralAdapter) and adapter.base_url == MISTRAL_BASE_URL
    checks = {name: (ok, detail) for name, ok, detail in check_adapter(cfg)}
    assert checks["model key"][0] and "MISTRAL_API_KEY" in checks["model key"][1]
    assert checks["model price"] == (
        True,
        "mistral-small-latest: $0.1 in / $0.3 out per MTok (mistral list of 2026-12-02)",
    )


def test_unknown_mistral_model_is_flagged_not_guessed():
    checks = {n: d for n, _, d in check_adapter(ModelConfig(adapter="mistral", model_name="mistral-tiny"))}
    assert "no price known for mistral-tiny" in checks["model price"]
