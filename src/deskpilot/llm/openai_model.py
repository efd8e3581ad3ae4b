"""OpenAIModel: any OpenAI-compatible chat-completions endpoint through the official openai SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import httpx
import orjson
from openai import AsyncOpenAI

from deskpilot.llm.base import Model
from deskpilot.llm.errors import (
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    error_for_status,
    parse_retry_after,
)
from deskpilot.llm.messages import Completion, Message, RequestParams, StreamEvent, ToolCall
from deskpilot.llm.provider_http import ProviderSession

OPENAI_BASE_URL = "https://api.openai.com/v1"
# Local servers (Ollama, llama.cpp, LM Studio, vLLM) need no key, but the SDK insists on one.
NO_KEY = "not-needed"

MaxTokensParam = Literal["max_tokens", "max_completion_tokens"]
CHAT_COMPLETIONS = "/chat/completions"


def make_openai_client(
    *,
    api_key: str | None,
    base_url: str | None,
    timeout_s: float,
    http_client: httpx.AsyncClient | None = None,
) -> AsyncOpenAI:
    """An SDK client with its own retries off: FallbackModel decides what happens after a failure.

    `OpenAIModel` takes the endpoint, key and headers from it and sends its calls over aiohttp
    (`ProviderSession`); the SDK's own httpx client is not on the hot path.
    """
    return AsyncOpenAI(
        api_key=api_key or NO_KEY,
        base_url=base_url or OPENAI_BASE_URL,
        timeout=timeout_s,
        max_retries=0,
        http_client=http_client,
    )


def default_max_tokens_param(base_url: str) -> MaxTokensParam:
    """OpenAI and Azure OpenAI want `max_completion_tokens` (reasoning models refuse `max_tokens`); other
    OpenAI-compatible servers (vLLM, Ollama, llama.cpp, LM Studio, OpenRouter) reliably know `max_tokens`."""
    host = urlsplit(base_url).hostname or ""
    if host == "api.openai.com" or host.endswith(".openai.azure.com"):
        return "max_completion_tokens"
    return "max_tokens"


class OpenAIModel(Model):
    """A chat model behind an OpenAI-compatible API (OpenAI, Azure OpenAI v1, vLLM, Ollama, llama.cpp, OpenRouter).

    Structured output uses `response_format={"type": "json_schema", ...}`. OpenAI itself takes
    `max_completion_tokens`; other servers get the older, widely supported `max_tokens` unless told otherwise.

    The SDK client gives the endpoint, the key and its headers; the body is built here in wire format and sent
    over aiohttp (`ProviderSession`), answers read as `chat.completion` JSON or `chat.completion.chunk` events.
    The SDK's own request path (its TypedDict transform, httpx, a pydantic model per answer and per chunk) was
    most of a call's CPU (bench/bench_llm.py, bench/bench_chat.py). Errors map as the SDK's did: the HTTP status
    (with Retry-After), timeouts, connection errors, error events, and answers that do not fit the API.
    """

    def __init__(
        self,
        model_name: str,
        client: AsyncOpenAI,
        *,
        provider: str = "openai",
        max_tokens_param: MaxTokensParam | None = None,
        http: ProviderSession | None = None,
    ) -> None:
        self.model_name = model_name
        self.name = f"{provider}:{model_name}"
        self.client = client
        self._default_timeout = client.timeout
        self._max_tokens_param = max_tokens_param or default_max_tokens_param(str(client.base_url))
        # Calls go out with the SDK client's URL and headers (its auth included), over `http` (aiohttp).
        self.http = http or ProviderSession(timeout_s=_seconds(client.timeout))
        self._url = str(client.base_url).rstrip("/") + CHAT_COMPLETIONS
        headers = {k: v for k, v in client.default_headers.items() if isinstance(v, str)}
        self._json_headers = {**headers, **client.auth_headers, "Accept": "application/json"}
        self._stream_headers = {**self._json_headers, "Accept": "text/event-stream"}

    async def request(self, messages: Sequence[Message], params: RequestParams) -> Completion:
        """One answer, as JSON over aiohttp (`ProviderSession`): the SDK's request and response handling was five
        times the CPU of the call itself, a visible share of a turn's. Same URL, headers, key and body."""
        body, options = self._request(messages, params)
        payload = _encode(body)
        try:
            async with self.http.post(
                self._url, payload, self._json_headers, timeout_s=options.get("timeout"), on_sent=params.on_sent
            ) as response:
                status, headers, content = response.status, response.headers, await response.read()
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise _transport_error(e, self.name) from e
        if status >= 400:
            raise _status_error(status, content, headers, self.name)
        return _completion(content, self.name)

    async def request_stream(
        self, messages: Sequence[Message], params: RequestParams
    ) -> AsyncGenerator[StreamEvent, None]:
        """The streamed answer, read in the API's own SSE wire format over aiohttp (`ProviderSession`).

        The SDK's stream builds a pydantic chunk model per event and goes through httpx; together that was most
        of the server's time before the first token (bench/bench_chat.py). The request is the SDK's (URL,
        headers, auth, body); errors map as the SDK's would (`_status_error`, `_stream_error`).
        """
        body, options = self._request(messages, params)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        payload = _encode(body)
        state = _StreamState()
        try:
            async with self.http.post(
                self._url, payload, self._stream_headers, timeout_s=options.get("timeout"),
                on_sent=params.on_sent,
            ) as response:
                if response.status >= 400:
                    raise _status_error(response.status, await response.read(), response.headers, self.name)
                async for raw in response.content:
                    if not raw.startswith(b"data:"):
                        continue
                    data = raw[5:].strip()
                    if data == b"[DONE]":
                        break
                    text = state.take(_chunk(data, self.name))
                    if text:
                        yield text
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise _transport_error(e, self.name) from e
        yield Completion(
            text="".join(state.parts),
            tool_calls=tuple(ToolCall(*state.calls[i]) for i in sorted(state.calls)),
            input_tokens=state.input_tokens,
            output_tokens=state.output_tokens,
            model_name=self.name,
            response_model=state.response_model,
            finish_reason=state.finish_reason,
        )

    def _request(self, messages: Sequence[Message], params: RequestParams) -> tuple[dict[str, Any], Any]:
        """The JSON body in wire format, and the SDK request options (only a timeout that differs)."""
        kwargs: dict[str, Any] = {"model": self.model_name, "messages": to_openai_messages(messages)}
        if params.max_tokens is not None:
            kwargs[self._max_tokens_param] = params.max_tokens
        options: dict[str, float] = {}
        if params.timeout_s is not None and params.timeout_s != self._default_timeout:
            options["timeout"] = params.timeout_s
        output = params.output
        if output is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": output.name,
                    "description": output.description,
                    "schema": output.json_schema,
                    "strict": output.strict,
                },
            }
        if params.tools:
            kwargs["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in params.tools
            ]
        return kwargs, options


def to_openai_messages(messages: Sequence[Message]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for m in messages:
        if m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content})
        elif m.tool_calls:
            out.append(
                {
                    "role": "assistant",
                    "content": m.content or None,
                    "tool_calls": [
                        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                        for c in m.tool_calls
                    ],
                }
            )
        elif m.images:
            out.append({"role": m.role, "content": _content_parts(m)})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def _content_parts(message: Message) -> list[dict[str, object]]:
    """A message with images as chat-completions content parts: its text (if any), then each image as a data URL."""
    parts: list[dict[str, object]] = [{"type": "text", "text": message.content}] if message.content else []
    parts.extend({"type": "image_url", "image_url": {"url": image.data_url}} for image in message.images)
    return parts


class _StreamState:
    """What a stream's chunks add up to: text parts, tool-call fragments by index, usage, finish reason."""

    __slots__ = ("calls", "finish_reason", "input_tokens", "output_tokens", "parts", "response_model")

    def __init__(self) -> None:
        self.parts: list[str] = []
        # Streamed tool calls arrive as fragments keyed by index: [id, name, argument text so far].
        self.calls: dict[int, list[str]] = {}
        self.input_tokens = self.output_tokens = 0
        self.finish_reason: str | None = None
        self.response_model: str | None = None

    def take(self, chunk: dict[str, Any]) -> str:
        """Add one chat.completion.chunk; returns its text delta ("" when it has none)."""
        self.response_model = chunk.get("model") or self.response_model
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.input_tokens = int(usage.get("prompt_tokens") or 0)
            self.output_tokens = int(usage.get("completion_tokens") or 0)
        choices = chunk.get("choices")
        if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
            return ""
        choice = choices[0]
        if choice.get("finish_reason"):
            self.finish_reason = str(choice["finish_reason"])
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return ""
        for fragment in delta.get("tool_calls") or ():
            if not isinstance(fragment, dict):
                continue
            index = fragment.get("index")
            slot = self.calls.setdefault(index if isinstance(index, int) else 0, ["", "", ""])
            if fragment.get("id"):
                slot[0] = str(fragment["id"])
            function = fragment.get("function")
            if isinstance(function, dict):
                slot[1] += str(function.get("name") or "")
                slot[2] += str(function.get("arguments") or "")
        content = delta.get("content")
        if not isinstance(content, str) or not content:
            return ""
        text: str = content
        self.parts.append(text)
        return text


def _chunk(data: bytes, model: str) -> dict[str, Any]:
    """One SSE data payload as a chunk; an error event (the server gave up mid-stream) raises, as the SDK does."""
    try:
        chunk = json.loads(data)
    except ValueError as e:
        raise ProviderError(f"{model} streamed something that is not JSON: {data[:200]!r}", model=model) from e
    if not isinstance(chunk, dict):
        raise ProviderError(f"{model} streamed something that is not a chunk: {data[:200]!r}", model=model)
    error = chunk.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else None
        raise ProviderUnavailable(f"{model} failed while streaming: {message or 'an error event'}", model=model)
    return chunk


def _status_error(status: int, content: bytes, headers: Mapping[str, str], model: str) -> ProviderError:
    """The error for a refused request (streamed or not), with the provider's message as the SDK would show it."""
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    detail = message if isinstance(message, str) else content[:500].decode(errors="replace")
    retry_after = parse_retry_after(headers.get("retry-after"))
    return error_for_status(status, f"{model}: Error code: {status} - {detail}", model=model, retry_after_s=retry_after)


def _encode(body: dict[str, Any]) -> bytes:
    """The request body as UTF-8 JSON. orjson: a prompt of tens of kilobytes took the json module about 0.15 ms of
    each call's CPU, orjson a tenth of that; non-string keys are written as strings, as json.dumps would."""
    return orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)


def _completion(content: bytes, model: str) -> Completion:
    """A chat.completion answer as a Completion; an answer that does not fit the API is a ProviderError."""
    try:
        data = json.loads(content)
        choices = data.get("choices") or []
        usage = data.get("usage") or {}
        text: object = ""
        finish_reason: str | None = None
        calls: tuple[ToolCall, ...] = ()
        if choices:
            choice = choices[0]
            finish_reason = choice.get("finish_reason")
            message = choice.get("message") or {}
            text = message.get("content") or message.get("refusal") or ""
            calls = tuple(
                ToolCall(str(c["id"]), str(c["function"]["name"]), str(c["function"]["arguments"]))
                for c in message.get("tool_calls") or ()
                if c.get("type", "function") == "function"
            )
        if not isinstance(text, str):
            raise TypeError("content is not text")
        return Completion(
            text=text,
            tool_calls=calls,
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            model_name=model,
            response_model=data.get("model"),
            finish_reason=finish_reason,
        )
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
        raise ProviderError(
            f"{model} sent a response that does not fit the API: {content[:200]!r}", model=model
        ) from e


def _transport_error(error: Exception, model: str) -> ProviderError:
    """Our error for what aiohttp raised while a call was sent or its answer read."""
    if isinstance(error, TimeoutError):
        return ProviderTimeout(f"{model} did not answer in time", model=model)
    if isinstance(error, aiohttp.ClientPayloadError):
        return ProviderUnavailable(f"{model} failed while streaming: {error}", model=model)
    if isinstance(error, aiohttp.ClientConnectionError):
        return ProviderUnavailable(f"cannot reach {model}: {error}", model=model)
    if isinstance(error, ValueError):  # a line longer than the read buffer allows
        return ProviderError(f"{model} streamed an event too large to read: {error}", model=model)
    return ProviderError(f"{model}: {error}", model=model)


def _seconds(timeout: float | httpx.Timeout | None) -> float:
    if isinstance(timeout, int | float):
        return float(timeout)
    read = timeout.read if isinstance(timeout, httpx.Timeout) else None
    return float(read) if read is not None else 600.0
