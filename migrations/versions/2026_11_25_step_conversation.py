"""step conversation: a guided turn is stored once, the step row being its conversation entries

New nullable `session_steps` columns: `seq` (the conversation position of the assistant's step) and `response_seq`
(that of the engineer's answer); the history rebuilds both entries' text from the step's columns, so guided steps
and answers no longer write `session_messages` rows. Steps written before this revision keep null in both and keep
their messages: nothing to backfill. A downgrade drops the columns, and with them the history of the turns written
since (their steps stay).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 19:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("session_steps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seq", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("response_seq", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("session_steps", schema=None) as batch_op:
        batch_op.drop_column("response_seq")
        batch_op.drop_column("seq")
