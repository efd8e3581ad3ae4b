"""knowledge search: full-text structures for flows that the ORM does not describe

SQLite: an FTS5 table `flows_fts` (porter stemming) whose rows the knowledge service writes with each flow.
PostgreSQL: a GIN index over the weighted tsvector of a flow's name, keywords and body.
The SQL repeats deskpilot.knowledge.fts verbatim (tests/knowledge/test_migration.py checks it).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQLITE_CREATE_FTS = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS flows_fts USING fts5("
    "flow_id UNINDEXED, account_id UNINDEXED, name, keywords, body, tokenize = 'porter unicode61')"
)
SQLITE_BACKFILL = (
    "INSERT INTO flows_fts (flow_id, account_id, name, keywords, body) "
    "SELECT id, account_id, name, search_keywords, search_body FROM flows"
)
SQLITE_DROP_FTS = "DROP TABLE IF EXISTS flows_fts"
PG_CREATE_INDEX = (
    "CREATE INDEX IF NOT EXISTS ix_flows_search ON flows USING gin (("
    "setweight(to_tsvector('english', name), 'A') || "
    "setweight(to_tsvector('english', search_keywords), 'B') || "
    "setweight(to_tsvector('english', search_body), 'C')))"
)
PG_DROP_INDEX = "DROP INDEX IF EXISTS ix_flows_search"


def _has_flows() -> bool:
    # Until the initial revision is regenerated with the knowledge tables, `create_all` adds `flows` after
    # the migrations, and the table's own create hook then builds these structures.
    return sa.inspect(op.get_bind()).has_table("flows")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(SQLITE_CREATE_FTS)
        if _has_flows():
            op.execute("DELETE FROM flows_fts")
            op.execute(SQLITE_BACKFILL)
    elif dialect == "postgresql" and _has_flows():
        op.execute(PG_CREATE_INDEX)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(SQLITE_DROP_FTS)
    elif dialect == "postgresql":
        op.execute(PG_DROP_INDEX)
