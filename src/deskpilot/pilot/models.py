"""Tables of guided (and, later, chat) sessions: sessions, steps, conversation messages, branches and fork points."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
    or_,
)
from sqlalchemy.orm import Mapped, mapped_column

from deskpilot.pilot import fts
from deskpilot.storage import Base, JSONDocument, TenantMixin, TimestampMixin, UUIDPrimaryKey, utcnow


class PilotSession(UUIDPrimaryKey, TimestampMixin, TenantMixin, Base):
    """One troubleshooting session. `kind` is guided (steps) or chat (the copilot, same table).

    The conversation is not stored here: it is the append-only `session_messages` of the session's branches and,
    in guided sessions, the steps with their answers (`SessionStep.seq`, `response_seq`).
    `state_version` is compared and bumped by every UPDATE (SQLAlchemy's version counter), so two writers that
    read the same state cannot both win.
    """

    __tablename__ = "sessions"
    __table_args__ = (
        Index("ix_sessions_account_status", "account_id", "status"),
        Index("ix_sessions_account_created", "account_id", "created_at"),
        Index("ix_sessions_user_created", "user_id", "created_at"),
        Index("ix_sessions_team_status", "team_id", "status"),
    )

    kind: Mapped[str] = mapped_column(String(16), default="guided", index=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    team_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("teams.id", ondelete="SET NULL"), default=None)
    client_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("clients.id", ondelete="SET NULL"), index=True, default=None
    )
    # Wide enough for "requesting_escalation" and whatever comes next (FP-030).
    status: Mapped[str] = mapped_column(String(32), default="active", index=True)
    mode: Mapped[str] = mapped_column(String(8), default="ai")

    # Chat sessions: generated from the first message (UC-002, SS-038); guided sessions show problem_summary.
    title: Mapped[str | None] = mapped_column(String(120), default=None)
    intake_type: Mapped[str] = mapped_column(String(20), default="free_text")
    intake: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    problem_summary: Mapped[str | None] = mapped_column(String(200), default=None)
    problem_domain: Mapped[str | None] = mapped_column(String(40), default=None)
    urgency: Mapped[str | None] = mapped_column(String(16), default=None)
    key_symptoms: Mapped[list[str]] = mapped_column(JSONDocument, default=list)
    confidence_score: Mapped[float] = mapped_column(Float, default=0.0)
    confidence_tier: Mapped[str] = mapped_column(String(16), default="discovery")

    matched_flow_id: Mapped[uuid.UUID | None] = mapped_column(index=True, default=None)
    matched_flow_name: Mapped[str | None] = mapped_column(String(200), default=None)
    match_score: Mapped[float | None] = mapped_column(Float, default=None)
    # The runbook driving a flow-mode session, copied when flow mode begins so edits cannot break a walk.
    flow_definition: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument, default=None)

    psa_connection_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    psa_ticket_id: Mapped[str | None] = mapped_column(String(64), default=None)
    psa_context_status: Mapped[str | None] = mapped_column(String(16), default=None)
    ticket_data: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument, default=None)

    system_prompt: Mapped[str] = mapped_column(Text, default="")
    step_count: Mapped[int] = mapped_column(Integer, default=0)
    # Sequence number of the last conversation message (messages are numbered per session).
    message_seq: Mapped[int] = mapped_column(Integer, default=0)
    state_version: Mapped[int] = mapped_column(Integer, default=1)
    # The step waiting for the engineer on the active branch; None while the next step is being generated.
    current_step_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    awaiting_generation: Mapped[bool] = mapped_column(Boolean, default=False)
    generation_error: Mapped[str | None] = mapped_column(String(64), default=None)
    is_branching: Mapped[bool] = mapped_column(Boolean, default=False)
    active_branch_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    total_input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    total_output_tokens: Mapped[int] = mapped_column(Integer, default=0)

    resolved_at: Mapped[datetime | None] = mapped_column(default=None)
    resolution_summary: Mapped[str | None] = mapped_column(Text, default=None)
    resolution_action: Mapped[str | None] = mapped_column(Text, default=None)
    resolution_notes: Mapped[str | None] = mapped_column(Text, default=None)
    rating: Mapped[int | None] = mapped_column(Integer, default=None)
    feedback: Mapped[str | None] = mapped_column(Text, default=None)
    analysis_status: Mapped[str | None] = mapped_column(String(16), default=None)

    escalation_reason: Mapped[str | None] = mapped_column(Text, default=None)
    escalated_to_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True, default=None
    )
    escalated_at: Mapped[datetime | None] = mapped_column(default=None)
    escalation_package: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument, default=None)
    picked_up_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True, default=None
    )
    picked_up_at: Mapped[datetime | None] = mapped_column(default=None)

    __mapper_args__ = {"version_id_col": state_version}

    @classmethod
    def involving(cls, user_id: uuid.UUID) -> ColumnElement[bool]:
        """Sessions a user lists as theirs: owned, picked up, or escalated to them."""
        return or_(cls.user_id == user_id, cls.picked_up_by_id == user_id, cls.escalated_to_id == user_id)


# Databases built with `create_all` alone get the same similar-session search structures as migration 0003
# creates (FP-021); IF NOT EXISTS keeps the two paths from colliding.
@event.listens_for(PilotSession.__table__, "after_create")
def _create_search_structures(_target: Table, connection: Connection, **_kw: Any) -> None:
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql(fts.SQLITE_CREATE_FTS)
    elif connection.dialect.name == "postgresql":
        connection.exec_driver_sql(fts.PG_CREATE_INDEX)


@event.listens_for(PilotSession.__table__, "before_drop")
def _drop_search_structures(_target: Table, connection: Connection, **_kw: Any) -> None:
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql(fts.SQLITE_DROP_FTS)


class SessionStep(UUIDPrimaryKey, TenantMixin, Base):
    """One step of a guided session (FP-023) and the engineer's response to it (FP-025).

    The step is also the conversation's entries for both: the assistant's step at `seq` and the engineer's answer
    at `response_seq` (numbered with the session's messages; the history rebuilds their text from these columns),
    so a guided turn is stored once. Steps written before those columns existed have both null and keep their
    `session_messages` rows; a step that is no conversation entry (the pickup briefing) has them null too.
    """

    __tablename__ = "session_steps"
    __table_args__ = (UniqueConstraint("session_id", "step_order", name="uq_session_steps_session_order"),)

    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    branch_id: Mapped[uuid.UUID | None] = mapped_column(index=True, default=None)
    step_order: Mapped[int] = mapped_column(Integer)
    step_type: Mapped[str] = mapped_column(String(24))
    content: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    context_message: Mapped[str | None] = mapped_column(Text, default=None)
    confidence: Mapped[float] = mapped_column(Float, default=0.0)
    reasoning: Mapped[str | None] = mapped_column(Text, default=None)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    is_fork_point: Mapped[bool] = mapped_column(Boolean, default=False)
    fork_point_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    seq: Mapped[int | None] = mapped_column(Integer, default=None)
    response_seq: Mapped[int | None] = mapped_column(Integer, default=None)

    selected_option: Mapped[str | None] = mapped_column(String(200), default=None)
    free_text_input: Mapped[str | None] = mapped_column(Text, default=None)
    was_free_text: Mapped[bool] = mapped_column(Boolean, default=False)
    was_skipped: Mapped[bool] = mapped_column(Boolean, default=False)
    action_result: Mapped[str | None] = mapped_column(String(16), default=None)
    action_details: Mapped[str | None] = mapped_column(Text, default=None)
    responded_at: Mapped[datetime | None] = mapped_column(default=None)
    responded_by_id: Mapped[uuid.UUID | None] = mapped_column(default=None)


class SessionMessage(UUIDPrimaryKey, TenantMixin, Base):
    """One conversation turn, appended and never changed: the LLM context is rebuilt from these rows.

    `seq` numbers a session's messages; a branch sees its ancestors' messages up to where it forked, then its own.
    A guided session's steps and answers are not here (the step row is their entry); its other turns are.
    """

    __tablename__ = "session_messages"
    __table_args__ = (
        UniqueConstraint("session_id", "seq", name="uq_session_messages_session_seq"),
        Index("ix_session_messages_session_branch_seq", "session_id", "branch_id", "seq"),
    )

    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    branch_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    seq: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SessionBranch(UUIDPrimaryKey, TenantMixin, Base):
    """A line of investigation (FP-029). The root branch holds everything before the first fork.

    `lineage` lists the ancestors as `[[branch_id, last_seq], ...]`, root first: the entries of each ancestor up
    to `last_seq` precede the branch's own, so the branch's history is one query.
    """

    __tablename__ = "session_branches"

    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    parent_branch_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    fork_point_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    label: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="untried")
    position: Mapped[int] = mapped_column(Integer, default=0)
    lineage: Mapped[list[list[str | int]]] = mapped_column(JSONDocument, default=list)
    findings: Mapped[list[str]] = mapped_column(JSONDocument, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ForkPoint(UUIDPrimaryKey, TenantMixin, Base):
    """Where a branch split into hypotheses: the fork step, its reason and the options offered (FP-028)."""

    __tablename__ = "fork_points"

    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    parent_branch_id: Mapped[uuid.UUID] = mapped_column()
    trigger_step_id: Mapped[uuid.UUID] = mapped_column()
    fork_reason: Mapped[str] = mapped_column(Text, default="")
    options: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
