"""`check_provider`: a report with human-readable lines and an ok flag, never an exception."""

from __future__ import annotations

import httpx

from deskpilot.llm import check_provider
from deskpilot.settings import LLMSettings
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer, error_reply, json_reply, text_reply


async def test_check_passes_when_every_model_answers_structured(
    settings: LLMSettings,
    http: httpx.AsyncClient,
    openai_server: FakeOpenAIServer,
    anthropic_server: FakeAnthropicServer,
) -> None:
    openai_server.enqueue(json_reply({"ok": True, "word": "pong"}))
    anthropic_server.enqueue(json_reply({"ok": True, "word": "pong"}))

    report = await check_provider(settings, "agent", http_client=http)

    assert report.ok is True
    assert report.lines[0] == "Route for 'agent': openai:gpt-4o-mini -> anthropic:claude-sonnet-4-5"
    assert report.lines[1].startswith("ok      openai:gpt-4o-mini: answered with valid structured output")
    assert report.lines[2].startswith("ok      anthropic:claude-sonnet-4-5")
    assert "All 2 model(s)" in str(report)
    assert openai_server.last_request.body["response_format"]["json_schema"]["name"] == "CheckAnswer"
    assert anthropic_server.last_request.body["tool_choice"] == {"type": "tool", "name": "CheckAnswer"}


async def test_check_reports_each_failure(
    settings: LLMSettings,
    http: httpx.AsyncClient,
    openai_server: FakeOpenAIServer,
    anthropic_server: FakeAnthropicServer,
) -> None:
    openai_server.enqueue(error_reply(401, "Incorrect API key provided."))
    anthropic_server.enqueue(text_reply("pong!"))

    report = await check_provider(settings, "agent", http_client=http)

    assert report.ok is False
    first, second = report.models
    assert not first.ok
    assert "ProviderRejected" in first.detail
    assert "Incorrect API key" in first.detail
    assert not second.ok
    assert "not with valid structured output" in second.detail
    assert "'pong!'" in second.detail
    assert "2 of 2 model(s) for 'agent' failed" in report.lines[-1]


async def test_check_without_configuration() -> None:
    report = await check_provider(LLMSettings())
    assert report.ok is False
    assert "DESKPILOT_LLM__DEFAULT_MODEL" in report.lines[0]

    report = await check_provider(LLMSettings(default_model="anthropic:claude-sonnet-4-5"))
    assert report.ok is False
    assert "DESKPILOT_LLM__ANTHROPIC__API_KEY" in str(report)
