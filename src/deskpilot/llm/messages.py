"""Provider-neutral messages, tool calls, requests and completions exchanged with a Model."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

Role: TypeAlias = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool the model asked to run; `arguments` is the JSON text exactly as the model wrote it."""

    id: str
    name: str
    arguments: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image sent with a user message, for vision-capable models: its media type and base64 data.

    Recorded conversations carry `placeholder` instead of the data (see `Message.to_dict`). The decoded bytes and
    their digest are worked out once (decoding and hashing a few MB is not free) and not compared.
    """

    media_type: str
    data: str
    _raw: bytes | None = field(default=None, repr=False, compare=False)
    _sha256: str | None = field(default=None, init=False, repr=False, compare=False)
    _placeholder: str | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_bytes(cls, media_type: str, raw: bytes, data: str | None = None) -> ImagePart:
        """The part of an image whose bytes the caller has (and, if it has it, their base64 text)."""
        return cls(media_type, base64.b64encode(raw).decode("ascii") if data is None else data, raw)

    @property
    def data_url(self) -> str:
        """The image as a `data:` URL (OpenAI's `image_url` content part)."""
        return f"data:{self.media_type};base64,{self.data}"

    @property
    def raw(self) -> bytes:
        """The decoded image (the base64 text's own bytes, should it not decode)."""
        if self._raw is None:
            try:
                raw = base64.b64decode(self.data, validate=True)
            except (binascii.Error, ValueError):
                raw = self.data.encode()
            object.__setattr__(self, "_raw", raw)
        assert self._raw is not None
        return self._raw

    @property
    def sha256(self) -> str:
        """The SHA-256 of the decoded image, hex."""
        if self._sha256 is None:
            object.__setattr__(self, "_sha256", hashlib.sha256(self.raw).hexdigest())
        assert self._sha256 is not None
        return self._sha256

    @property
    def placeholder(self) -> str:
        """What a record keeps of the image: `[image image/png, 123 KB, sha256 0123456789abcdef]` (size and digest
        of the decoded bytes)."""
        if self._placeholder is None:
            kilobytes = (len(self.raw) + 1023) // 1024
            placeholder = f"[image {self.media_type}, {kilobytes} KB, sha256 {self.sha256[:16]}]"
            object.__setattr__(self, "_placeholder", placeholder)
        assert self._placeholder is not None
        return self._placeholder


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a conversation.

    `tool_calls` is set on assistant messages that asked for tools; `tool_call_id`, `tool_name` and
    `is_error` on the tool result that answers one call; `images` on user messages for vision-capable models
    (check `LLM.supports_images` first: other models refuse or ignore them).
    """

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    tool_name: str | None = None
    is_error: bool = False
    images: tuple[ImagePart, ...] = ()

    @classmethod
    def system(cls, content: str) -> Message:
        return cls("system", content)

    @classmethod
    def user(cls, content: str, images: Sequence[ImagePart] = ()) -> Message:
        return cls("user", content, images=tuple(images))

    @classmethod
    def assistant(cls, content: str, tool_calls: Sequence[ToolCall] = ()) -> Message:
        return cls("assistant", content, tuple(tool_calls))

    @classmethod
    def tool_result(cls, call: ToolCall, content: str, *, is_error: bool = False) -> Message:
        return cls("tool", content, tool_call_id=call.id, tool_name=call.name, is_error=is_error)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form, as stored in `llm_calls.messages`: images as their placeholders, never their data."""
        data: dict[str, object] = {"role": self.role, "content": self.content}
        if self.images:
            data["images"] = [image.placeholder for image in self.images]
        if self.tool_calls:
            data["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        if self.tool_call_id is not None:
            data["tool_call_id"] = self.tool_call_id
            data["tool_name"] = self.tool_name
            data["is_error"] = self.is_error
        return data


# What the facade accepts as a conversation: a bare string is one user message.
Prompt: TypeAlias = str | Sequence[Message]


def as_messages(prompt: Prompt) -> list[Message]:
    """A fresh list the caller may append to (corrective retries and tool rounds extend it)."""
    if isinstance(prompt, str):
        return [Message("user", prompt)]
    return list(prompt)


@dataclass(frozen=True, slots=True)
class ToolDefinition:
    """What the model is told about a tool: name, description and a JSON schema of its arguments."""

    name: str
    description: str
    parameters: Mapping[str, object]


@dataclass(frozen=True, slots=True, eq=False)
class OutputSchema:
    """A structured-output contract: JSON schema of the requested type, built once per type.

    `strict` is True only when the schema fits OpenAI's strict mode (every property required, no
    unsupported keywords); otherwise the schema is still sent, unenforced by the provider, and we validate.
    """

    name: str
    description: str
    json_schema: Mapping[str, object]
    strict: bool


@dataclass(frozen=True, slots=True)
class RequestParams:
    """Per-request parameters a Model honours."""

    max_tokens: int | None = None
    timeout_s: float | None = None
    tools: tuple[ToolDefinition, ...] = ()
    output: OutputSchema | None = None
    # Called once the request is on its way: when its body is written, where the transport can tell (OpenAI-
    # compatible over aiohttp), else just before it is sent. A caller can then do other work while the model reads.
    on_sent: Callable[[], None] | None = None
    # How many times a FallbackModel may move on to the next model (None: down the whole chain).
    max_fallbacks: int | None = None


@dataclass(slots=True)
class Completion:
    """A model's reply: text and/or tool calls, token usage and which model actually answered.

    `model_name` is the answering Model's "provider:model" name; `response_model` is what the provider
    reported (often a dated version). With structured output, `text` is the JSON text of the answer,
    whichever way the provider delivered it (content or forced tool call).
    """

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    input_tokens: int = 0
    output_tokens: int = 0
    model_name: str = ""
    response_model: str | None = None
    finish_reason: str | None = None
    fallback_used: bool = False


# What Model.request_stream yields: text deltas, then exactly one Completion (full text, tool calls, usage).
StreamEvent: TypeAlias = str | Completion
