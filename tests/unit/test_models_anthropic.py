"""The Anthropic adapter through the real SDK against a loopback server speaking /v1/messages."""

from __future__ import annotations

import pytest

from tests.fakes.model_servers import FakeAnthropicServer, Reply
from xmesh_agent.models.anthropic_adapter import AnthropicAdapter
from xmesh_agent.models.base import ChatMessage, ModelRequest, PermanentModelError, TransientModelError

FAKE_KEY = "sk-ant-FAKEKEY-1234567890-do-not-leak"
REQUEST = ModelRequest(
    system="You are a reviewer.", messages=[ChatMessage(role="user", content="hi")], max_tokens=77
)


@pytest.fixture
def server():
    with FakeAnthropicServer() as srv:
        yield srv


@pytest.fixture
async def adapter(server):
    a = AnthropicAdapter("claude-haiku-4-5-20251001", FAKE_KEY, base_url=server.base_url, timeout=0.5)
    yield a
    await a.aclose()


async def test_tool_call_gives_fields_usage_and_cost(server, adapter):
    server.script(
        FakeAnthropicServer.tool_call({"issue": "off by one", "perspective": "reviewer", "bogus": "x"})
    )
    resp = await adapter.complete(REQUEST)
    assert resp.fields == {"issue": "off by one", "perspective": "reviewer"}
    assert resp.stop_reason == "tool_use"
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == (120, 30)
    assert resp.cost_usd == pytest.approx(120 / 1e6 * 1.0 + 30 / 1e6 * 5.0)  # Haiku 4.5: $1 / $5
    assert (resp.model, resp.adapter) == ("claude-haiku-4-5-20251001", "anthropic")
    sent = server.requests[0]
    assert sent.path.startswith("/v1/messages")
    # SDK 2.x sends the key as a bearer token; older ones used x-api-key
    assert FAKE_KEY in (
        sent.headers.get("x-api-key", ""),
        sent.headers.get("authorization", "").removeprefix("Bearer "),
    )
    assert sent.json["system"] == "You are a reviewer."
    assert sent.json["max_tokens"] == 77
    assert sent.json["messages"] == [{"role": "user", "content": "hi"}]
    assert [t["name"] for t in sent.json["tools"]] == ["emit_cmb"]
    assert set(sent.json["tools"][0]["input_schema"]["properties"]) >= {"focus", "commitment", "mood"}


async def test_plain_text_is_no_emission(server, adapter):
    server.script(FakeAnthropicServer.text("I have nothing to add."))
    resp = await adapter.complete(REQUEST)
    assert resp.fields is None
    assert resp.text == "I have nothing to add."
    assert resp.stop_reason == "end_turn"


async def test_429_is_transient_with_retry_after(server, adapter):
    server.script(Reply.error(429, "rate limited", retry_after="7"))
    with pytest.raises(TransientModelError) as info:
        await adapter.complete(REQUEST)
    assert info.value.status == 429
    assert info.value.retry_after == 7.0
    assert len(server.requests) == 1  # the SDK itself never retried


async def test_529_overloaded_is_transient(server, adapter):
    server.script(Reply.error(529, "Overloaded"))
    with pytest.raises(TransientModelError) as info:
        await adapter.complete(REQUEST)
    assert info.value.status == 529


async def test_500_is_transient(server, adapter):
    server.script(Reply.error(500, "internal"))
    with pytest.raises(TransientModelError) as info:
        await adapter.complete(REQUEST)
    assert info.value.status == 500
    assert len(server.requests) == 1


async def test_401_is_permanent_and_never_shows_the_key(server, adapter):
    server.script(Reply.error(401, f"invalid x-api-key {FAKE_KEY}"))
    with pytest.raises(PermanentModelError) as info:
        await adapter.complete(REQUEST)
    err = info.value
    assert err.status == 401
    assert "ANTHROPIC_API_KEY" in str(err)
    assert FAKE_KEY not in str(err) and FAKE_KEY not in repr(err)
    assert FAKE_KEY not in repr(adapter)
    assert err.__cause__ is None and err.__suppress_context__


async def test_404_unknown_model_is_permanent(server, adapter):
    server.script(Reply.error(404, "model: claude-nope not found"))
    with pytest.raises(PermanentModelError, match="not found"):
        await adapter.complete(REQUEST)


async def test_malformed_body_is_transient(server, adapter):
    server.script(Reply.malformed())
    with pytest.raises(TransientModelError, match="malformed"):
        await adapter.complete(REQUEST)


async def test_slow_answer_times_out_as_transient(server, adapter):
    server.script(Reply.slow(5.0, FakeAnthropicServer.text("late").body))
    with pytest.raises(TransientModelError, match="no answer within"):
        await adapter.complete(REQUEST)


async def test_refused_connection_is_transient():
    with FakeAnthropicServer() as srv:
        url = srv.base_url
    a = AnthropicAdapter("claude-haiku-4-5-20251001", FAKE_KEY, base_url=url, timeout=0.5)
    try:
        with pytest.raises(TransientModelError, match="cannot connect"):
            await a.complete(REQUEST)
    finally:
        await a.aclose()


async def test_empty_messages_is_permanent(adapter):
    with pytest.raises(PermanentModelError):
        await adapter.complete(ModelRequest(system="s", messages=[]))
