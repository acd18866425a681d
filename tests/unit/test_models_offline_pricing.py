"""Offline adapter (deterministic, role-aware, never a commitment), price table, and the adapter factory."""

from __future__ import annotations

import logging
import math
import re

import pytest

from tests.fakes.model_servers import FakeOllamaServer, FakeOpenAIServer
from xmesh_agent.config import ModelConfig
from xmesh_agent.models.anthropic_adapter import AnthropicAdapter
from xmesh_agent.models.base import ChatMessage, ModelRequest, PermanentModelError, Usage
from xmesh_agent.models.common import parse_retry_after, redact
from xmesh_agent.models.factory import build_adapter, check_adapter
from xmesh_agent.models.offline import OfflineAdapter
from xmesh_agent.models.ollama_adapter import OllamaAdapter
from xmesh_agent.models.openai_adapter import OpenAIAdapter
from xmesh_agent.models.pricing import PRICES, cost_usd, lookup_price, resolve_price
from xmesh_agent.roles import known_roles

TRIGGER = {
    "focus": "retry logic in the wake workflow",
    "issue": "backoff ignores Retry-After",
    "intent": "fix it",
}


def _request(role: str, trigger: dict[str, str] | None = None) -> ModelRequest:
    return ModelRequest(
        system="sys",
        messages=[ChatMessage(role="user", content="context")],
        role=role,
        trigger=trigger or TRIGGER,
    )


# offline ----------------------------------------------------------------------------------------
async def test_offline_is_deterministic_and_free():
    a = OfflineAdapter()
    first, second = await a.complete(_request("writer")), await a.complete(_request("writer"))
    assert first == second
    assert (first.model, first.adapter, first.cost_usd) == ("offline-echo", "offline", 0.0)
    assert first.usage.input_tokens == math.ceil(len("syscontext") / 4)
    assert first.usage.output_tokens == math.ceil(sum(len(v) for v in first.fields.values()) / 4)


async def test_offline_reviewer_answers_on_issue_and_perspective():
    resp = await OfflineAdapter().complete(_request("reviewer"))
    assert set(resp.fields) == {"issue", "perspective"}
    assert "retry logic in the wake workflow" in resp.fields["perspective"]
    assert "backoff ignores Retry-After" in resp.fields["issue"]


async def test_offline_fields_depend_on_role():
    writer = await OfflineAdapter().complete(_request("writer"))
    generic = await OfflineAdapter().complete(_request("someone-new"))
    assert set(writer.fields) == {"focus", "intent", "motivation", "perspective"}
    assert set(generic.fields) == {"focus", "perspective"}


@pytest.mark.parametrize("role", [*known_roles(), "unknown-role", ""])
async def test_offline_never_commits(role):
    trigger = {**TRIGGER, "commitment": "I will ship it"}
    resp = await OfflineAdapter().complete(_request(role, trigger))
    assert resp.fields and "commitment" not in resp.fields
    assert all(v.strip() for v in resp.fields.values())


async def test_offline_without_trigger_uses_last_message():
    req = ModelRequest(system="s", messages=[ChatMessage(role="user", content="please  look at\nthe parser")])
    resp = await OfflineAdapter().complete(req)
    assert "please look at the parser" in resp.fields["perspective"]


# pricing ----------------------------------------------------------------------------------------
def test_known_prices():
    assert lookup_price("claude-opus-4-7") == (5.0, 25.0)
    assert lookup_price("claude-haiku-4-5-20251001") == (1.0, 5.0)
    assert lookup_price("claude-opus-5-5") == (4.0, 20.0)
    assert lookup_price("gpt-4o-mini") == (0.15, 0.60)
    assert lookup_price("gpt-5") == (1.25, 10.0)
    assert lookup_price("o1") == (15.0, 60.0)
    assert lookup_price("anything", "ollama") == (0.0, 0.0)
    assert cost_usd("gpt-4o", Usage(input_tokens=1_000_000, output_tokens=500_000)) == pytest.approx(7.5)


def test_every_row_is_dated_and_positive():
    for model, row in PRICES.items():
        assert row.vendor in ("anthropic", "openai", "mistral"), model
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", row.as_of), model
        assert 0 < row.input <= row.output, model


def test_aliases_match_and_nothing_is_guessed():
    assert lookup_price("claude-haiku-4-5") == (1.0, 5.0)  # Anthropic's alias of the dated id
    assert lookup_price("Claude-Sonnet-4-5") == (3.0, 15.0)
    # no family or prefix guesses: each of these is unknown until the list names it
    for model in (
        "claude-opus-4-9",
        "claude-haiku-5-5",
        "claude-3-5-sonnet-20241022",
        "gpt-4o-mini-2024-07-18",
        "gpt-4o-2024-05-13",
        "gpt-5-mini-2025-08-07",
        "o1-preview",
        "gpt-5.4-pro",
    ):
        assert lookup_price(model) is None, model


def test_unknown_model_costs_none_and_warns_once(caplog):
    with caplog.at_level(logging.WARNING, logger="xmesh_agent.models.pricing"):
        assert cost_usd("mystery-model-1", Usage(input_tokens=10, output_tokens=10)) is None
        assert cost_usd("mystery-model-1", Usage(input_tokens=10, output_tokens=10)) is None
    warnings = [r for r in caplog.records if "mystery-model-1" in r.getMessage()]
    assert len(warnings) == 1


def test_config_overrides_price():
    assert resolve_price("mystery-model-2", "openai", 1.0, 2.0) == (1.0, 2.0)
    assert resolve_price("gpt-4o", "openai", None, 1.0) == (2.5, 1.0)
    assert cost_usd("gpt-4o", Usage(input_tokens=1_000_000), "openai", 0.5, None) == pytest.approx(0.5)


# shared helpers ---------------------------------------------------------------------------------
def test_retry_after_parsing():
    assert parse_retry_after({"Retry-After": "4"}) == 4.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470.0) == 10.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({"retry-after": "-3"}) is None
    assert parse_retry_after({}) is None
    assert redact("key sk-abcdef123 leaked", ["sk-abcdef123", None, ""]) == "key [redacted] leaked"


# factory ----------------------------------------------------------------------------------------
FAKE_KEY = "sk-FACTORY-FAKE-KEY-123456"


async def test_build_adapter_per_kind(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    a = build_adapter(ModelConfig(adapter="anthropic", timeout_seconds=3))
    assert isinstance(a, AnthropicAdapter) and a.model == "claude-haiku-4-5-20251001" and a.timeout == 3
    assert FAKE_KEY not in repr(a)
    await a.aclose()
    assert isinstance(build_adapter(ModelConfig(adapter="offline")), OfflineAdapter)
    o = build_adapter(ModelConfig(adapter="ollama", base_url="http://127.0.0.1:1"))
    assert isinstance(o, OllamaAdapter) and o.base_url == "http://127.0.0.1:1"
    await o.aclose()


def test_missing_key_says_what_to_export(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(PermanentModelError, match="export ANTHROPIC_API_KEY="):
        build_adapter(ModelConfig(adapter="anthropic"))
    with pytest.raises(PermanentModelError, match="export OPENAI_API_KEY="):
        build_adapter(ModelConfig(adapter="openai"))


async def test_openai_base_url_from_env_reaches_loopback_server(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeOpenAIServer() as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        adapter = build_adapter(ModelConfig(adapter="openai", model_name="gpt-4o-mini"))
        assert isinstance(adapter, OpenAIAdapter)
        try:
            resp = await adapter.complete(_request("writer"))
        finally:
            await adapter.aclose()
        assert resp.text == "nothing to add" and len(srv.requests) == 1


def test_check_adapter_never_prints_the_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    checks = check_adapter(ModelConfig(adapter="openai", model_name="gpt-4o"))
    assert all(ok for _, ok, _ in checks)
    assert FAKE_KEY not in repr(checks)
    cfg = ModelConfig(adapter="openai", model_name="gpt-4o", api_key=FAKE_KEY)
    assert FAKE_KEY not in repr(cfg)
    monkeypatch.delenv("OPENAI_API_KEY")
    checks = check_adapter(ModelConfig(adapter="openai", model_name="my-finetune"))
    by_name = {name: (ok, detail) for name, ok, detail in checks}
    assert by_name["model key"][0] is False and "OPENAI_API_KEY" in by_name["model key"][1]
    assert by_name["model price"][0] is True and "(warn)" in by_name["model price"][1]


def test_check_adapter_ollama_host_and_model():
    with FakeOllamaServer(models=["llama3.2:3b", "qwen2.5:latest"]) as srv:
        ok = dict(
            (n, (o, d)) for n, o, d in check_adapter(ModelConfig(adapter="ollama", base_url=srv.base_url))
        )
        assert ok["ollama host"][0] and ok["ollama model"][0]
        bare = check_adapter(ModelConfig(adapter="ollama", base_url=srv.base_url, model_name="qwen2.5"))
        assert all(o for _, o, _ in bare)
        missing = check_adapter(ModelConfig(adapter="ollama", base_url=srv.base_url, model_name="phi4"))
        assert ("ollama model", False, "phi4 is not pulled: run `ollama pull phi4`") in missing
        url = srv.base_url
    down = check_adapter(ModelConfig(adapter="ollama", base_url=url))
    assert down[0][0] == "ollama host" and down[0][1] is False and "ollama serve" in down[0][2]


def test_status_classification():
    from xmesh_agent.models.base import TransientModelError
    from xmesh_agent.models.common import error_from_status

    assert isinstance(error_from_status("x", 400, "Rate limit exceeded for tokens"), TransientModelError)
    assert isinstance(error_from_status("x", 529, "Overloaded"), TransientModelError)
    assert isinstance(error_from_status("x", 599, ""), TransientModelError)
    assert isinstance(error_from_status("x", 401, "rate limit on bad keys"), PermanentModelError)
    assert isinstance(error_from_status("x", 403, "forbidden"), PermanentModelError)
    assert isinstance(error_from_status("x", 404, "model not found"), PermanentModelError)
    permanent = error_from_status("x", 400, "bad", {"retry-after": "5"})
    assert isinstance(permanent, PermanentModelError) and permanent.retry_after is None
    assert FAKE_KEY not in str(error_from_status("x", 400, f"echo {FAKE_KEY}", secrets=[FAKE_KEY]))
