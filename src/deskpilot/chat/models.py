"""Chat turns: one streamed exchange at a time per session, with what a reconnecting client needs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from deskpilot.storage import Base, JSONDocument, TenantMixin, UUIDPrimaryKey, utcnow


class ChatTurn(UUIDPrimaryKey, TenantMixin, Base):
    """One chat turn: the user's message, the assistant's reply and the data parts the turn produced.

    At most one turn per session is `running` (a partial unique index: the THREAD_BUSY guard holds across
    processes). `parts` keeps the turn's data parts (task lane, facts, fix, fork, suggested flows, usage) so a
    client reconnecting after the stream ended gets the turn's final state.
    """

    __tablename__ = "chat_turns"
    __table_args__ = (
        Index(
            "uq_chat_turns_one_running",
            "session_id",
            unique=True,
            sqlite_where=text("status = 'running'"),
            postgresql_where=text("status = 'running'"),
        ),
        Index("ix_chat_turns_session_started", "session_id", "started_at"),
    )

    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    branch_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    # running | complete | interrupted | failed | awaiting_approval
    status: Mapped[str] = mapped_column(String(20), default="running")
    kind: Mapped[str] = mapped_column(String(12), default="message")  # message | resume
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    user_message_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    assistant_message_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    # The reply as shown (markers stripped); filled as the turn ends, whatever way it ends.
    content: Mapped[str] = mapped_column(Text, default="")
    parts: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument, default=list)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    model: Mapped[str | None] = mapped_column(String(120), default=None)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class MessageImage(UUIDPrimaryKey, TenantMixin, Base):
    """An image a user sent with a chat message (UC-003), kept with it: later turns show it to the model again
    and the console shows it in the conversation. `data` is the decoded image; the message's text notes it."""

    __tablename__ = "session_message_images"
    __table_args__ = (UniqueConstraint("message_id", "position", name="uq_session_message_images_position"),)

    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    message_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("session_messages.id", ondelete="CASCADE"))
    # 1 for the message's first image, as the API's error messages count them.
    position: Mapped[int] = mapped_column(Integer)
    media_type: Mapped[str] = mapped_column(String(20))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
