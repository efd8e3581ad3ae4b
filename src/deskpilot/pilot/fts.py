"""Full-text structures for similar-session search (FP-021) that the ORM does not describe.

SQLite: an FTS5 table `sessions_fts` whose rows the Pilot service writes when a session is resolved (that is
when it becomes searchable). PostgreSQL: a partial GIN index over a weighted tsvector of the resolved sessions'
own columns. Migration 0003 repeats this SQL verbatim; `PilotSession`'s table events build the same structures
for databases made with `create_all`.

The searchable text of a session is its problem summary, its intake text (the engineer's description and the
linked ticket's summary; pasted log output is left out) and its resolution summary.
"""

from __future__ import annotations

from collections.abc import Mapping

FTS_TABLE = "sessions_fts"
SEARCH_INDEX = "ix_sessions_search"

# UNINDEXED columns are stored, not tokenised; porter folds "prompts"/"prompting" onto one term.
SQLITE_CREATE_FTS = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS sessions_fts USING fts5("
    "session_id UNINDEXED, account_id UNINDEXED, summary, intake, resolution, tokenize = 'porter unicode61')"
)
SQLITE_DROP_FTS = "DROP TABLE IF EXISTS sessions_fts"

# The query in similar.py repeats this expression (and the index's predicate) verbatim so that the planner
# can use the index. Summary and resolution weigh A, the engineer's own words B.
PG_SEARCH_VECTOR = (
    "setweight(to_tsvector('english', coalesce(problem_summary, '')), 'A') || "
    "setweight(to_tsvector('english', coalesce(intake ->> 'text', '') || ' ' || "
    "coalesce(intake #>> '{ticket_data,summary}', '')), 'B') || "
    "setweight(to_tsvector('english', coalesce(resolution_summary, '')), 'A')"
)
PG_SEARCH_PREDICATE = "status = 'resolved'"
PG_CREATE_INDEX = (
    f"CREATE INDEX IF NOT EXISTS {SEARCH_INDEX} ON sessions USING gin (({PG_SEARCH_VECTOR})) "
    f"WHERE {PG_SEARCH_PREDICATE}"
)
PG_DROP_INDEX = f"DROP INDEX IF EXISTS {SEARCH_INDEX}"


def is_search_structure(name: str | None, type_: str) -> bool:
    """True for the FTS5 table (and its shadow tables) and the GIN index, which no model describes."""
    if name is None:
        return False
    if type_ == "table":
        return name == FTS_TABLE or name.startswith(FTS_TABLE + "_")
    return type_ == "index" and name == SEARCH_INDEX


def autogenerate_include_name(name: str | None, type_: str, parent_names: Mapping[str, str | None]) -> bool:
    """Alembic `include_name` hook for the session search structures (knowledge.fts's hook calls this one)."""
    return not is_search_structure(name, type_)
