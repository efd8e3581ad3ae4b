"""session search: full-text structures for similar resolved sessions (FP-021) that the ORM does not describe

SQLite: an FTS5 table `sessions_fts` (porter stemming) whose rows the Pilot service writes when a session is
resolved; the upgrade backfills the sessions resolved so far.
PostgreSQL: a partial GIN index over the weighted tsvector of a resolved session's problem summary, intake text
(description and ticket summary) and resolution summary.
The SQL repeats deskpilot.pilot.fts verbatim (tests/pilot/test_similar.py checks it).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 18:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQLITE_CREATE_FTS = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS sessions_fts USING fts5("
    "session_id UNINDEXED, account_id UNINDEXED, summary, intake, resolution, tokenize = 'porter unicode61')"
)
SQLITE_BACKFILL = (
    "INSERT INTO sessions_fts (session_id, account_id, summary, intake, resolution) "
    "SELECT id, account_id, coalesce(problem_summary, ''), "
    "trim(coalesce(json_extract(intake, '$.text'), '') || char(10) || "
    "coalesce(json_extract(intake, '$.ticket_data.summary'), ''), char(10)), "
    "coalesce(resolution_summary, '') "
    "FROM sessions WHERE status = 'resolved' AND kind = 'guided'"
)
SQLITE_DROP_FTS = "DROP TABLE IF EXISTS sessions_fts"
PG_CREATE_INDEX = (
    "CREATE INDEX IF NOT EXISTS ix_sessions_search ON sessions USING gin (("
    "setweight(to_tsvector('english', coalesce(problem_summary, '')), 'A') || "
    "setweight(to_tsvector('english', coalesce(intake ->> 'text', '') || ' ' || "
    "coalesce(intake #>> '{ticket_data,summary}', '')), 'B') || "
    "setweight(to_tsvector('english', coalesce(resolution_summary, '')), 'A'))) "
    "WHERE status = 'resolved'"
)
PG_DROP_INDEX = "DROP INDEX IF EXISTS ix_sessions_search"


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(SQLITE_CREATE_FTS)
        op.execute("DELETE FROM sessions_fts")
        op.execute(SQLITE_BACKFILL)
    elif dialect == "postgresql":
        op.execute(PG_CREATE_INDEX)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(SQLITE_DROP_FTS)
    elif dialect == "postgresql":
        op.execute(PG_DROP_INDEX)
