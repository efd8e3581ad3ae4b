"""Tables of what a session knows and proposes: task lanes, facts ("What we know") and suggested fixes."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from deskpilot.diagnosis.fixes import FixStatus, UserDecision
from deskpilot.storage import Base, JSONDocument, TenantMixin, TimestampMixin, UUIDPrimaryKey


class FactSourceType(StrEnum):
    """Where a fact came from; `user_note` is the engineer's own and never accepted from the AI (UC-011)."""

    QUESTION = "question"  # an answered task-lane question (source_ref: the question)
    DIAGNOSTIC_CHECK = "diagnostic_check"  # a task-lane action's result (source_ref: the action)
    AI_SYNTHESIS = "ai_synthesis"  # the AI's conclusion from several findings (no source_ref)
    USER_NOTE = "user_note"  # typed by the engineer


FACT_SOURCE_TYPES: Final = tuple(s.value for s in FactSourceType)
FIX_STATUSES: Final = tuple(s.value for s in FixStatus)
USER_DECISIONS: Final = tuple(s.value for s in UserDecision)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class SessionTaskLane(UUIDPrimaryKey, TimestampMixin, TenantMixin, Base):
    """The session's current task lane (UC-015/016), one row per session; `lane` is `diagnosis.lane.StoredLane`.

    Its own table rather than a column of `sessions`, which the Pilot domain owns; a cleared lane deletes the row.
    """

    __tablename__ = "session_task_lanes"

    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), unique=True)
    lane: Mapped[dict[str, Any]] = mapped_column(JSONDocument)


class SessionFact(UUIDPrimaryKey, TimestampMixin, TenantMixin, Base):
    """One entry of "What we know" (UC-017/018); deleting sets `deleted_at` so the history stays.

    `source_ref` is the task-lane item (question or action) a fact came from: a polymorphic reference to an id
    inside a JSON document, so the service checks it when the fact is written instead of a foreign key.
    """

    __tablename__ = "session_facts"
    __table_args__ = (
        CheckConstraint(_one_of("source_type", FACT_SOURCE_TYPES), name="source_type"),
        # The list every turn and every console refresh reads: the session's active facts in order.
        Index(
            "ix_session_facts_session_active",
            "session_id",
            "created_at",
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
    )

    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    source_type: Mapped[str] = mapped_column(String(20))
    source_ref: Mapped[uuid.UUID | None] = mapped_column(default=None)
    text: Mapped[str] = mapped_column(Text)
    summary: Mapped[str | None] = mapped_column(Text, default=None)
    # None for facts the AI promoted.
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)


class SessionSuggestedFix(UUIDPrimaryKey, TimestampMixin, TenantMixin, Base):
    """A fix the AI suggested (UC-019) and what became of it (UC-021). A new suggestion supersedes the active one.

    At most one fix per session has `superseded_at IS NULL` (a partial unique index, so two concurrent
    suggestions cannot both stay active). `status` is the outcome, `user_decision` the path the engineer chose.
    """

    __tablename__ = "session_suggested_fixes"
    __table_args__ = (
        CheckConstraint(_one_of("status", FIX_STATUSES), name="status"),
        CheckConstraint(_one_of("user_decision", USER_DECISIONS), name="user_decision"),
        CheckConstraint("confidence_pct >= 0 AND confidence_pct <= 100", name="confidence_pct"),
        Index(
            "uq_session_suggested_fixes_one_active",
            "session_id",
            unique=True,
            sqlite_where=text("superseded_at IS NULL"),
            postgresql_where=text("superseded_at IS NULL"),
        ),
        Index("ix_session_suggested_fixes_session_created", "session_id", "created_at"),
    )

    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    confidence_pct: Mapped[int] = mapped_column(Integer)
    script_template_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("script_templates.id", ondelete="SET NULL"), default=None
    )
    ai_drafted_script: Mapped[str | None] = mapped_column(Text, default=None)
    ai_drafted_parameters: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument, default=None)
    user_decision: Mapped[str] = mapped_column(String(20), default="none")
    decided_at: Mapped[datetime | None] = mapped_column(default=None)
    status: Mapped[str] = mapped_column(String(20), default="proposed")
    applied_at: Mapped[datetime | None] = mapped_column(default=None)
    verified_at: Mapped[datetime | None] = mapped_column(default=None)
    partial_notes: Mapped[str | None] = mapped_column(Text, default=None)
    failure_reason: Mapped[str | None] = mapped_column(Text, default=None)
    pending_reason: Mapped[str | None] = mapped_column(Text, default=None)
    # {outcome, reason, proposed_at, resolution: open|accepted|rejected, resolved_at, resolved_by_id}
    ai_outcome_proposal: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument, default=None)
    superseded_at: Mapped[datetime | None] = mapped_column(default=None)
