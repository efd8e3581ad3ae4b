"""StreamSession: the aiohttp session OpenAI-compatible streams use — proxies, the sent signal, event loops."""

from __future__ import annotations

import asyncio

import pytest

from deskpilot.llm import Message, OpenAIModel, RequestParams, make_openai_client
from deskpilot.llm.stream_http import StreamSession
from tests.fakes import FakeOpenAIServer, text_reply
from tests.llm.conftest import OPENAI_KEY


def test_proxies_come_from_the_environment_like_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "models.internal")
    streams = StreamSession(timeout_s=5)
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
        await model.streams.aclose()
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
            await model.streams.aclose()

    assert asyncio.run(ask()) == "ok"  # the first loop ends with the session still open
    assert asyncio.run(ask_and_close()) == "ok"
