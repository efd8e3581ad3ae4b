"""message images: the images of chat messages are kept with them

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26 00:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "session_message_images",
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("media_type", sa.String(length=20), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_session_message_images_account_id_accounts"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["message_id"], ["session_messages.id"],
                                name=op.f("fk_session_message_images_message_id_session_messages"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"],
                                name=op.f("fk_session_message_images_session_id_sessions"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_session_message_images")),
        sa.UniqueConstraint("message_id", "position", name="uq_session_message_images_position"),
    )
    op.create_index(op.f("ix_session_message_images_account_id"), "session_message_images", ["account_id"])
    op.create_index(op.f("ix_session_message_images_session_id"), "session_message_images", ["session_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_session_message_images_session_id"), table_name="session_message_images")
    op.drop_index(op.f("ix_session_message_images_account_id"), table_name="session_message_images")
    op.drop_table("session_message_images")
