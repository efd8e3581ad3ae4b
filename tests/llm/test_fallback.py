"""Fallback chains and SDK error translation, against the real SDKs and loopback fakes."""

from __future__ import annotations

import socket

import anthropic
import httpx
import pytest

from deskpilot.errors import UpstreamError
from deskpilot.llm import (
    LLM,
    AllModelsFailed,
    AnthropicModel,
    FallbackModel,
    MemoryRecorder,
    Message,
    OpenAIModel,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    RequestParams,
    make_anthropic_client,
    make_openai_client,
)
from deskpilot.llm.testing import Reply, ScriptedModel
from deskpilot.settings import LLMSettings
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer, FakeReply, error_reply, slow_reply, text_reply
from tests.llm.conftest import ANTHROPIC_KEY, OPENAI_KEY


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("failure", "error_type"),
    [
        pytest.param(error_reply(429, "Rate limit reached", retry_after=1), ProviderRateLimited, id="429"),
        pytest.param(error_reply(500, "boom"), ProviderUnavailable, id="500"),
        pytest.param(error_reply(503, "unavailable"), ProviderUnavailable, id="503"),
        pytest.param(slow_reply(3.0), ProviderTimeout, id="timeout"),
    ],
)
async def test_openai_failure_falls_back_to_anthropic(
    failure: FakeReply,
    error_type: type[Exception],
    llm: LLM,
    openai_server: FakeOpenAIServer,
    anthropic_server: FakeAnthropicServer,
    recorder: MemoryRecorder,
) -> None:
    openai_server.enqueue(failure)
    anthropic_server.enqueue(text_reply("Answer from Claude.", input_tokens=9, output_tokens=4))

    result = await llm.text("agent", "hello", account_id=None, timeout_s=0.5)

    assert result.value == "Answer from Claude."
    assert result.usage.fallback_used is True
    assert result.usage.model == "anthropic:claude-sonnet-4-5"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (9, 4)
    assert len(openai_server.requests) == 1
    assert recorder.last.fallback_used is True
    assert recorder.last.model == "anthropic:claude-sonnet-4-5"
    assert issubclass(error_type, ProviderUnavailable)


async def test_connection_refused_falls_back(
    anthropic_server: FakeAnthropicServer, http: httpx.AsyncClient, settings: LLMSettings
) -> None:
    dead = settings.model_copy(
        update={"openai": settings.openai.model_copy(update={"base_url": f"http://127.0.0.1:{_closed_port()}/v1"})}
    )
    anthropic_server.enqueue(text_reply("still here"))
    async with LLM(dead, http_client=http) as llm:
        result = await llm.text("agent", "hello", account_id=None)
    assert result.value == "still here"
    assert result.usage.fallback_used is True


async def test_not_retryable_errors_do_not_fall_back(
    llm: LLM, openai_server: FakeOpenAIServer, anthropic_server: FakeAnthropicServer
) -> None:
    openai_server.enqueue(error_reply(400, "bad request: unknown parameter"))

    with pytest.raises(ProviderRejected) as caught:
        await llm.text("agent", "hello", account_id=None)

    assert caught.value.status_code == 400
    assert caught.value.retryable is False
    assert anthropic_server.requests == []
    assert "unknown parameter" in caught.value.detail


async def test_every_model_failing_raises_all_models_failed(
    llm: LLM, openai_server: FakeOpenAIServer, anthropic_server: FakeAnthropicServer
) -> None:
    openai_server.enqueue(error_reply(500))
    anthropic_server.enqueue(error_reply(529, "Overloaded"))

    with pytest.raises(AllModelsFailed) as caught:
        await llm.text("agent", "hello", account_id=None)

    assert [e.model for e in caught.value.errors] == ["openai:gpt-4o-mini", "anthropic:claude-sonnet-4-5"]
    assert "Overloaded" in caught.value.detail
    assert isinstance(caught.value, UpstreamError)


async def test_openai_errors_are_translated(openai_server: FakeOpenAIServer, http: httpx.AsyncClient) -> None:
    """The HTTP status of a refused call maps as the SDK's errors did (key, rate limit with Retry-After)."""
    model = OpenAIModel(
        "gpt-4o-mini",
        make_openai_client(api_key="wrong", base_url=openai_server.base_url, timeout_s=5, http_client=http),
    )
    with pytest.raises(ProviderRejected) as caught:
        await model.request([Message.user("hi")], RequestParams())
    assert caught.value.status_code == 401
    assert "Incorrect API key" in caught.value.detail
    assert "wrong" not in caught.value.detail

    good = OpenAIModel(
        "gpt-4o-mini",
        make_openai_client(api_key=OPENAI_KEY, base_url=openai_server.base_url, timeout_s=5, http_client=http),
    )
    openai_server.enqueue(error_reply(429, retry_after=2))
    with pytest.raises(ProviderRateLimited) as limited:
        await good.request([Message.user("hi")], RequestParams())
    assert limited.value.retry_after_s == 2.0


async def test_anthropic_errors_are_translated(anthropic_server: FakeAnthropicServer, http: httpx.AsyncClient) -> None:
    client = make_anthropic_client(
        api_key=ANTHROPIC_KEY, base_url=anthropic_server.base_url, timeout_s=5, http_client=http
    )
    model = AnthropicModel("claude-sonnet-4-5", client)
    anthropic_server.enqueue(error_reply(404, "model not found"))
    with pytest.raises(ProviderRejected) as caught:
        await model.request([Message.user("hi")], RequestParams())
    assert caught.value.status_code == 404
    assert isinstance(caught.value.__cause__, anthropic.NotFoundError)

    anthropic_server.enqueue(slow_reply(3.0))
    with pytest.raises(ProviderTimeout):
        await model.request([Message.user("hi")], RequestParams(timeout_s=0.2))

    port = _closed_port()
    refused = AnthropicModel(
        "claude-sonnet-4-5",
        make_anthropic_client(
            api_key=ANTHROPIC_KEY, base_url=f"http://127.0.0.1:{port}", timeout_s=5, http_client=http
        ),
    )
    with pytest.raises(ProviderUnavailable):
        await refused.request([Message.user("hi")], RequestParams())


async def test_scripted_fallback_chain_and_timeout() -> None:
    slow = ScriptedModel([Reply("too late", delay_s=2.0)], name="test:slow")
    rejected = ScriptedModel([ProviderRejected("bad key", model="test:rejected")], name="test:rejected")
    spare = ScriptedModel(["spare"], name="test:spare")

    completion = await FallbackModel([slow, spare]).request([Message.user("hi")], RequestParams(timeout_s=0.05))
    assert completion.text == "spare"
    assert completion.fallback_used is True

    with pytest.raises(ProviderRejected):
        await FallbackModel([rejected, spare]).request([Message.user("hi")], RequestParams())
    assert spare.remaining == 0


async def test_max_fallbacks_caps_how_far_down_the_chain_a_call_goes() -> None:
    down = Reply(error=ProviderUnavailable("down", model="test:x"))
    first, second = ScriptedModel([down, down], name="test:first"), ScriptedModel([down, down], name="test:second")
    third = ScriptedModel(["third answers", "third answers"], name="test:third")
    chain = FallbackModel([first, second, third])

    with pytest.raises(AllModelsFailed) as caught:
        await chain.request([Message.user("hi")], RequestParams(max_fallbacks=1))
    assert [e.model for e in caught.value.errors] == ["test:x", "test:x"]
    assert third.requests == []

    completion = await chain.request([Message.user("hi")], RequestParams())
    assert completion.text == "third answers"
    assert completion.fallback_used is True
