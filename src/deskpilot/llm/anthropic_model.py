"""AnthropicModel: Claude through the official anthropic SDK (Messages API)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import anthropic
import httpx
from anthropic import AsyncAnthropic, AsyncStream
from anthropic.types import Message as AnthropicMessage
from anthropic.types import RawMessageStreamEvent, Usage
from pydantic_core import to_json

from deskpilot.llm.base import Model
from deskpilot.llm.errors import (
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    error_for_status,
    parse_retry_after,
)
from deskpilot.llm.messages import Completion, Message, OutputSchema, RequestParams, StreamEvent, ToolCall

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
# The Messages API requires max_tokens; used only when a caller sends none.
DEFAULT_MAX_TOKENS = 4096
MESSAGES = "/v1/messages"
_EVENTS = AsyncStream[RawMessageStreamEvent]


def make_anthropic_client(
    *,
    api_key: str,
    base_url: str | None,
    timeout_s: float,
    http_client: httpx.AsyncClient | None = None,
) -> AsyncAnthropic:
    """An SDK client with its own retries off: FallbackModel decides what happens after a failure."""
    return AsyncAnthropic(
        api_key=api_key,
        base_url=base_url or ANTHROPIC_BASE_URL,
        timeout=timeout_s,
        max_retries=0,
        http_client=http_client,
    )


class AnthropicModel(Model):
    """A Claude model. Structured output is a forced tool call (`tool_choice={"type": "tool", ...}`).

    Like OpenAIModel, it builds the wire-format body itself and sends it with the SDK's documented `post()`,
    which is what `messages.create()` ends in, minus the per-call TypedDict transform of plain JSON.
    """

    def __init__(self, model_name: str, client: AsyncAnthropic, *, provider: str = "anthropic") -> None:
        self.model_name = model_name
        self.name = f"{provider}:{model_name}"
        self.client = client
        self._post = client.post
        self._default_timeout = client.timeout

    async def request(self, messages: Sequence[Message], params: RequestParams) -> Completion:
        body, options = self._request(messages, params)
        try:
            response: AnthropicMessage = await self._post(
                MESSAGES, cast_to=AnthropicMessage, body=body, options=options
            )
        except (anthropic.AnthropicError, httpx.HTTPError) as e:
            raise _translate(e, self.name) from e
        texts: list[str] = []
        calls: list[ToolCall] = []
        output = params.output
        structured: str | None = None
        for block in response.content:
            if block.type == "text":
                texts.append(block.text)
            elif block.type == "tool_use":
                arguments = to_json(block.input).decode()
                if output is not None and block.name == output.name and structured is None:
                    structured = arguments
                else:
                    calls.append(ToolCall(block.id, block.name, arguments))
        return Completion(
            text=structured if structured is not None else "".join(texts),
            tool_calls=tuple(calls),
            input_tokens=_input_tokens(response.usage),
            output_tokens=response.usage.output_tokens,
            model_name=self.name,
            response_model=response.model,
            finish_reason=response.stop_reason,
        )

    async def request_stream(
        self, messages: Sequence[Message], params: RequestParams
    ) -> AsyncGenerator[StreamEvent, None]:
        body, options = self._request(messages, params)
        body["stream"] = True
        if params.on_sent is not None:
            params.on_sent()  # the SDK's stream does not say when the request is written
        parts: list[str] = []
        # Tool-use blocks by content index: [id, name, input JSON so far].
        blocks: dict[int, list[str]] = {}
        input_tokens = output_tokens = 0
        finish_reason: str | None = None
        response_model: str | None = None
        try:
            stream: AsyncStream[RawMessageStreamEvent] = await self._post(
                MESSAGES, cast_to=AnthropicMessage, body=body, options=options, stream=True, stream_cls=_EVENTS
            )
            async with stream:
                async for event in stream:
                    if event.type == "content_block_delta":
                        delta = event.delta
                        if delta.type == "text_delta":
                            parts.append(delta.text)
                            yield delta.text
                        elif delta.type == "input_json_delta" and event.index in blocks:
                            blocks[event.index][2] += delta.partial_json
                    elif event.type == "content_block_start":
                        block = event.content_block
                        if block.type == "tool_use":
                            blocks[event.index] = [block.id, block.name, ""]
                    elif event.type == "message_start":
                        response_model = event.message.model
                        input_tokens = _input_tokens(event.message.usage)
                        output_tokens = event.message.usage.output_tokens
                    elif event.type == "message_delta":
                        output_tokens = event.usage.output_tokens
                        if event.usage.input_tokens:
                            input_tokens = event.usage.input_tokens
                        finish_reason = event.delta.stop_reason or finish_reason
        except (anthropic.AnthropicError, httpx.HTTPError) as e:
            raise _translate(e, self.name, streaming=True) from e
        text = "".join(parts)
        calls: list[ToolCall] = []
        output = params.output
        for index in sorted(blocks):
            call_id, name, arguments = blocks[index]
            if output is not None and name == output.name:
                text = arguments or "{}"
            else:
                calls.append(ToolCall(call_id, name, arguments or "{}"))
        yield Completion(
            text=text,
            tool_calls=tuple(calls),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            model_name=self.name,
            response_model=response_model,
            finish_reason=finish_reason,
        )

    def _request(self, messages: Sequence[Message], params: RequestParams) -> tuple[dict[str, Any], Any]:
        """The JSON body in wire format, and the SDK request options (only a timeout that differs)."""
        system, converted = to_anthropic_messages(messages)
        kwargs: dict[str, Any] = {
            "model": self.model_name,
            "messages": converted,
            "max_tokens": params.max_tokens or DEFAULT_MAX_TOKENS,
        }
        if system:
            kwargs["system"] = system
        options: dict[str, float] = {}
        if params.timeout_s is not None and params.timeout_s != self._default_timeout:
            options["timeout"] = params.timeout_s
        tools: list[dict[str, object]] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters} for t in params.tools
        ]
        if params.output is not None:
            tools.append(_output_tool(params.output))
            kwargs["tool_choice"] = {"type": "tool", "name": params.output.name}
        if tools:
            kwargs["tools"] = tools
        return kwargs, options


def _output_tool(output: OutputSchema) -> dict[str, object]:
    return {"name": output.name, "description": output.description, "input_schema": output.json_schema}


def _input_tokens(usage: Usage) -> int:
    # Cached prompt tokens are billed separately but are still prompt tokens of this call.
    return usage.input_tokens + (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)


def _json_object(arguments: str) -> object:
    # The API wants tool_use input as an object; a model's unparsable arguments are replayed as empty.
    try:
        value = json.loads(arguments) if arguments else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def to_anthropic_messages(messages: Sequence[Message]) -> tuple[str, list[dict[str, object]]]:
    """System text (all system messages joined) and the conversation in Messages API form.

    Consecutive tool results are merged into one user message, as the API requires all results of one
    assistant turn to come together.
    """
    system: list[str] = []
    out: list[dict[str, object]] = []
    open_results: list[dict[str, object]] | None = None
    for m in messages:
        if m.role == "tool":
            block: dict[str, object] = {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}
            if m.is_error:
                block["is_error"] = True
            if open_results is None:
                open_results = [block]
                out.append({"role": "user", "content": open_results})
            else:
                open_results.append(block)
            continue
        open_results = None
        if m.role == "system":
            system.append(m.content)
        elif m.role == "assistant" and m.tool_calls:
            content: list[dict[str, object]] = [{"type": "text", "text": m.content}] if m.content else []
            content.extend(
                {"type": "tool_use", "id": c.id, "name": c.name, "input": _json_object(c.arguments)}
                for c in m.tool_calls
            )
            out.append({"role": "assistant", "content": content})
        elif m.images:
            out.append({"role": m.role, "content": _content_blocks(m)})
        else:
            out.append({"role": m.role, "content": m.content})
    return "\n\n".join(system), out


def _content_blocks(message: Message) -> list[dict[str, object]]:
    """A message with images as Messages API content blocks: the images first (as Anthropic advises), then the text.

    An empty text block is refused by the API, so an images-only message has none.
    """
    blocks: list[dict[str, object]] = [
        {"type": "image", "source": {"type": "base64", "media_type": image.media_type, "data": image.data}}
        for image in message.images
    ]
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    return blocks


def _translate(error: Exception, model: str, *, streaming: bool = False) -> ProviderError:
    """Our error for an anthropic SDK or httpx exception; the SDK's own stays chained as __cause__."""
    if isinstance(error, anthropic.APITimeoutError | httpx.TimeoutException):
        return ProviderTimeout(f"{model} did not answer in time", model=model)
    if isinstance(error, anthropic.APIConnectionError | httpx.TransportError):
        return ProviderUnavailable(f"cannot reach {model}: {error}", model=model)
    if isinstance(error, anthropic.APIStatusError):
        if streaming and error.status_code < 400:
            # An error event inside a 200 stream (e.g. overloaded_error): the server gave up mid-answer.
            return ProviderUnavailable(f"{model} failed while streaming: {error.message}", model=model)
        retry_after = parse_retry_after(error.response.headers.get("retry-after"))
        return error_for_status(error.status_code, f"{model}: {error.message}", model=model, retry_after_s=retry_after)
    if isinstance(error, anthropic.APIResponseValidationError):
        return ProviderError(f"{model} sent a response that does not fit the API: {error.message}", model=model)
    return ProviderError(f"{model}: {error}", model=model)
