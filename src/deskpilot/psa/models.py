"""Tables for PSA connections, user-to-member mappings and pushes of notes and time entries."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Boolean, Enum, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from deskpilot.psa.registry import PSAKind
from deskpilot.storage import Base, JSONDocument, TenantMixin, TimestampMixin, UUIDPrimaryKey

ERROR_LENGTH = 200


class MappingSource(StrEnum):
    AUTO = "auto"
    MANUAL = "manual"


class PushKind(StrEnum):
    NOTE = "note"
    TIME_ENTRY = "time_entry"


class PushStatus(StrEnum):
    PENDING = "pending"
    PUSHED = "pushed"
    FAILED = "failed"


def _enum(cls: type[StrEnum]) -> Enum:
    return Enum(cls, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e])


class PsaConnection(UUIDPrimaryKey, TimestampMixin, TenantMixin, Base):
    """One PSA instance an account talks to; secrets live only in `credentials_encrypted` (SecretBox)."""

    __tablename__ = "psa_connections"
    __table_args__ = (UniqueConstraint("account_id", "name", name="uq_psa_connections_account_name"),)

    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[PSAKind] = mapped_column(_enum(PSAKind))
    settings: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    credentials_encrypted: Mapped[str] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    last_tested_at: Mapped[datetime | None] = mapped_column(default=None)
    last_test_ok: Mapped[bool | None] = mapped_column(Boolean, default=None)
    last_error: Mapped[str | None] = mapped_column(String(ERROR_LENGTH), default=None)


class PsaMemberMapping(UUIDPrimaryKey, TimestampMixin, TenantMixin, Base):
    """Which PSA member (technician) a deskpilot user is on one connection; manual entries beat automatic ones."""

    __tablename__ = "psa_member_mappings"
    __table_args__ = (
        UniqueConstraint("connection_id", "user_id", name="uq_psa_member_mappings_connection_user"),
    )

    connection_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("psa_connections.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    member_identifier: Mapped[str] = mapped_column(String(100))
    source: Mapped[MappingSource] = mapped_column(_enum(MappingSource))


class PsaPush(UUIDPrimaryKey, TimestampMixin, TenantMixin, Base):
    """One note or time entry sent (or to be re-sent) to a ticket, with the payload needed to retry it."""

    __tablename__ = "psa_pushes"
    __table_args__ = (Index("ix_psa_pushes_subject", "account_id", "subject_type", "subject_id"),)

    connection_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("psa_connections.id", ondelete="CASCADE"), index=True
    )
    ticket_id: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[str] = mapped_column(String(40))
    subject_id: Mapped[uuid.UUID] = mapped_column()
    kind: Mapped[PushKind] = mapped_column(_enum(PushKind))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    status: Mapped[PushStatus] = mapped_column(_enum(PushStatus), default=PushStatus.PENDING, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(ERROR_LENGTH), default=None)
    external_id: Mapped[str | None] = mapped_column(String(100), default=None)
    pushed_at: Mapped[datetime | None] = mapped_column(default=None)
