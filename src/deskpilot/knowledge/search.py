"""Full-text search over flows, one query per dialect: SQLite FTS5 (bm25) and PostgreSQL (ts_rank)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Float, Uuid, column, delete, func, insert, literal_column, or_, select, table
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnClause, ColumnElement

from deskpilot.knowledge import fts
from deskpilot.knowledge.matching import Candidate
from deskpilot.knowledge.models import Flow, FlowStatus

_FTS = table(
    fts.FTS_TABLE,
    column("flow_id", Uuid()),
    column("account_id", Uuid()),
    column("name"),
    column("keywords"),
    column("body"),
)
# bm25 weights per FTS5 column, in declaration order: the two ids are not searched; a hit in the name
# counts four times one in the body, tags and symptoms twice.
_BM25_WEIGHTS = (0.0, 0.0, 4.0, 2.0, 1.0)


# What matching scores a flow by (a whole Flow row carries its definition, which the ORM would parse for every
# candidate of every session start).
_CANDIDATE_COLUMNS = (
    Flow.id, Flow.name, Flow.problem_domain, Flow.search_keywords, Flow.search_body, Flow.matched_count,
    Flow.resolved_count, Flow.last_matched_at,
)


def _candidate(row: Sequence[Any], rank: float) -> Candidate:
    flow_id, name, domain, keywords, body, matched, resolved, last_matched = row[: len(_CANDIDATE_COLUMNS)]
    return Candidate(flow_id=flow_id, name=name, problem_domain=domain, key_text=f"{name}\n{keywords}",
                     body_text=body, rank=rank, matched_count=matched, resolved_count=resolved,
                     last_matched_at=last_matched)


def dialect_of(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


async def index_flow(session: AsyncSession, flow: Flow) -> None:
    """Bring the search index up to date with `flow`'s searchable columns (after a flush)."""
    if dialect_of(session) != "sqlite":
        return  # PostgreSQL indexes an expression over the flow's own columns.
    await session.execute(delete(_FTS).where(_FTS.c.flow_id == flow.id))
    await session.execute(
        insert(_FTS).values(
            flow_id=flow.id, account_id=flow.account_id, name=flow.name,
            keywords=flow.search_keywords, body=flow.search_body,
        )
    )


async def search_flows(
    session: AsyncSession,
    *,
    account_id: uuid.UUID,
    words: Sequence[str],
    statuses: Sequence[FlowStatus] = (FlowStatus.APPROVED,),
    team_id: uuid.UUID | None = None,
    limit: int = 20,
) -> list[Candidate]:
    """Flows whose text contains any of `words` (already cleaned by matching.query_words), best first."""
    if not words:
        return []
    filters: list[ColumnElement[bool]] = [Flow.account_id == account_id, Flow.status.in_(list(statuses))]
    if team_id is not None:
        filters.append(or_(Flow.team_id.is_(None), Flow.team_id == team_id))
    if dialect_of(session) == "sqlite":
        return await _search_sqlite(session, account_id, words, filters, limit)
    return await _search_postgresql(session, words, filters, limit)


async def _search_sqlite(
    session: AsyncSession, account_id: uuid.UUID, words: Sequence[str], filters: list[ColumnElement[bool]],
    limit: int,
) -> list[Candidate]:
    # Words are letters and digits only, so quoting each one is enough to keep FTS5 syntax out.
    match = " OR ".join(f'"{w}"' for w in words)
    fts_table: ColumnClause[Any] = literal_column(fts.FTS_TABLE)
    rank = func.bm25(fts_table, *_BM25_WEIGHTS, type_=Float)
    stmt = (
        select(*_CANDIDATE_COLUMNS, rank.label("rank"))
        .select_from(_FTS)
        .join(Flow, Flow.id == _FTS.c.flow_id)
        .where(fts_table.op("MATCH")(match), _FTS.c.account_id == account_id, *filters)
        .order_by(rank, Flow.name)
        .limit(limit)
    )
    rows = (await session.execute(stmt)).all()
    # bm25 is negative, more negative for better matches.
    return [_candidate(row, max(0.0, -float(row[-1]))) for row in rows]


async def _search_postgresql(
    session: AsyncSession, words: Sequence[str], filters: list[ColumnElement[bool]], limit: int
) -> list[Candidate]:
    vector: ColumnClause[Any] = literal_column(f"({fts.PG_SEARCH_VECTOR})")
    query = func.to_tsquery(literal_column("'english'"), " | ".join(words))
    rank = func.ts_rank(vector, query, type_=Float)
    stmt = (
        select(*_CANDIDATE_COLUMNS, rank.label("rank"))
        .where(vector.op("@@")(query), *filters)
        .order_by(rank.desc(), Flow.name)
        .limit(limit)
    )
    rows = (await session.execute(stmt)).all()
    return [_candidate(row, max(0.0, float(row[-1]))) for row in rows]
