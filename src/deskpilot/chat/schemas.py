"""Request and response shapes of the chat copilot API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from deskpilot.approvals.schemas import ResumeDecision

MAX_MESSAGE_CHARS = 100_000
MAX_IMAGES = 4
# One image's base64 text, about 3.75 MiB decoded: Anthropic refuses images over 5 MiB measured on the base64 text
# (OpenAI takes more). Text up to the schema's 7,000,000 characters reaches the service and gets `image_too_large`.
MAX_IMAGE_BASE64_CHARS = 5 * 1024 * 1024
ImageMediaType = Literal["image/png", "image/jpeg", "image/gif", "image/webp"]


class ImageIn(BaseModel):
    """UC-003: an image for a vision-capable model, base64 (no `data:` URL prefix)."""

    model_config = ConfigDict(extra="forbid")

    media_type: ImageMediaType
    data: str = Field(min_length=1, max_length=7_000_000)


class ChatRename(BaseModel):
    """A chat's new title (the engineer's words win over the generated one from then on)."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=100)

    @field_validator("title")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        title = " ".join(value.split())
        if not title:
            raise ValueError("a title needs a word")
        return title


class ChatCreate(BaseModel):
    """A new chat session (UC-002); the title comes from the first message when none is given."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["chat"] = "chat"
    title: str | None = Field(default=None, max_length=100)
    client_id: uuid.UUID | None = None


class MessageIn(BaseModel):
    """A user message (UC-003)."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(default="", max_length=MAX_MESSAGE_CHARS + 1)
    # May be the whole message (then `text` may be empty); only for a chat route of vision-capable models.
    images: list[ImageIn] = Field(default_factory=list, max_length=MAX_IMAGES)


class ResumeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    turn_id: uuid.UUID | None = None
    decisions: list[ResumeDecision] = Field(default_factory=list, max_length=20)


class ChatSessionOut(BaseModel):
    id: uuid.UUID
    kind: Literal["chat"] = "chat"
    title: str | None
    status: str
    problem_summary: str | None
    step_count: int
    state_version: int
    is_branching: bool
    active_branch_id: uuid.UUID | None
    total_input_tokens: int
    total_output_tokens: int
    created_at: datetime
    updated_at: datetime


class ChatMessageOut(BaseModel):
    id: uuid.UUID
    role: Literal["user", "assistant"]
    content: str
    branch_id: uuid.UUID | None
    seq: int
    created_at: datetime
    # The images kept with a user message, 1 to `images`: GET /api/v1/sessions/{id}/messages/{message id}/images/{n}.
    images: int = 0


class TurnOut(BaseModel):
    """A turn as the JSON form of POST /messages answers it (the stream carries the same, in parts)."""

    id: uuid.UUID
    session_id: uuid.UUID
    status: str
    user_message_id: uuid.UUID | None
    assistant_message_id: uuid.UUID | None
    content: str
    parts: list[dict[str, Any]]
    error_code: str | None
    input_tokens: int
    output_tokens: int
    started_at: datetime
    finished_at: datetime | None

    def part(self, name: str) -> Any:
        """The data of this turn's `data-<name>` part, if any."""
        for p in self.parts:
            if p.get("type") == f"data-{name}":
                return p.get("data")
        return None


class ChatDetail(BaseModel):
    session: ChatSessionOut
    messages: list[ChatMessageOut]
    last_turn: TurnOut | None
