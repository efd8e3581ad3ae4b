"""approvals: human approval requests for tool calls, per-session standing grants

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 17:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _enum(name: str, *values: str) -> sa.Enum:
    # A CHECK constraint lists the allowed values (ck_approval_requests_<name>), as the model declares.
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=20)


def upgrade() -> None:
    op.create_table(
        "approval_requests",
        sa.Column("source_kind", _enum("sourcekind", "chat", "automation", "agent"), nullable=False),
        sa.Column("source_id", sa.Uuid(), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=True),
        sa.Column("requested_by_id", sa.Uuid(), nullable=True),
        sa.Column("tool_name", sa.String(length=64), nullable=False),
        sa.Column("tool_call_id", sa.String(length=128), nullable=False),
        sa.Column("arguments", JSON, nullable=False),
        sa.Column("arguments_sha256", sa.String(length=64), nullable=False),
        sa.Column("summary", sa.String(length=300), nullable=False),
        sa.Column(
            "status",
            _enum("approvalstatus", "pending", "approved", "rejected", "expired", "executed", "failed"),
            nullable=False,
        ),
        sa.Column("decision", _enum("decision", "approve", "edit", "reject", "approve_always"), nullable=True),
        sa.Column("edited_arguments", JSON, nullable=True),
        sa.Column("decided_by_id", sa.Uuid(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.String(length=1000), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("executed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.CheckConstraint(
            "(decision IS NULL) = (decided_at IS NULL)", name=op.f("ck_approval_requests_decision_has_time")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_approval_requests_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["decided_by_id"], ["users.id"], name=op.f("fk_approval_requests_decided_by_id_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["requested_by_id"],
            ["users.id"],
            name=op.f("fk_approval_requests_requested_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name=op.f("fk_approval_requests_session_id_sessions"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approval_requests")),
        sa.UniqueConstraint(
            "account_id", "source_kind", "source_id", "tool_call_id", name="uq_approval_requests_source_call"
        ),
    )
    op.create_index(op.f("ix_approval_requests_account_id"), "approval_requests", ["account_id"], unique=False)
    op.create_index(
        "ix_approval_requests_account_status_created",
        "approval_requests",
        ["account_id", "status", "created_at"],
        unique=False,
    )
    op.create_index(op.f("ix_approval_requests_session_id"), "approval_requests", ["session_id"], unique=False)
    op.create_index("ix_approval_requests_source", "approval_requests", ["account_id", "source_id"], unique=False)
    op.create_index("ix_approval_requests_status_expires", "approval_requests", ["status", "expires_at"], unique=False)

    op.create_table(
        "approval_grants",
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("tool_name", sa.String(length=64), nullable=False),
        sa.Column("granted_by_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_approval_grants_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["granted_by_id"], ["users.id"], name=op.f("fk_approval_grants_granted_by_id_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name=op.f("fk_approval_grants_session_id_sessions"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approval_grants")),
        sa.UniqueConstraint("session_id", "tool_name", name="uq_approval_grants_session_tool"),
    )
    op.create_index(op.f("ix_approval_grants_account_id"), "approval_grants", ["account_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_approval_grants_account_id"), table_name="approval_grants")
    op.drop_table("approval_grants")
    op.drop_index("ix_approval_requests_status_expires", table_name="approval_requests")
    op.drop_index("ix_approval_requests_source", table_name="approval_requests")
    op.drop_index(op.f("ix_approval_requests_session_id"), table_name="approval_requests")
    op.drop_index("ix_approval_requests_account_status_created", table_name="approval_requests")
    op.drop_index(op.f("ix_approval_requests_account_id"), table_name="approval_requests")
    op.drop_table("approval_requests")
