"""The llm_calls table: one row per LLM exchange, for audit, debugging and cost per account/client/session."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Index, String, Text
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
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument)
    raw_output: Mapped[str] = mapped_column(Text, default="")
    parsed: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    error_code: Mapped[str | None] = mapped_column(String(60), default=None)
    input_tokens: Mapped[int] = mapped_column(default=0)
    output_tokens: Mapped[int] = mapped_column(default=0)
    latency_ms: Mapped[int] = mapped_column(default=0)
    client_id: Mapped[uuid.UUID | None] = mapped_column(index=True, default=None)
    subject_type: Mapped[str | None] = mapped_column(String(60), default=None)
    subject_id: Mapped[str | None] = mapped_column(String(64), default=None)
