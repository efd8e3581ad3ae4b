"""Routing per purpose, model names, and the not-configured errors every entry point raises."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest
from pydantic import BaseModel

from deskpilot.errors import NotConfigured
from deskpilot.llm import LLM, FallbackModel, LLMNotConfigured, OpenAIModel, Purpose
from deskpilot.llm.openai_model import default_max_tokens_param
from deskpilot.llm.testing import ScriptedModel
from deskpilot.settings import LLMSettings, Settings
from tests.fakes import FakeOpenAIServer, text_reply


class Answer(BaseModel):
    ok: bool


async def test_every_entry_point_says_what_to_configure() -> None:
    llm = LLM(LLMSettings())
    assert llm.configured is False

    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: llm.structured("quick", "hi", Answer, account_id=None),
        lambda: llm.text("chat", "hi", account_id=None),
        lambda: llm.run_tools("agent", "hi", [], account_id=None),
    ]
    for call in calls:
        with pytest.raises(LLMNotConfigured) as caught:
            await call()
        message = caught.value.detail
        assert "DESKPILOT_LLM__DEFAULT_MODEL=openai:gpt-4o-mini" in message
        assert "DESKPILOT_LLM__OPENAI__API_KEY" in message
        assert isinstance(caught.value, NotConfigured)
        assert caught.value.status == 503

    with pytest.raises(LLMNotConfigured, match="DESKPILOT_LLM__ROUTES__PILOT_STEP"):
        llm.stream("pilot_step", "hi", account_id=None)


async def test_missing_provider_settings_are_named() -> None:
    llm = LLM(LLMSettings(default_model="openai:gpt-4o-mini"))
    with pytest.raises(LLMNotConfigured, match="DESKPILOT_LLM__OPENAI__API_KEY"):
        await llm.text("quick", "hi", account_id=None)

    llm = LLM(LLMSettings(default_model="anthropic:claude-sonnet-4-5"))
    with pytest.raises(LLMNotConfigured, match="DESKPILOT_LLM__ANTHROPIC__API_KEY"):
        await llm.text("quick", "hi", account_id=None)

    llm = LLM(LLMSettings(default_model="gpt-4o-mini"))
    with pytest.raises(LLMNotConfigured, match="provider:model"):
        await llm.text("quick", "hi", account_id=None)

    llm = LLM(LLMSettings(default_model="mistral:large"))
    with pytest.raises(LLMNotConfigured, match="DESKPILOT_LLM__OPENAI_COMPATIBLE__MISTRAL__BASE_URL"):
        await llm.text("quick", "hi", account_id=None)

    llm = LLM(LLMSettings(default_model="test:scripted"))
    with pytest.raises(LLMNotConfigured, match=r"LLM\.for_model"):
        await llm.text("quick", "hi", account_id=None)


async def test_settings_from_environment_configure_the_llm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESKPILOT_LLM__DEFAULT_MODEL", "openai:gpt-4o-mini")
    monkeypatch.setenv("DESKPILOT_LLM__OPENAI__API_KEY", "sk-env")
    monkeypatch.setenv("DESKPILOT_LLM__ROUTES__QUICK", '["ollama:llama3.1", "openai:gpt-4o-mini"]')
    monkeypatch.setenv("DESKPILOT_LLM__OPENAI_COMPATIBLE__OLLAMA__BASE_URL", "http://127.0.0.1:11434/v1")
    settings = Settings(_env_file=None)

    llm = LLM(settings.llm)

    assert llm.route("quick") == ("ollama:llama3.1", "openai:gpt-4o-mini")
    assert llm.route(Purpose.CHAT) == ("openai:gpt-4o-mini",)
    chain = llm.model_for("quick")
    assert isinstance(chain, FallbackModel)
    local, remote = chain.models
    assert isinstance(local, OpenAIModel)
    assert isinstance(remote, OpenAIModel)
    assert str(local.client.base_url) == "http://127.0.0.1:11434/v1/"
    assert str(remote.client.base_url) == "https://api.openai.com/v1/"
    # Built once: the same objects serve every later call.
    assert llm.model_for("quick") is chain
    assert llm.model_for("chat") is remote
    await llm.aclose()


async def test_routing_per_purpose() -> None:
    fast = ScriptedModel(["fast"], name="test:fast")
    deep = ScriptedModel(["deep", "deep again"], name="test:deep")
    settings = LLMSettings(
        routes={Purpose.QUICK: ["test:fast"], Purpose.PILOT_STEP: ["test:deep"]}, default_model="test:deep"
    )
    llm = LLM(settings, models={"test:fast": fast, "test:deep": deep})

    assert (await llm.text(Purpose.QUICK, "x", account_id=None)).value == "fast"
    assert (await llm.text(Purpose.PILOT_STEP, "x", account_id=None)).value == "deep"
    result = await llm.text(Purpose.DRAFTER, "x", account_id=None)
    assert result.value == "deep again"
    assert result.usage.model == "test:deep"
    assert [Purpose.PILOT_STEP, Purpose.QUICK, Purpose.CHAT, Purpose.DRAFTER, Purpose.AGENT] == [
        "pilot_step",
        "quick",
        "chat",
        "drafter",
        "agent",
    ]


async def test_openai_compatible_endpoint(openai_server: FakeOpenAIServer, http: httpx.AsyncClient) -> None:
    settings = LLMSettings.model_validate(
        {"openai_compatible": {"local": {"base_url": openai_server.base_url}}, "default_model": "local:llama3.1"}
    )
    openai_server.api_key = None
    openai_server.enqueue(text_reply("hi from llama"))
    try:
        async with LLM(settings, http_client=http) as llm:
            result = await llm.text("chat", "hello", account_id=None, max_tokens=99)
    finally:
        openai_server.api_key = "sk-test-openai"

    assert result.value == "hi from llama"
    assert result.usage.model == "local:llama3.1"
    body = openai_server.last_request.body
    assert body["model"] == "llama3.1"
    assert body["max_tokens"] == 99
    assert openai_server.last_request.headers["authorization"] == "Bearer not-needed"


def test_max_tokens_parameter_follows_the_host() -> None:
    assert default_max_tokens_param("https://api.openai.com/v1") == "max_completion_tokens"
    assert default_max_tokens_param("https://acme.openai.azure.com/openai/v1/") == "max_completion_tokens"
    assert default_max_tokens_param("http://127.0.0.1:11434/v1") == "max_tokens"
    assert default_max_tokens_param("https://openrouter.ai/api/v1") == "max_tokens"
