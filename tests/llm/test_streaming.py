"""Token streaming: deltas and usage on both providers, streamed tool calls, and no fallback mid-stream."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from deskpilot.llm import (
    LLM,
    FallbackModel,
    MemoryRecorder,
    Message,
    Model,
    OpenAIModel,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    RequestParams,
    make_openai_client,
)
from deskpilot.llm.messages import Completion
from deskpilot.llm.testing import Reply, ScriptedModel
from deskpilot.settings import LLMSettings
from tests.fakes import (
    FakeAnthropicServer,
    FakeOpenAIServer,
    FakeReply,
    FakeToolCall,
    error_reply,
    slow_reply,
    text_reply,
)
from tests.llm.conftest import OPENAI_KEY


async def test_openai_stream_yields_deltas_then_usage(
    llm: LLM, openai_server: FakeOpenAIServer, recorder: MemoryRecorder
) -> None:
    """FP-052: the provider abstraction streams text with token counts."""
    openai_server.enqueue(text_reply("Restart the print spooler service.", input_tokens=21, output_tokens=7))

    async with llm.stream("quick", "printer stuck", account_id=None) as stream:
        deltas = [delta async for delta in stream]

    assert deltas == ["Restart ", "the ", "print ", "spooler ", "service."]
    result = stream.result
    assert result.value == "Restart the print spooler service."
    assert (result.usage.input_tokens, result.usage.output_tokens) == (21, 7)
    body = openai_server.last_request.body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert recorder.last.output_text == result.value
    assert recorder.last.id == result.record_id


async def test_anthropic_stream_yields_deltas_then_usage(llm: LLM, anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.enqueue(text_reply("Check the DNS suffix.", input_tokens=15, output_tokens=5))

    stream = llm.stream("chat", "cannot resolve hosts", account_id=None)
    deltas = [delta async for delta in stream]

    assert "".join(deltas) == "Check the DNS suffix."
    assert len(deltas) == 4
    assert (stream.result.usage.input_tokens, stream.result.usage.output_tokens) == (15, 5)
    assert stream.result.usage.model == "anthropic:claude-sonnet-4-5"
    assert anthropic_server.last_request.body["stream"] is True


async def test_openai_streamed_tool_call_deltas_are_assembled(
    openai_server: FakeOpenAIServer, http: httpx.AsyncClient
) -> None:
    client = make_openai_client(api_key=OPENAI_KEY, base_url=openai_server.base_url, timeout_s=5, http_client=http)
    model = OpenAIModel("gpt-4o-mini", client)
    openai_server.enqueue(
        FakeReply(
            text="Looking it up.",
            tool_calls=[
                FakeToolCall("find_ticket", {"ticket_id": 4711, "include_notes": True}, id="call_a"),
                FakeToolCall("find_client", {"name": "Acme"}, id="call_b"),
            ],
        )
    )

    try:
        events = [event async for event in model.request_stream([Message.user("ticket 4711")], RequestParams())]
    finally:
        await model.http.aclose()

    final = events[-1]
    assert isinstance(final, Completion)
    assert events[:-1] == ["Looking ", "it ", "up."]
    assert [(c.id, c.name) for c in final.tool_calls] == [("call_a", "find_ticket"), ("call_b", "find_client")]
    assert final.tool_calls[0].arguments == '{"ticket_id": 4711, "include_notes": true}'
    assert final.finish_reason == "tool_calls"


async def test_anthropic_streamed_tool_use_is_assembled(llm: LLM, anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.enqueue(FakeReply(tool_calls=[FakeToolCall("find_ticket", {"ticket_id": 4711}, id="toolu_1")]))
    model = llm.model_for("chat")

    events = [event async for event in model.request_stream([Message.user("ticket 4711")], RequestParams())]

    (final,) = events
    assert isinstance(final, Completion)
    assert final.tool_calls[0].id == "toolu_1"
    assert final.tool_calls[0].arguments == '{"ticket_id": 4711}'
    assert final.finish_reason == "tool_use"


async def test_fallback_before_the_first_delta(
    llm: LLM, openai_server: FakeOpenAIServer, anthropic_server: FakeAnthropicServer
) -> None:
    openai_server.enqueue(error_reply(429, retry_after=1))
    anthropic_server.enqueue(text_reply("From the second model."))

    async with llm.stream("agent", "hello", account_id=None) as stream:
        text = "".join([delta async for delta in stream])

    assert text == "From the second model."
    assert stream.result.usage.fallback_used is True
    assert stream.result.usage.model == "anthropic:claude-sonnet-4-5"


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_no_fallback_after_streamed_tokens(
    provider: str,
    settings: LLMSettings,
    http: httpx.AsyncClient,
    openai_server: FakeOpenAIServer,
    anthropic_server: FakeAnthropicServer,
) -> None:
    broken = FakeReply(text="one two three four five", stream_error_after=2, error_message="overloaded")
    (openai_server if provider == "openai" else anthropic_server).enqueue(broken)
    second = ScriptedModel(["must not be used"], name="test:second")
    first_name = "openai:gpt-4o-mini" if provider == "openai" else "anthropic:claude-sonnet-4-5"
    recorder = MemoryRecorder()
    routed = settings.model_copy(update={"routes": {"chat": [first_name, "test:second"]}})
    async with LLM(routed, recorder=recorder, http_client=http, models={"test:second": second}) as llm:
        received: list[str] = []

        async def consume() -> None:
            async for delta in llm.stream("chat", "count", account_id=None):
                received.append(delta)

        with pytest.raises(ProviderUnavailable) as caught:
            await consume()

    assert received == ["one ", "two "]
    assert second.requests == []
    assert "overloaded" in caught.value.detail
    assert recorder.last.error_code == "llm_provider_unavailable"
    assert recorder.last.output_text == "one two "


async def test_scripted_stream_fallback_only_before_tokens() -> None:
    before = ScriptedModel([ProviderRateLimited("busy", model="test:a")], name="test:a")
    after = ScriptedModel(
        [Reply("alpha beta gamma", stream_error_after=1, error=ProviderUnavailable("gone", model="test:b"))],
        name="test:b",
    )
    spare = ScriptedModel(["spare answer"], name="test:c")
    chain = FallbackModel([before, after, spare])

    received: list[str] = []

    async def consume() -> None:
        async for event in chain.request_stream([Message.user("hi")], RequestParams()):
            assert isinstance(event, str)
            received.append(event)

    with pytest.raises(ProviderUnavailable, match="gone"):
        await consume()

    assert received == ["alpha "]
    assert spare.requests == []


async def test_closing_a_stream_early_records_the_partial_answer(recorder: MemoryRecorder) -> None:
    model = ScriptedModel(["one two three four"])
    llm = LLM.for_model(model, recorder=recorder)

    async with llm.stream("chat", "count", account_id=None) as stream:
        async for delta in stream:
            assert delta == "one "
            break

    assert recorder.last.error_code == "llm_stream_closed"
    assert recorder.last.output_text == "one "
    with pytest.raises(RuntimeError, match="not finished"):
        _ = stream.result


async def test_streaming_unsupported_names_the_class() -> None:
    """FP-052: a model without streaming says so; callers fall back to a plain call."""
    class EchoModel(Model):
        name = "test:echo"

        async def request(self, messages: Sequence[Message], params: RequestParams) -> Completion:
            return Completion(messages[-1].content, model_name=self.name)

    llm = LLM.for_model(EchoModel())
    assert (await llm.text("chat", "ping", account_id=None)).value == "ping"

    async def consume() -> None:
        async for _ in llm.stream("chat", "ping", account_id=None):
            pass

    with pytest.raises(NotImplementedError, match="EchoModel does not support streaming"):
        await consume()


async def _openai_events(base_url: str, http: httpx.AsyncClient, *, timeout_s: float = 5) -> list[object]:
    client = make_openai_client(api_key=OPENAI_KEY, base_url=base_url, timeout_s=timeout_s, http_client=http)
    model = OpenAIModel("gpt-4o-mini", client)
    try:
        return [event async for event in model.request_stream([Message.user("hello")], RequestParams())]
    finally:
        await model.http.aclose()


async def test_openai_stream_refused_maps_like_the_sdk(
    openai_server: FakeOpenAIServer, http: httpx.AsyncClient
) -> None:
    """Streams are read off httpx in the SSE wire format: a refused request still maps to our errors."""
    openai_server.enqueue(error_reply(429, "slow down", retry_after=7))
    with pytest.raises(ProviderRateLimited) as limited:
        await _openai_events(openai_server.base_url, http)
    assert limited.value.retry_after_s == 7
    assert "slow down" in limited.value.detail

    openai_server.enqueue(error_reply(400, "bad tool schema"))
    with pytest.raises(ProviderRejected) as rejected:
        await _openai_events(openai_server.base_url, http)
    assert rejected.value.status_code == 400
    assert "bad tool schema" in rejected.value.detail
    # The request carried the SDK's headers and the key.
    assert openai_server.last_request.headers["authorization"] == f"Bearer {OPENAI_KEY}"


async def test_openai_stream_that_is_too_slow_is_a_timeout(
    openai_server: FakeOpenAIServer, http: httpx.AsyncClient
) -> None:
    openai_server.enqueue(slow_reply(2.0))
    with pytest.raises(ProviderTimeout):
        await _openai_events(openai_server.base_url, http, timeout_s=0.2)


async def test_openai_stream_with_garbage_is_a_provider_error_not_a_crash() -> None:
    """Malformed output is a normal case: a data line that is not JSON, or not a chunk, ends the call cleanly."""
    for garbage in (b"data: {not json\n\n", b"data: [1, 2]\n\n"):
        body = b'data: {"choices": [{"index": 0, "delta": {"content": "Hi"}}]}\n\n' + garbage + b"data: [DONE]\n\n"

        async def answer(request: web.Request, body: bytes = body) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(body)
            return response

        app = web.Application()
        app.router.add_post("/v1/chat/completions", answer)
        received: list[object] = []
        async with TestServer(app, host="127.0.0.1") as server:
            client = make_openai_client(api_key="k", base_url=str(server.make_url("/v1")), timeout_s=5)
            model = OpenAIModel("m", client)

            async def read() -> None:
                async for event in model.request_stream([Message.user("x")], RequestParams()):
                    received.append(event)

            try:
                with pytest.raises(ProviderError) as caught:
                    await read()
            finally:
                await model.http.aclose()
                await client.close()
        assert received == ["Hi"]
        assert "streamed something that is not" in caught.value.detail


async def test_on_sent_is_called_once_even_by_a_model_that_cannot_tell() -> None:
    """A caller waiting for `on_sent` is never left waiting: at the latest the first event says it."""

    class Silent(Model):
        name = "test:silent"

        async def request(self, messages: Sequence[Message], params: RequestParams) -> Completion:
            raise NotImplementedError

        async def request_stream(
            self, messages: Sequence[Message], params: RequestParams
        ) -> AsyncGenerator[str | Completion, None]:
            yield "a"
            yield "b"
            yield Completion("ab", model_name=self.name)

    calls: list[str] = []
    async with LLM.for_model(Silent()) as llm, llm.stream("chat", "hi", account_id=None,
                                                          on_sent=lambda: calls.append("sent")) as stream:
        seen = [(delta, list(calls)) async for delta in stream]
    assert seen == [("a", ["sent"]), ("b", ["sent"])]
    assert calls == ["sent"]
