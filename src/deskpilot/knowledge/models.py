"""Tables for runbook flows, their versions and script templates."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Boolean,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

from deskpilot.knowledge import fts
from deskpilot.storage import Base, JSONDocument, TenantMixin, TimestampMixin, UUIDPrimaryKey, utcnow


class ProblemDomain(StrEnum):
    ACTIVE_DIRECTORY = "active_directory"
    NETWORKING = "networking"
    M365 = "m365"
    HARDWARE = "hardware"
    ENDPOINT = "endpoint"
    VIRTUALIZATION = "virtualization"
    SECURITY = "security"
    BACKUP = "backup"
    EMAIL = "email"
    PRINTING = "printing"
    CLOUD = "cloud"
    OTHER = "other"


class FlowStatus(StrEnum):
    DRAFT = "draft"
    APPROVED = "approved"
    ARCHIVED = "archived"


class FlowSource(StrEnum):
    STARTER = "starter"
    USER = "user"
    FLYWHEEL = "flywheel"


class ScriptLanguage(StrEnum):
    POWERSHELL = "powershell"
    BASH = "bash"
    PYTHON = "python"


def _enum(cls: type[StrEnum], length: int) -> Enum:
    return Enum(cls, native_enum=False, length=length, values_callable=lambda e: [m.value for m in e])


class Flow(UUIDPrimaryKey, TimestampMixin, TenantMixin, Base):
    """A runbook: a decision tree of question, action and resolution nodes (`definition`)."""

    __tablename__ = "flows"
    __table_args__ = (
        UniqueConstraint("account_id", "slug", name="uq_flows_account_slug"),
        Index("ix_flows_account_status", "account_id", "status"),
    )

    slug: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    problem_domain: Mapped[ProblemDomain] = mapped_column(_enum(ProblemDomain, 30), default=ProblemDomain.OTHER)
    tags: Mapped[list[str]] = mapped_column(JSONDocument, default=list)
    symptoms: Mapped[list[str]] = mapped_column(JSONDocument, default=list)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    version: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[FlowStatus] = mapped_column(_enum(FlowStatus, 20), default=FlowStatus.DRAFT)
    source: Mapped[FlowSource] = mapped_column(_enum(FlowSource, 20), default=FlowSource.USER)
    team_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("teams.id", ondelete="SET NULL"), index=True, default=None
    )
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    approved_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    approved_at: Mapped[datetime | None] = mapped_column(default=None)

    usage_count: Mapped[int] = mapped_column(Integer, default=0)
    last_matched_at: Mapped[datetime | None] = mapped_column(default=None)
    matched_count: Mapped[int] = mapped_column(Integer, default=0)
    resolved_count: Mapped[int] = mapped_column(Integer, default=0)
    success_rate: Mapped[float | None] = mapped_column(Float, default=None)

    # Derived from the document on every write; the full-text structures (migration 0002) index these.
    search_keywords: Mapped[str] = mapped_column(Text, default="")
    search_body: Mapped[str] = mapped_column(Text, default="")


class FlowVersion(UUIDPrimaryKey, TenantMixin, Base):
    """One definition a flow has had; written when the flow is created and on each definition change."""

    __tablename__ = "flow_versions"
    __table_args__ = (UniqueConstraint("flow_id", "version", name="uq_flow_versions_flow_version"),)

    flow_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("flows.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    definition: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)


class ScriptTemplate(UUIDPrimaryKey, TimestampMixin, TenantMixin, Base):
    """A parameterised script; `{{param}}` placeholders in `body` are filled by `templates.render`."""

    __tablename__ = "script_templates"
    __table_args__ = (
        UniqueConstraint("account_id", "slug", name="uq_script_templates_account_slug"),
        Index("ix_script_templates_account_usage", "account_id", "usage_count"),
    )

    slug: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    language: Mapped[ScriptLanguage] = mapped_column(_enum(ScriptLanguage, 20))
    description: Mapped[str] = mapped_column(Text, default="")
    parameters: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument, default=list)
    body: Mapped[str] = mapped_column(Text)
    source: Mapped[FlowSource] = mapped_column(_enum(FlowSource, 20), default=FlowSource.USER)
    team_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("teams.id", ondelete="SET NULL"), index=True, default=None
    )
    usage_count: Mapped[int] = mapped_column(Integer, default=0)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)


# Databases built with `create_all` alone (tests of other domains, quick scripts) get the same search
# structures as migration 0002 creates; IF NOT EXISTS keeps the two paths from colliding.
@event.listens_for(Flow.__table__, "after_create")
def _create_search_structures(_target: Table, connection: Connection, **_kw: Any) -> None:
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql(fts.SQLITE_CREATE_FTS)
    elif connection.dialect.name == "postgresql":
        connection.exec_driver_sql(fts.PG_CREATE_INDEX)


@event.listens_for(Flow.__table__, "before_drop")
def _drop_search_structures(_target: Table, connection: Connection, **_kw: Any) -> None:
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql(fts.SQLITE_DROP_FTS)
