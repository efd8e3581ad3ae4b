"""Full-text search structures the ORM does not describe: FTS5 on SQLite, a GIN expression index on PostgreSQL."""

from __future__ import annotations

from collections.abc import Mapping

FTS_TABLE = "flows_fts"
SEARCH_INDEX = "ix_flows_search"

# UNINDEXED columns are stored, not tokenised; porter folds "prompts"/"prompting" onto one term.
SQLITE_CREATE_FTS = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS flows_fts USING fts5("
    "flow_id UNINDEXED, account_id UNINDEXED, name, keywords, body, tokenize = 'porter unicode61')"
)
SQLITE_DROP_FTS = "DROP TABLE IF EXISTS flows_fts"

# The query in search.py repeats this expression verbatim so that the planner can use the index.
PG_SEARCH_VECTOR = (
    "setweight(to_tsvector('english', name), 'A') || "
    "setweight(to_tsvector('english', search_keywords), 'B') || "
    "setweight(to_tsvector('english', search_body), 'C')"
)
PG_CREATE_INDEX = f"CREATE INDEX IF NOT EXISTS {SEARCH_INDEX} ON flows USING gin (({PG_SEARCH_VECTOR}))"
PG_DROP_INDEX = f"DROP INDEX IF EXISTS {SEARCH_INDEX}"


def is_search_structure(name: str | None, type_: str) -> bool:
    """True for the FTS5 table (and its shadow tables) and the GIN index, which no model describes."""
    if name is None:
        return False
    if type_ == "table":
        return name == FTS_TABLE or name.startswith(FTS_TABLE + "_")
    return type_ == "index" and name == SEARCH_INDEX


def autogenerate_include_name(name: str | None, type_: str, parent_names: Mapping[str, str | None]) -> bool:
    """Alembic `include_name` hook: leave the search structures out of autogenerate comparisons."""
    return not is_search_structure(name, type_)
