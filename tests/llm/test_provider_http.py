"""ProviderSession: the aiohttp session OpenAI-compatible streams use — proxies, the sent signal, event loops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from deskpilot.llm import Message, OpenAIModel, ProviderError, RequestParams, make_openai_client
from deskpilot.llm.provider_http import ProviderSession
from tests.fakes import FakeOpenAIServer, FakeReply, FakeToolCall, text_reply
from tests.llm.conftest import OPENAI_KEY


def test_proxies_come_from_the_environment_like_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "models.internal")
    streams = ProviderSession(timeout_s=5)
    assert streams._proxy("https://api.openai.com/v1/chat/completions") == "http://proxy.internal:3128"
    assert streams._proxy("https://models.internal/v1/chat/completions") is None
    assert streams._proxy("http://127.0.0.1:8000/v1/chat/completions") is None  # no HTTP_PROXY set


async def test_on_sent_is_called_once_the_request_is_written(openai_server: FakeOpenAIServer) -> None:
    client = make_openai_client(api_key=OPENAI_KEY, base_url=openai_server.base_url, timeout_s=5)
    model = OpenAIModel("gpt-4o-mini", client)
    openai_server.enqueue(text_reply("Check the lease time."))
    calls: list[int] = []
    try:
        events = [
            event async for event in model.request_stream(
                [Message.user("VPN drops")], RequestParams(on_sent=lambda: calls.append(len(openai_server.requests)))
            )
        ]
    finally:
        await model.http.aclose()
        await client.close()
    assert "".join(e for e in events if isinstance(e, str)) == "Check the lease time."
    assert calls  # at least once, and first before the answer was read
    assert openai_server.last_request.body["stream"] is True


def test_a_session_made_in_one_event_loop_is_replaced_in_another(openai_server: FakeOpenAIServer) -> None:
    client = make_openai_client(api_key=OPENAI_KEY, base_url=openai_server.base_url, timeout_s=5)
    model = OpenAIModel("gpt-4o-mini", client)

    async def ask() -> str:
        openai_server.enqueue(text_reply("ok"))
        parts = [e async for e in model.request_stream([Message.user("hi")], RequestParams()) if isinstance(e, str)]
        return "".join(parts)

    async def ask_and_close() -> str:
        try:
            return await ask()
        finally:
            await model.http.aclose()

    assert asyncio.run(ask()) == "ok"  # the first loop ends with the session still open
    assert asyncio.run(ask_and_close()) == "ok"


@asynccontextmanager
async def loopback_model(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[OpenAIModel]:
    """An OpenAIModel whose chat-completions endpoint is `handler`, on a loopback aiohttp server."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    async with TestServer(app, host="127.0.0.1") as server:
        client = make_openai_client(api_key="k", base_url=str(server.make_url("/v1")), timeout_s=5)
        model = OpenAIModel("m", client)
        try:
            yield model
        finally:
            await model.http.aclose()
            await client.close()


async def test_an_answer_that_does_not_fit_the_api_is_a_provider_error() -> None:
    """Malformed output is a normal case: not JSON, no choices list, or a message that is not one."""
    for body in (b"not json", b'{"choices": "nope"}', b'{"choices": [{"message": {"content": 42}}]}'):

        async def answer(_request: web.Request, body: bytes = body) -> web.Response:
            return web.Response(body=body, content_type="application/json")

        async with loopback_model(answer) as model:
            with pytest.raises(ProviderError) as caught:
                await model.request([Message.user("x")], RequestParams())
        assert "does not fit the API" in caught.value.detail


async def test_a_json_answer_with_tool_calls_and_usage(openai_server: FakeOpenAIServer) -> None:
    client = make_openai_client(api_key=OPENAI_KEY, base_url=openai_server.base_url, timeout_s=5)
    model = OpenAIModel("gpt-4o-mini", client)
    openai_server.enqueue(FakeReply(text="Looking.", tool_calls=[FakeToolCall("find_ticket", {"id": 7}, id="c1")],
                                    input_tokens=12, output_tokens=5))
    try:
        completion = await model.request([Message.user("ticket 7")], RequestParams())
    finally:
        await model.http.aclose()
        await client.close()
    assert (completion.text, completion.input_tokens, completion.output_tokens) == ("Looking.", 12, 5)
    assert [(c.id, c.name, c.arguments) for c in completion.tool_calls] == [("c1", "find_ticket", '{"id": 7}')]
    assert completion.finish_reason == "tool_calls"
    assert openai_server.last_request.headers["authorization"] == f"Bearer {OPENAI_KEY}"


async def test_a_connection_the_server_dropped_is_retried_once_on_a_new_one() -> None:
    """Servers close idle kept-alive connections; a request that met one is sent again, once."""
    seen: list[int] = []
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}

    async def handler(request: web.Request) -> web.Response:
        seen.append(len(seen))
        if len(seen) == 1:
            assert request.transport is not None
            request.transport.close()  # the connection dies before any answer
        return web.json_response(answer)

    async with loopback_model(handler) as model:
        completion = await model.request([Message.user("x")], RequestParams())
    assert completion.text == "ok"
    assert seen == [0, 1]
