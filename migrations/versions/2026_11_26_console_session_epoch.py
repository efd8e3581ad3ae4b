"""console session epoch: signing out (or a new password) ends every console session of a user

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ALTER TABLE on every database (SQLite has ADD and DROP COLUMN): a batch "move and copy" of `users` on
# SQLite would drop the table, and its ON DELETE CASCADE foreign keys would take every user's sessions with it.


def upgrade() -> None:
    # Existing cookies carry no epoch and count as epoch 0: they stay valid until the user's next sign-out.
    op.add_column("users", sa.Column("session_epoch", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    op.drop_column("users", "session_epoch")
