"""Fixtures: loopback fake OpenAI/Anthropic servers (one per session, reset per test) and settings for them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from deskpilot.llm import LLM, MemoryRecorder
from deskpilot.settings import LLMSettings
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer

OPENAI_KEY = "sk-test-openai"
ANTHROPIC_KEY = "sk-ant-test"


@pytest.fixture(scope="session")
def openai_server_session() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(api_key=OPENAI_KEY) as server:
        yield server


@pytest.fixture(scope="session")
def anthropic_server_session() -> Iterator[FakeAnthropicServer]:
    with FakeAnthropicServer(api_key=ANTHROPIC_KEY) as server:
        yield server


@pytest.fixture
def openai_server(openai_server_session: FakeOpenAIServer) -> FakeOpenAIServer:
    openai_server_session.reset()
    return openai_server_session


@pytest.fixture
def anthropic_server(anthropic_server_session: FakeAnthropicServer) -> FakeAnthropicServer:
    anthropic_server_session.reset()
    return anthropic_server_session


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def fake_settings(
    openai_server: FakeOpenAIServer, anthropic_server: FakeAnthropicServer, **overrides: object
) -> LLMSettings:
    values: dict[str, object] = {
        "openai": {"api_key": OPENAI_KEY, "base_url": openai_server.base_url},
        "anthropic": {"api_key": ANTHROPIC_KEY, "base_url": anthropic_server.base_url},
        "routes": {
            "quick": ["openai:gpt-4o-mini"],
            "chat": ["anthropic:claude-sonnet-4-5"],
            "agent": ["openai:gpt-4o-mini", "anthropic:claude-sonnet-4-5"],
        },
        "timeout_s": 5.0,
    }
    values.update(overrides)
    return LLMSettings.model_validate(values)


@pytest.fixture
def settings(openai_server: FakeOpenAIServer, anthropic_server: FakeAnthropicServer) -> LLMSettings:
    return fake_settings(openai_server, anthropic_server)


@pytest.fixture
def recorder() -> MemoryRecorder:
    return MemoryRecorder()


@pytest.fixture
async def llm(settings: LLMSettings, http: httpx.AsyncClient, recorder: MemoryRecorder) -> AsyncIterator[LLM]:
    async with LLM(settings, recorder=recorder, http_client=http) as instance:
        yield instance
