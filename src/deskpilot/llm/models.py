"""The llm_calls table (one row per LLM exchange, for audit, debugging and cost per account/client/session) and
llm_prompts (each system prompt stored once per account).

A row stores what its call sent compactly; `deskpilot.llm.recording.reconstruct_messages()` rebuilds it exactly:

- `prompt_sha256` set: the call's first message was the system prompt `llm_prompts[(account_id, prompt_sha256)]`,
  and `messages` holds only what followed it. Null: `messages` holds the whole list (rows before revision 0004,
  and rows made by `record_row()`).
- `prefix_call_id` set: `messages` holds only what this call added to the conversation of the earlier call
  `prefix_call_id` (same subject and thread), whose first `prefix_len` conversation messages come first.
- `parsed_from_output` true: `parsed` is null because it is `raw_output` validated, unchanged: the fields the model
  set are `json.loads(raw_output)` and the others took their defaults (the reply is kept once; see `parsed_value`).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Index, PrimaryKeyConstraint, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from deskpilot.storage import Base, JSONDocument, TenantMixin, UUIDPrimaryKey, utcnow


class LLMCall(UUIDPrimaryKey, TenantMixin, Base):
    """One request/response with a model (a corrective retry or tool round is its own row). Append-only."""

    __tablename__ = "llm_calls"
    __table_args__ = (
        Index("ix_llm_calls_account_created", "account_id", "created_at"),
        Index("ix_llm_calls_subject", "subject_type", "subject_id"),
    )

    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    purpose: Mapped[str] = mapped_column(String(60), index=True)
    # "provider:model" of the model that answered (or of the chain, when none did).
    model: Mapped[str] = mapped_column(String(200))
    fallback_used: Mapped[bool] = mapped_column(default=False)
    # The messages sent, less the system prompt when `prompt_sha256` is set and less the first `prefix_len`
    # conversation messages when `prefix_call_id` is set (see the module docstring).
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument)
    prompt_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    prefix_call_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    prefix_len: Mapped[int | None] = mapped_column(default=None)
    raw_output: Mapped[str] = mapped_column(Text, default="")
    parsed: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument, default=None)
    parsed_from_output: Mapped[bool | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    error_code: Mapped[str | None] = mapped_column(String(60), default=None)
    input_tokens: Mapped[int] = mapped_column(default=0)
    output_tokens: Mapped[int] = mapped_column(default=0)
    latency_ms: Mapped[int] = mapped_column(default=0)
    client_id: Mapped[uuid.UUID | None] = mapped_column(index=True, default=None)
    subject_type: Mapped[str | None] = mapped_column(String(60), default=None)
    subject_id: Mapped[str | None] = mapped_column(String(64), default=None)

    @property
    def parsed_value(self) -> dict[str, Any] | None:
        """The validated value of a structured call, whether stored in `parsed` or only in `raw_output`.

        From `raw_output` it holds the fields the model set; `OutputType.model_validate(value)` adds the defaults.
        """
        if self.parsed_from_output:
            value: dict[str, Any] = json.loads(self.raw_output)
            return value
        return self.parsed


class LLMPrompt(TenantMixin, Base):
    """A system prompt, stored once per account and referenced by `llm_calls.prompt_sha256`. Append-only."""

    __tablename__ = "llm_prompts"
    __table_args__ = (PrimaryKeyConstraint("account_id", "sha256"),)

    # Hex SHA-256 of the UTF-8 content.
    sha256: Mapped[str] = mapped_column(String(64))
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
