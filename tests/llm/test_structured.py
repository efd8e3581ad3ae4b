"""Structured output: native schemas on both providers, the corrective retry, and malformed replies."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, Field

from deskpilot.llm import LLM, Message, StructuredOutputError
from deskpilot.llm.output import output_schema, strip_fences
from deskpilot.llm.testing import Reply, ScriptedModel
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer, json_reply, text_reply
from tests.llm.conftest import ANTHROPIC_KEY, OPENAI_KEY


class Triage(BaseModel):
    """Classification of an incoming ticket."""

    summary: str
    domain: Literal["networking", "email", "other"]
    urgency: int = Field(ge=1, le=4)


GOOD = {"summary": "VPN drops every hour", "domain": "networking", "urgency": 2}


async def test_openai_structured_sends_json_schema(llm: LLM, openai_server: FakeOpenAIServer) -> None:
    openai_server.enqueue(json_reply(GOOD, input_tokens=31, output_tokens=12))

    result = await llm.structured(
        "quick", [Message.system("Classify tickets."), Message.user("VPN drops")], Triage, account_id=None
    )

    assert result.value == Triage(**GOOD)
    assert (result.usage.input_tokens, result.usage.output_tokens) == (31, 12)
    assert result.usage.model == "openai:gpt-4o-mini"
    assert result.usage.fallback_used is False
    assert result.usage.latency_ms > 0
    request = openai_server.last_request
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    body = request.body
    assert body["model"] == "gpt-4o-mini"
    assert body["messages"] == [
        {"role": "system", "content": "Classify tickets."},
        {"role": "user", "content": "VPN drops"},
    ]
    assert body["response_format"]["type"] == "json_schema"
    schema = body["response_format"]["json_schema"]
    assert schema["name"] == "Triage"
    assert schema["strict"] is True
    assert schema["schema"]["required"] == ["summary", "domain", "urgency"]
    assert schema["schema"]["additionalProperties"] is False
    # A non-OpenAI host gets the classic parameter that every compatible server understands.
    assert body["max_tokens"] == 4096


async def test_anthropic_structured_forces_a_tool(llm: LLM, anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.enqueue(json_reply(GOOD, input_tokens=40, output_tokens=20))

    result = await llm.structured(
        "chat", [Message.system("Classify tickets."), Message.user("VPN drops")], Triage, account_id=None
    )

    assert result.value.domain == "networking"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (40, 20)
    assert result.usage.model == "anthropic:claude-sonnet-4-5"
    request = anthropic_server.last_request
    assert request.headers["x-api-key"] == ANTHROPIC_KEY
    assert request.headers["anthropic-version"]
    body = request.body
    assert body["system"] == "Classify tickets."
    assert body["messages"] == [{"role": "user", "content": "VPN drops"}]
    assert body["tool_choice"] == {"type": "tool", "name": "Triage"}
    (tool,) = body["tools"]
    assert tool["name"] == "Triage"
    assert tool["input_schema"]["properties"].keys() == {"summary", "domain", "urgency"}
    assert "Classification of an incoming ticket." in tool["description"]


async def test_corrective_retry_shows_the_model_its_output(llm: LLM, openai_server: FakeOpenAIServer) -> None:
    openai_server.enqueue(
        text_reply("Sure! The ticket is about networking.", input_tokens=10, output_tokens=8),
        json_reply(GOOD, input_tokens=30, output_tokens=12),
    )

    result = await llm.structured("quick", "VPN drops", Triage, account_id=None)

    assert result.value == Triage(**GOOD)
    assert (result.usage.input_tokens, result.usage.output_tokens, result.usage.requests) == (40, 20, 2)
    retry = openai_server.requests[1].body["messages"]
    assert retry[0] == {"role": "user", "content": "VPN drops"}
    assert retry[1] == {"role": "assistant", "content": "Sure! The ticket is about networking."}
    assert retry[2]["role"] == "user"
    assert "Invalid JSON" in retry[2]["content"]
    assert "ONLY valid JSON" in retry[2]["content"]


async def test_corrective_retry_on_anthropic_tool_input(llm: LLM, anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.enqueue(json_reply({"summary": "VPN", "domain": "dns", "urgency": 9}), json_reply(GOOD))

    result = await llm.structured("chat", "VPN drops", Triage, account_id=None)

    assert result.value == Triage(**GOOD)
    retry = anthropic_server.requests[1].body["messages"]
    assert retry[1]["role"] == "assistant"
    assert '"domain":"dns"' in retry[1]["content"]
    assert "domain" in retry[2]["content"]
    assert "urgency" in retry[2]["content"]
    assert anthropic_server.requests[1].body["tool_choice"] == {"type": "tool", "name": "Triage"}


async def test_two_bad_outputs_raise_with_raw_output(llm: LLM, openai_server: FakeOpenAIServer) -> None:
    openai_server.enqueue(text_reply('{"summary": "VPN"'), json_reply({"summary": "VPN", "domain": "dns"}))

    with pytest.raises(StructuredOutputError) as caught:
        await llm.structured("quick", "VPN drops", Triage, account_id=None)

    error = caught.value
    assert error.first_raw_output == '{"summary": "VPN"'
    assert error.raw_output == '{"summary": "VPN", "domain": "dns"}'
    assert "urgency" in error.validation_error
    assert error.code == "llm_invalid_output"
    assert len(openai_server.requests) == 2


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        pytest.param("", "EOF while parsing", id="empty reply"),
        pytest.param("not json at all", "Invalid JSON", id="invalid json"),
        pytest.param('{"summary": 3, "domain": "networking", "urgency": 2}', "summary", id="wrong type"),
        pytest.param('["a list"]', "Input should be an object", id="not an object"),
    ],
)
async def test_malformed_outputs_get_one_retry(bad: str, expected: str) -> None:
    model = ScriptedModel([bad, Reply.json(GOOD)])
    llm = LLM.for_model(model)

    result = await llm.structured("quick", "VPN drops", Triage, account_id=None)

    assert result.value == Triage(**GOOD)
    retry = model.requests[1].messages
    assert retry[-2] == Message.assistant(bad or "(empty reply)")
    assert expected in retry[-1].content


async def test_fenced_json_is_accepted_without_retry() -> None:
    model = ScriptedModel(['```json\n{"summary": "x", "domain": "other", "urgency": 1}\n```'])

    result = await LLM.for_model(model).structured("quick", "hi", Triage, account_id=None)

    assert result.value.summary == "x"
    assert len(model.requests) == 1


def test_schema_with_defaults_is_not_strict() -> None:
    class WithDefault(BaseModel):
        name: str
        tags: list[str] = []

    class Nested(BaseModel):
        inner: Triage
        default: str

    assert output_schema(WithDefault).strict is False
    nested = output_schema(Nested)
    assert nested.strict is True
    assert nested.json_schema["$defs"]["Triage"]["additionalProperties"] is False  # type: ignore[index]


def test_strip_fences() -> None:
    assert strip_fences('```json\n{"a": 1}\n```') == '{"a": 1}\n'
    assert strip_fences('{"a": 1}') == '{"a": 1}'
    assert strip_fences("```") == "```"
