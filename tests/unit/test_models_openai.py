"""The OpenAI adapter through the real SDK against a loopback server speaking /v1/chat/completions."""

from __future__ import annotations

import email.utils
import time

import pytest

from tests.fakes.model_servers import FakeOpenAIServer, Reply
from xmesh_agent.models.base import ChatMessage, ModelRequest, PermanentModelError, TransientModelError
from xmesh_agent.models.openai_adapter import OpenAIAdapter, uses_completion_tokens

FAKE_KEY = "sk-proj-FAKEKEY-0987654321-do-not-leak"
REQUEST = ModelRequest(
    system="You are a writer.", messages=[ChatMessage(role="user", content="draft it")], max_tokens=64
)


@pytest.fixture
def server():
    with FakeOpenAIServer() as srv:
        yield srv


async def _adapter(server, model: str = "gpt-4o-mini") -> OpenAIAdapter:
    return OpenAIAdapter(model, FAKE_KEY, base_url=server.base_url, timeout=0.5)


@pytest.fixture
async def adapter(server):
    a = await _adapter(server)
    yield a
    await a.aclose()


async def test_tool_call_gives_fields_usage_and_cost(server, adapter):
    server.script(FakeOpenAIServer.tool_call({"focus": "the parser", "intent": "rewrite it", "mood": 3}))
    resp = await adapter.complete(REQUEST)
    assert resp.fields == {"focus": "the parser", "intent": "rewrite it", "mood": "3"}
    assert resp.stop_reason == "tool_calls"
    assert resp.cost_usd == pytest.approx(120 / 1e6 * 0.15 + 30 / 1e6 * 0.60)
    sent = server.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {FAKE_KEY}"
    assert sent.json["messages"][0] == {"role": "system", "content": "You are a writer."}
    assert sent.json["messages"][1] == {"role": "user", "content": "draft it"}
    assert sent.json["tools"][0]["function"]["name"] == "emit_cmb"
    assert sent.json["tool_choice"] == "auto"
    assert sent.json["max_tokens"] == 64 and "max_completion_tokens" not in sent.json


async def test_reasoning_models_get_max_completion_tokens(server):
    a = await _adapter(server, "gpt-5-mini")
    try:
        await a.complete(REQUEST)
    finally:
        await a.aclose()
    sent = server.requests[0].json
    assert sent["max_completion_tokens"] == 64 and "max_tokens" not in sent
    assert (
        uses_completion_tokens("o1") and uses_completion_tokens("o3-mini") and uses_completion_tokens("gpt-5")
    )
    assert not uses_completion_tokens("gpt-4o") and not uses_completion_tokens("o1x")


async def test_plain_text_is_no_emission(server, adapter):
    server.script(FakeOpenAIServer.text("Nothing from me."))
    resp = await adapter.complete(REQUEST)
    assert resp.fields is None and resp.text == "Nothing from me." and resp.stop_reason == "stop"


async def test_broken_tool_arguments_are_no_emission(server, adapter):
    server.script(FakeOpenAIServer.tool_call('{"focus": "unterminated'))
    resp = await adapter.complete(REQUEST)
    assert resp.fields is None and resp.stop_reason == "invalid_tool_arguments"


async def test_429_retry_after_seconds_and_http_date(server, adapter):
    server.script(Reply.error(429, "Rate limit reached", retry_after="12"))
    with pytest.raises(TransientModelError) as info:
        await adapter.complete(REQUEST)
    assert info.value.status == 429 and info.value.retry_after == 12.0
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    server.script(Reply.error(429, "slow down", retry_after=when))
    with pytest.raises(TransientModelError) as info:
        await adapter.complete(REQUEST)
    assert 25 <= info.value.retry_after <= 31
    assert len(server.requests) == 2


async def test_scripted_503_then_tool_call(server, adapter):
    server.script(Reply.error(503, "busy"), FakeOpenAIServer.tool_call({"focus": "second try"}))
    with pytest.raises(TransientModelError):
        await adapter.complete(REQUEST)
    resp = await adapter.complete(REQUEST)
    assert resp.fields == {"focus": "second try"}
    assert len(server.wait_for_requests(2)) == 2


async def test_500_is_transient(server, adapter):
    server.script(Reply.error(500, "boom"))
    with pytest.raises(TransientModelError) as info:
        await adapter.complete(REQUEST)
    assert info.value.status == 500 and info.value.retry_after is None


async def test_401_is_permanent_and_never_shows_the_key(server, adapter):
    server.script(Reply.error(401, f"Incorrect API key provided: {FAKE_KEY}"))
    with pytest.raises(PermanentModelError) as info:
        await adapter.complete(REQUEST)
    assert "OPENAI_API_KEY" in str(info.value)
    assert (
        FAKE_KEY not in str(info.value) and FAKE_KEY not in repr(info.value) and FAKE_KEY not in repr(adapter)
    )


async def test_400_invalid_request_is_permanent(server, adapter):
    server.script(Reply.error(400, "Unsupported parameter: 'max_tokens'"))
    with pytest.raises(PermanentModelError) as info:
        await adapter.complete(REQUEST)
    assert info.value.status == 400 and "max_tokens" in str(info.value)


async def test_malformed_body_is_transient(server, adapter):
    server.script(Reply.malformed())
    with pytest.raises(TransientModelError, match="malformed"):
        await adapter.complete(REQUEST)


async def test_slow_answer_times_out_as_transient(server, adapter):
    server.script(Reply.slow(5.0, FakeOpenAIServer.text("late").body))
    with pytest.raises(TransientModelError, match="no answer within"):
        await adapter.complete(REQUEST)


async def test_unknown_model_costs_none(server, caplog):
    a = await _adapter(server, "my-local-finetune-7b")
    try:
        resp = await a.complete(REQUEST)
    finally:
        await a.aclose()
    assert resp.cost_usd is None
    assert "my-local-finetune-7b" in caplog.text
