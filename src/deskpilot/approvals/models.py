"""Tables for approval requests (one per paused tool call) and standing grants ("approve always" in a session)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Dialect, Enum, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from deskpilot.storage import Base, JSONDocument, TenantMixin, UUIDPrimaryKey, utcnow

MAX_TOOL_NAME = 64
MAX_TOOL_CALL_ID = 128
MAX_SUMMARY = 300
MAX_REASON = 1000


class SourceKind(StrEnum):
    """What paused to ask: a chat turn, an automation run or an agent run."""

    CHAT = "chat"
    AUTOMATION = "automation"
    AGENT = "agent"


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    EXECUTED = "executed"
    FAILED = "failed"


class Decision(StrEnum):
    APPROVE = "approve"
    EDIT = "edit"
    REJECT = "reject"
    APPROVE_ALWAYS = "approve_always"


class NullableJSONDocument(JSONDocument):
    """A JSON document where Python None is SQL NULL, not the JSON document `null` (same DDL as JSONDocument)."""

    cache_ok = True
    should_evaluate_none = False

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB(none_as_null=True))
        return dialect.type_descriptor(JSON(none_as_null=True))


def _enum(cls: type[StrEnum]) -> Enum:
    # create_constraint: the allowed values are a CHECK constraint on every backend, not only in Python.
    return Enum(
        cls,
        native_enum=False,
        length=20,
        create_constraint=True,
        name=cls.__name__.lower(),
        values_callable=lambda e: [m.value for m in e],
    )


class ApprovalRequest(UUIDPrimaryKey, TenantMixin, Base):
    """One tool call waiting for (or past) a human decision; bound to the call by tool, call id and argument hash.

    `arguments` are the validated arguments the model asked for; `edited_arguments` replace them when the
    decision is `edit`, and `arguments_sha256` is always the hash of the arguments that will run (canonical
    JSON). `executed_at` is set by the single atomic claim just before the call runs; `result` and the final
    status (`executed` or `failed`) when it has run.
    """

    __tablename__ = "approval_requests"
    __table_args__ = (
        UniqueConstraint(
            "account_id", "source_kind", "source_id", "tool_call_id", name="uq_approval_requests_source_call"
        ),
        Index("ix_approval_requests_account_status_created", "account_id", "status", "created_at"),
        Index("ix_approval_requests_source", "account_id", "source_id"),
        Index("ix_approval_requests_status_expires", "status", "expires_at"),
        CheckConstraint("(decision IS NULL) = (decided_at IS NULL)", name="decision_has_time"),
    )

    source_kind: Mapped[SourceKind] = mapped_column(_enum(SourceKind))
    source_id: Mapped[uuid.UUID] = mapped_column()
    session_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True, default=None
    )
    requested_by_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    tool_name: Mapped[str] = mapped_column(String(MAX_TOOL_NAME))
    tool_call_id: Mapped[str] = mapped_column(String(MAX_TOOL_CALL_ID))
    arguments: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    arguments_sha256: Mapped[str] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(String(MAX_SUMMARY))
    status: Mapped[ApprovalStatus] = mapped_column(_enum(ApprovalStatus), default=ApprovalStatus.PENDING)
    decision: Mapped[Decision | None] = mapped_column(_enum(Decision), default=None)
    edited_arguments: Mapped[dict[str, Any] | None] = mapped_column(NullableJSONDocument, default=None)
    decided_by_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    decided_at: Mapped[datetime | None] = mapped_column(default=None)
    reason: Mapped[str | None] = mapped_column(String(MAX_REASON), default=None)
    expires_at: Mapped[datetime] = mapped_column()
    executed_at: Mapped[datetime | None] = mapped_column(default=None)
    result: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def effective_arguments(self) -> dict[str, Any]:
        """The arguments that run: the edited ones after an `edit`, else those the model asked for."""
        return self.edited_arguments if self.edited_arguments is not None else self.arguments


class ApprovalGrant(UUIDPrimaryKey, TenantMixin, Base):
    """ "Approve always": calls of `tool_name` in this session run without asking again."""

    __tablename__ = "approval_grants"
    __table_args__ = (UniqueConstraint("session_id", "tool_name", name="uq_approval_grants_session_tool"),)

    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    tool_name: Mapped[str] = mapped_column(String(MAX_TOOL_NAME))
    granted_by_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
