"""Shared helpers of the chat API tests: an app with a scripted chat model, SSE reading (no tests here)."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI

from deskpilot.api.app import create_app
from deskpilot.api.state import AppState
from deskpilot.identity.models import Role
from deskpilot.llm import LLM, MemoryRecorder, Message, RequestParams, StreamEvent
from deskpilot.llm.testing import FunctionModel, Reply
from deskpilot.settings import Settings
from tests.conftest import Tenant, make_tenant

API = "/api/v1"
SSE = {"Accept": "text/event-stream"}


class ChatModel(FunctionModel):
    """Chat replies (requests offering tools) come from `replies`; anything else is the title request.

    With `hold` set, a streamed reply stops after its first delta until `release()` is called.
    """

    def __init__(self) -> None:
        super().__init__(self._answer, name="test:chat")
        self.replies: deque[str | Reply] = deque()
        self.title = "Outlook password prompts"
        self.seen: list[Sequence[Message]] = []
        self.hold = False
        self._released = asyncio.Event()

    def add(self, *items: str | Reply) -> None:
        self.replies.extend(items)

    def release(self) -> None:
        self._released.set()

    def _answer(self, messages: Sequence[Message], params: RequestParams) -> str | Reply:
        if not params.tools:
            return self.title
        self.seen.append(list(messages))
        if not self.replies:
            raise AssertionError("the chat model was asked for a reply the test did not script")
        return self.replies.popleft()

    async def request_stream(
        self, messages: Sequence[Message], params: RequestParams
    ) -> AsyncGenerator[StreamEvent, None]:
        first = True
        async for event in super().request_stream(messages, params):
            yield event
            if self.hold and first and isinstance(event, str):
                first = False
                await self._released.wait()


@dataclass
class ChatApp:
    app: FastAPI
    http: httpx.AsyncClient
    state: AppState
    a: Tenant
    b: Tenant
    model: ChatModel
    recorder: MemoryRecorder
    headers: dict[str, str] = field(default_factory=dict)

    async def new_chat(self, tenant: Tenant | None = None, role: Role = Role.ENGINEER) -> str:
        response = await self.http.post(f"{API}/chats", json={}, headers=(tenant or self.a).headers(role))
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def send(self, chat_id: str, text: str, role: Role = Role.ENGINEER) -> dict[str, Any]:
        response = await self.http.post(f"{API}/sessions/{chat_id}/messages", json={"text": text},
                                        headers=self.a.headers(role))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def stream(self, chat_id: str, text: str) -> tuple[httpx.Response, list[dict[str, Any]]]:
        response = await self.http.post(f"{API}/sessions/{chat_id}/messages", json={"text": text},
                                        headers={**self.a.headers(Role.ENGINEER), **SSE})
        return response, read_frames(response.text)

    async def detail(self, chat_id: str) -> dict[str, Any]:
        response = await self.http.get(f"{API}/chats/{chat_id}", headers=self.a.headers(Role.ENGINEER))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@asynccontextmanager
async def chat_app(settings: Settings, *, llm: LLM | None = None) -> AsyncIterator[ChatApp]:
    """The app with a `ChatModel` as every purpose's model, or with `llm` (then `model` is unused)."""
    recorder = MemoryRecorder()
    model = ChatModel()
    state = AppState.build(settings, llm=llm or LLM.for_model(model, recorder=recorder))
    app = create_app(settings, state=state)
    async with app.router.lifespan_context(app):
        a = await make_tenant(state.db, "Acme IT")
        b = await make_tenant(state.db, "Globex Support")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield ChatApp(app=app, http=http, state=state, a=a, b=b, model=model, recorder=recorder)


def read_frames(text: str) -> list[dict[str, Any]]:
    """SSE frames as `{"id": int, "part": dict | "[DONE]"}`."""
    frames: list[dict[str, Any]] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        data = fields["data"]
        frames.append({"id": int(fields["id"]), "part": data if data == "[DONE]" else json.loads(data)})
    return frames


def types(frames: Sequence[dict[str, Any]]) -> list[str]:
    return [f["part"] if f["part"] == "[DONE]" else f["part"]["type"] for f in frames]


def data_of(frames: Sequence[dict[str, Any]], name: str) -> Any:
    found = [f["part"]["data"] for f in frames if isinstance(f["part"], dict) and f["part"]["type"] == f"data-{name}"]
    assert found, f"no data-{name} part in {types(frames)}"
    return found[-1]


def text_of(frames: Sequence[dict[str, Any]]) -> str:
    return "".join(f["part"]["delta"] for f in frames
                   if isinstance(f["part"], dict) and f["part"]["type"] == "text-delta")
