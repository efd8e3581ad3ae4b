"""Shared machinery of the fake provider servers: a uvicorn thread on loopback, a reply script, request log."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request

_WORDS = re.compile(r"\S+\s*|\s+")
_UNSET: Any = object()


@dataclass
class FakeToolCall:
    """A tool call the fake model makes; `arguments` as a str is sent verbatim (e.g. malformed JSON)."""

    name: str
    arguments: dict[str, Any] | str
    id: str | None = None

    def arguments_json(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass
class FakeReply:
    """One scripted answer of a fake server.

    `structured` is a structured answer: JSON content for OpenAI, the forced tool's input for Anthropic.
    `status` other than 200 answers with an error in the provider's format. `delay_s` holds the response
    back (the handler stops early when the client hangs up). `stream_error_after=n` breaks a stream with
    an error event after n text chunks.
    """

    text: str | None = None
    tool_calls: list[FakeToolCall] = field(default_factory=list)
    structured: Any = _UNSET
    status: int = 200
    error_type: str = "api_error"
    error_message: str = "scripted error"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    input_tokens: int | None = None
    output_tokens: int | None = None
    stream_error_after: int | None = None
    model: str | None = None

    @property
    def has_structured(self) -> bool:
        return self.structured is not _UNSET

    def chunks(self, text: str) -> list[str]:
        return _WORDS.findall(text)


def text_reply(text: str, **kwargs: Any) -> FakeReply:
    return FakeReply(text=text, **kwargs)


def json_reply(value: Any, **kwargs: Any) -> FakeReply:
    return FakeReply(structured=value, **kwargs)


def tool_reply(*calls: FakeToolCall, text: str | None = None, **kwargs: Any) -> FakeReply:
    return FakeReply(text=text, tool_calls=list(calls), **kwargs)


def error_reply(status: int, message: str = "scripted error", *, retry_after: float | None = None) -> FakeReply:
    headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
    error_type = {429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}.get(
        status, "invalid_request_error"
    )
    return FakeReply(status=status, error_type=error_type, error_message=message, headers=headers)


def slow_reply(delay_s: float, reply: FakeReply | None = None) -> FakeReply:
    reply = reply or FakeReply(text="late answer")
    reply.delay_s = delay_s
    return reply


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


def estimate_tokens(value: Any) -> int:
    text = value if isinstance(value, str) else json.dumps(value)
    return max(len(text) // 4, 1)


async def wait_or_disconnect(request: Request, delay_s: float) -> bool:
    """Sleep `delay_s`; False if the client hung up first (so a timed-out request does not hold the server)."""
    deadline = time.monotonic() + delay_s
    while time.monotonic() < deadline:
        if await request.is_disconnected():
            return False
        await asyncio.sleep(min(0.02, max(deadline - time.monotonic(), 0)))
    return True


class ScriptedServer:
    """A Starlette app served by uvicorn in a background thread on 127.0.0.1 and a random free port.

    Replies come from a queue (`enqueue`); when it is empty, `default_reply` is used (or an error if None).
    Every request is recorded in `requests`. Use as a context manager or call start()/stop().
    """

    def __init__(self, api_key: str | None = None, *, default_reply: FakeReply | None = None) -> None:
        self.api_key = api_key
        self.default_reply = default_reply
        self.requests: list[RecordedRequest] = []
        self._queue: deque[FakeReply] = deque()
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.app = self.build_app()

    def build_app(self) -> Starlette:
        raise NotImplementedError

    # Script and log -------------------------------------------------------------------------------------

    def enqueue(self, *replies: FakeReply) -> None:
        with self._lock:
            self._queue.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self.requests.clear()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def next_reply(self) -> FakeReply | None:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        return self.default_reply

    async def record(self, request: Request) -> Any:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    request.method, request.url.path, {k.lower(): v for k, v in request.headers.items()}, body
                )
            )
        return body

    @property
    def last_request(self) -> RecordedRequest:
        return self.requests[-1]

    # Lifecycle ------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", ws="none", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"{type(self).__name__}:{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"{type(self).__name__} did not start")
            time.sleep(0.005)

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(5)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
