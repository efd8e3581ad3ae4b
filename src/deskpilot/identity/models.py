"""Tables for accounts, clients, teams, users and API tokens."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, Enum, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from deskpilot.storage import Base, TenantMixin, TimestampMixin, UUIDPrimaryKey


class Role(StrEnum):
    VIEWER = "viewer"
    ENGINEER = "engineer"
    LEAD = "lead"
    ADMIN = "admin"
    OWNER = "owner"

    @property
    def rank(self) -> int:
        return _ROLE_ORDER.index(self)

    def at_least(self, other: Role) -> bool:
        return self.rank >= other.rank


_ROLE_ORDER = [Role.VIEWER, Role.ENGINEER, Role.LEAD, Role.ADMIN, Role.OWNER]


class Account(UUIDPrimaryKey, TimestampMixin, Base):
    """A tenant: one MSP or one internal IT department."""

    __tablename__ = "accounts"

    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(80), unique=True)


class Client(UUIDPrimaryKey, TimestampMixin, TenantMixin, Base):
    """A customer of the MSP; optional on records that concern one customer."""

    __tablename__ = "clients"
    __table_args__ = (UniqueConstraint("account_id", "name", name="uq_clients_account_name"),)

    name: Mapped[str] = mapped_column(String(200))
    external_ref: Mapped[str | None] = mapped_column(String(200), default=None)


class Team(UUIDPrimaryKey, TimestampMixin, TenantMixin, Base):
    __tablename__ = "teams"
    __table_args__ = (UniqueConstraint("account_id", "name", name="uq_teams_account_name"),)

    name: Mapped[str] = mapped_column(String(200))


class User(UUIDPrimaryKey, TimestampMixin, TenantMixin, Base):
    __tablename__ = "users"

    # Globally unique so that login needs no account picker.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[Role] = mapped_column(
        Enum(Role, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e]), default=Role.ENGINEER
    )
    password_hash: Mapped[str | None] = mapped_column(String(200), default=None)
    team_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("teams.id", ondelete="SET NULL"), index=True, default=None
    )
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    last_login_at: Mapped[datetime | None] = mapped_column(default=None)
    # Console cookies carry the epoch they were issued in; raising it (sign-out, a new password) ends every
    # console session of the user at once, whichever process serves the next request.
    session_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ApiToken(UUIDPrimaryKey, TimestampMixin, TenantMixin, Base):
    """A bearer token; only its SHA-256 is stored, the secret is shown once."""

    __tablename__ = "api_tokens"
    __table_args__ = (Index("ix_api_tokens_token_hash", "token_hash", unique=True),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64))
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
