"""In-process test models for every domain's tests: ScriptedModel (a list of replies) and FunctionModel."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import re
from abc import abstractmethod
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from pydantic import BaseModel
from pydantic_core import to_json

from deskpilot.llm.base import Model
from deskpilot.llm.errors import ProviderTimeout
from deskpilot.llm.messages import Completion, ImagePart, Message, RequestParams, StreamEvent, ToolCall

_DELTA = re.compile(r"\s*\S+\s*|\s+")
_call_ids = itertools.count(1)


def tool_call(name: str, arguments: Mapping[str, object] | str, *, id: str | None = None) -> ToolCall:
    """A tool call as a model would send it; a str is used verbatim (handy for malformed arguments)."""
    text = arguments if isinstance(arguments, str) else to_json(arguments).decode()
    return ToolCall(id or f"call_{next(_call_ids)}", name, text)


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted reply.

    `error` is raised instead of answering, or, when streaming with `stream_error_after=n`, after n deltas.
    `delay_s` makes the model slow (it honours the request's timeout). Token counts default to an estimate.
    """

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    input_tokens: int | None = None
    output_tokens: int | None = None
    delay_s: float = 0.0
    error: BaseException | None = None
    stream_error_after: int | None = None

    @classmethod
    def json(
        cls,
        value: BaseModel | Mapping[str, object] | Sequence[object],
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        delay_s: float = 0.0,
    ) -> Reply:
        """A reply whose text is `value` as JSON (a structured answer)."""
        text = value.model_dump_json() if isinstance(value, BaseModel) else to_json(value).decode()
        return cls(text=text, input_tokens=input_tokens, output_tokens=output_tokens, delay_s=delay_s)

    @classmethod
    def calls(
        cls,
        *calls: ToolCall,
        text: str = "",
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> Reply:
        """A reply asking for tools (see `tool_call`)."""
        return cls(text=text, tool_calls=calls, input_tokens=input_tokens, output_tokens=output_tokens)

    @classmethod
    def fail(cls, error: BaseException) -> Reply:
        return cls(error=error)


ScriptItem = str | Reply | BaseException
FunctionResult = str | Reply
ModelFunction = Callable[[Sequence[Message], RequestParams], FunctionResult | Awaitable[FunctionResult]]


@dataclass(frozen=True, slots=True)
class SeenRequest:
    """A request a test model received, so tests can assert on prompts, tools and schemas."""

    messages: tuple[Message, ...]
    params: RequestParams
    stream: bool

    @property
    def last_user_text(self) -> str:
        return next((m.content for m in reversed(self.messages) if m.role == "user"), "")

    @property
    def last_user_images(self) -> tuple[ImagePart, ...]:
        """The images of the last user message (what a vision model would see)."""
        return next((m.images for m in reversed(self.messages) if m.role == "user"), ())


class ScriptExhausted(AssertionError):
    """The test model was asked more often than its script allows."""


def _as_reply(item: ScriptItem | FunctionResult) -> Reply:
    if isinstance(item, Reply):
        return item
    if isinstance(item, BaseException):
        return Reply(error=item)
    return Reply(text=item)


def _estimate_tokens(text: str) -> int:
    return max(len(text.split()), 1)


class _TestModel(Model):
    """Shared behaviour: turn a Reply into a Completion, or stream it word by word."""

    requests: list[SeenRequest]

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests = []

    @abstractmethod
    async def _reply(self, messages: Sequence[Message], params: RequestParams) -> Reply:
        """The reply to this request (the script's next item, or the function's answer)."""

    async def _next(self, messages: Sequence[Message], params: RequestParams, *, stream: bool) -> Reply:
        self.requests.append(SeenRequest(tuple(messages), params, stream))
        if params.timeout_s is None:
            reply = await self._reply_after_delay(messages, params)
        else:
            try:
                async with asyncio.timeout(params.timeout_s):
                    reply = await self._reply_after_delay(messages, params)
            except TimeoutError as e:
                raise ProviderTimeout(f"{self.name} did not answer in time", model=self.name) from e
        if reply.error is not None and reply.stream_error_after is None:
            raise reply.error
        return reply

    async def _reply_after_delay(self, messages: Sequence[Message], params: RequestParams) -> Reply:
        reply = await self._reply(messages, params)
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        return reply

    def _completion(self, reply: Reply, messages: Sequence[Message]) -> Completion:
        prompt = " ".join(m.content for m in messages)
        output = reply.text + "".join(c.arguments for c in reply.tool_calls)
        return Completion(
            text=reply.text,
            tool_calls=reply.tool_calls,
            input_tokens=reply.input_tokens if reply.input_tokens is not None else _estimate_tokens(prompt),
            output_tokens=reply.output_tokens if reply.output_tokens is not None else _estimate_tokens(output),
            model_name=self.name,
            response_model=self.name.partition(":")[2] or self.name,
            finish_reason="tool_calls" if reply.tool_calls else "stop",
        )

    async def request(self, messages: Sequence[Message], params: RequestParams) -> Completion:
        reply = await self._next(messages, params, stream=False)
        if reply.error is not None:
            raise reply.error
        return self._completion(reply, messages)

    async def request_stream(
        self, messages: Sequence[Message], params: RequestParams
    ) -> AsyncGenerator[StreamEvent, None]:
        if params.on_sent is not None:
            params.on_sent()
        reply = await self._next(messages, params, stream=True)
        for count, delta in enumerate(_DELTA.findall(reply.text)):
            if reply.error is not None and count == reply.stream_error_after:
                raise reply.error
            # Yield control like a real network stream would, so cancellation and interleaving are realistic.
            await asyncio.sleep(0)
            yield delta
        if reply.error is not None:
            raise reply.error
        yield self._completion(reply, messages)


class ScriptedModel(_TestModel):
    """Answers each request with the next item of its script: a str (text or JSON), a `Reply`, or an exception.

    Requests beyond the script raise `ScriptExhausted`. `requests` holds every request received.
    """

    def __init__(self, script: Iterable[ScriptItem] = (), *, name: str = "test:scripted") -> None:
        super().__init__(name)
        self._script: deque[Reply] = deque(_as_reply(item) for item in script)

    def add(self, *items: ScriptItem) -> None:
        self._script.extend(_as_reply(item) for item in items)

    @property
    def remaining(self) -> int:
        return len(self._script)

    async def _reply(self, messages: Sequence[Message], params: RequestParams) -> Reply:
        if not self._script:
            raise ScriptExhausted(f"{self.name} got request #{len(self.requests)} but its script is used up")
        return self._script.popleft()


class FunctionModel(_TestModel):
    """Answers with `function(messages, params)` (sync or async), returning a str or a `Reply`."""

    def __init__(self, function: ModelFunction, *, name: str = "test:function") -> None:
        super().__init__(name)
        self._function = function

    async def _reply(self, messages: Sequence[Message], params: RequestParams) -> Reply:
        result = self._function(messages, params)
        if inspect.isawaitable(result):
            result = await result
        return _as_reply(result)
