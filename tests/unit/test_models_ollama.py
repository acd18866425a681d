"""The Ollama adapter against a loopback server speaking /api/chat and /api/tags."""

from __future__ import annotations

import pytest

from tests.fakes.model_servers import FakeOllamaServer, Reply
from xmesh_agent.models.base import ChatMessage, ModelRequest, PermanentModelError, TransientModelError
from xmesh_agent.models.ollama_adapter import OllamaAdapter, ollama_base_url

REQUEST = ModelRequest(
    system="You are an auditor.", messages=[ChatMessage(role="user", content="look")], max_tokens=50
)


@pytest.fixture
def server():
    with FakeOllamaServer(models=["llama3.2:3b", "gemma:2b-notools"], no_tools={"gemma:2b-notools"}) as srv:
        yield srv


@pytest.fixture
async def adapter(server):
    a = OllamaAdapter("llama3.2:3b", base_url=server.base_url, timeout=0.5)
    yield a
    await a.aclose()


async def test_tool_call_gives_fields_and_zero_cost(server, adapter):
    server.script(
        FakeOllamaServer.tool_call({"issue": "no audit log", "perspective": "auditor", "extra": "x"})
    )
    resp = await adapter.complete(REQUEST)
    assert resp.fields == {"issue": "no audit log", "perspective": "auditor"}
    assert resp.cost_usd == 0.0 and resp.adapter == "ollama" and resp.model == "llama3.2:3b"
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == (120, 30)
    assert resp.stop_reason == "stop"
    sent = server.requests[0]
    assert sent.path == "/api/chat"
    assert sent.json["stream"] is False
    assert sent.json["options"] == {"num_predict": 50}
    assert sent.json["messages"][0] == {"role": "system", "content": "You are an auditor."}
    assert sent.json["tools"][0]["function"]["name"] == "emit_cmb"
    assert "format" not in sent.json


async def test_plain_text_is_no_emission(server, adapter):
    server.script(FakeOllamaServer.text("nothing here"))
    resp = await adapter.complete(REQUEST)
    assert resp.fields is None and resp.text == "nothing here"


async def test_tools_unsupported_falls_back_to_json_mode_and_remembers(server):
    server.json_reply = {"focus": "the config loader", "commitment": "will fix", "bogus": "x"}
    a = OllamaAdapter("gemma:2b-notools", base_url=server.base_url, timeout=0.5)
    try:
        first = await a.complete(REQUEST)
        second = await a.complete(REQUEST)
    finally:
        await a.aclose()
    assert first.fields == {"focus": "the config loader", "commitment": "will fix"}
    assert second.fields == first.fields
    kinds = [("tools" in r.json, r.json.get("format")) for r in server.requests]
    # one refused tools call, then JSON mode twice: the refusal is remembered
    assert kinds == [(True, None), (False, "json"), (False, "json")]
    assert "JSON object" in server.requests[1].json["messages"][0]["content"]
    # a new adapter for the same server and model skips the tools attempt too
    b = OllamaAdapter("gemma:2b-notools", base_url=server.base_url, timeout=0.5)
    try:
        assert b.json_mode
    finally:
        await b.aclose()


async def test_json_mode_garbage_is_no_emission(server):
    a = OllamaAdapter("phi:garbage", base_url=server.base_url, timeout=0.5)
    server.script(
        Reply(400, {"error": "phi:garbage does not support tools"}), FakeOllamaServer.text("not json")
    )
    try:
        resp = await a.complete(REQUEST)
    finally:
        await a.aclose()
    assert resp.fields is None and resp.text == "not json"
    assert server.requests[1].json["format"] == "json"


async def test_unknown_model_is_permanent_with_pull_hint(server):
    a = OllamaAdapter("nope:1b", base_url=server.base_url, timeout=0.5)
    try:
        with pytest.raises(PermanentModelError, match="ollama pull nope:1b") as info:
            await a.complete(REQUEST)
    finally:
        await a.aclose()
    assert info.value.status == 404


async def test_429_is_transient_with_retry_after(server, adapter):
    server.script(Reply.error(429, "busy", retry_after="3"))
    with pytest.raises(TransientModelError) as info:
        await adapter.complete(REQUEST)
    assert info.value.retry_after == 3.0


async def test_500_is_transient(server, adapter):
    server.script(Reply(500, {"error": "llama runner process has terminated"}))
    with pytest.raises(TransientModelError, match="runner"):
        await adapter.complete(REQUEST)


async def test_401_is_permanent(server, adapter):
    server.script(Reply(401, {"error": "unauthorized"}))
    with pytest.raises(PermanentModelError):
        await adapter.complete(REQUEST)


async def test_malformed_body_is_transient(server, adapter):
    server.script(Reply.malformed())
    with pytest.raises(TransientModelError, match="malformed"):
        await adapter.complete(REQUEST)


async def test_slow_answer_times_out_as_transient(server, adapter):
    server.script(Reply.slow(5.0, FakeOllamaServer.text("late").body))
    with pytest.raises(TransientModelError, match="no answer within"):
        await adapter.complete(REQUEST)


async def test_refused_connection_is_transient():
    with FakeOllamaServer() as srv:
        url = srv.base_url
    a = OllamaAdapter("llama3.2:3b", base_url=url, timeout=0.5)
    try:
        with pytest.raises(TransientModelError, match="ollama serve"):
            await a.complete(REQUEST)
    finally:
        await a.aclose()


def test_base_url_resolution(monkeypatch):
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert ollama_base_url() == "http://localhost:11434"
    assert ollama_base_url("http://10.0.0.5:8080/") == "http://10.0.0.5:8080"
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0")
    assert ollama_base_url() == "http://0.0.0.0:11434"
    monkeypatch.setenv("OLLAMA_HOST", "box:1234")
    assert ollama_base_url() == "http://box:1234"
    assert ollama_base_url("https://ollama.example") == "https://ollama.example"
