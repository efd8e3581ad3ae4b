"""Similar resolved sessions (FP-021): full-text search per dialect and a pure 0..1 score.

The source matched sessions by embedding; deskpilot has no vector store yet, so this is full-text search over
the structures of `deskpilot.pilot.fts` (SQLite FTS5, PostgreSQL GIN); embeddings can replace the candidate
query later without changing the service's shapes. A session becomes searchable when it is resolved.

Both the search and the indexing are best effort: a failure is logged and the session goes on without them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Float, Uuid, column, delete, func, insert, literal_column, select, table
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnClause, ColumnElement

from deskpilot.knowledge import matching
from deskpilot.knowledge.models import ProblemDomain
from deskpilot.pilot import fts
from deskpilot.pilot.lifecycle import SessionStatus
from deskpilot.pilot.models import PilotSession
from deskpilot.pilot.schemas import SimilarSession

logger = logging.getLogger(__name__)

MAX_SIMILAR: Final = 3
CANDIDATES: Final = 20
MIN_SCORE: Final = 0.35
W_TEXT: Final = 0.85
W_DOMAIN: Final = 0.15
RANK_FLOOR: Final = 0.8
COVERAGE_FLOOR: Final = 2
COVERAGE_CAP: Final = 8
# A prefix match (at least matching.PREFIX_MIN letters) counts matching.PREFIX_FACTOR, as in flow matching.
GUIDED: Final = "guided"

_FTS = table(
    fts.FTS_TABLE,
    column("session_id", Uuid()),
    column("account_id", Uuid()),
    column("summary"),
    column("intake"),
    column("resolution"),
)
# bm25 weights per FTS5 column, in declaration order: the ids are not searched; the problem and resolution
# summaries count twice the engineer's own description (as the A/B weights do on PostgreSQL).
_BM25_WEIGHTS = (0.0, 0.0, 2.0, 1.0, 2.0)


# --- pure -----------------------------------------------------------------------------------


def intake_search_text(intake: Mapping[str, Any]) -> str:
    """A session's searchable intake: the engineer's description and the linked ticket's summary (no log)."""
    ticket = intake.get("ticket_data")
    ticket_summary = ticket.get("summary") if isinstance(ticket, Mapping) else None
    parts = [intake.get("text"), ticket_summary]
    return "\n".join(p.strip() for p in parts if isinstance(p, str) and p.strip())


def query_text(intake: Mapping[str, Any], problem_summary: str | None) -> str:
    """What a new session looks for: its intake text, then its problem summary (helps when only a log was given)."""
    return "\n".join(p for p in (intake_search_text(intake), (problem_summary or "").strip()) if p)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A resolved session the full-text search returned."""

    session_id: uuid.UUID
    problem_summary: str | None
    problem_domain: str | None
    intake_text: str
    resolution_summary: str | None
    resolved_at: datetime | None
    rank: float  # the engine's relevance, ≥ 0, higher is better; comparable only within one search


def term_coverage(words: Sequence[str], text: str) -> float:
    """Share of the query's terms the text speaks about, 0..1 (see `score_candidate`)."""
    if not words:
        return 0.0
    vocabulary = matching.vocabulary(text)
    found = sum(vocabulary.found(matching.stem(w)) for w in words)
    return min(1.0, found / min(max(len(words), COVERAGE_FLOOR), COVERAGE_CAP))


def _domain(value: str | None) -> ProblemDomain | None:
    try:
        return ProblemDomain(value) if value else None
    except ValueError:
        return None


def score_candidate(candidate: Candidate, words: Sequence[str], domain: str | None, best_rank: float) -> float:
    """How much a resolved session looks like the new one, 0..1 (3 places):

        score = 0.85 · text + 0.15 · domain
        text     = coverage · (0.8 + 0.2 · rank_share)
          coverage   = Σ found(term) / clamp(#query terms, 2, 8), capped at 1, over the resolved session's
                       problem summary, intake text and resolution summary. Query terms are the new session's
                       lower-cased words without stop words, lightly stemmed (knowledge.matching's rules);
                       a term found counts 1, one found only as a prefix either way ("lock" ~ "lockout",
                       4+ letters) counts 0.5. The floor of 2 keeps a one-word intake from looking certain,
                       the cap of 8 keeps a long, chatty intake from diluting a good match.
          rank_share = the engine's relevance (FTS5 bm25 negated, PostgreSQL ts_rank) over the best
                       candidate's; it only orders candidates that cover the query equally well.
        domain   = 1 same problem domain, 0.5 related or unknown ("other") on either side, 0 different
    """
    text = " \n".join(t for t in (candidate.problem_summary, candidate.intake_text, candidate.resolution_summary) if t)
    cov = term_coverage(words, text)
    share = matching.rank_share(candidate.rank, best_rank)
    text_score = cov * (RANK_FLOOR + (1 - RANK_FLOOR) * share)
    agreement = matching.domain_agreement(_domain(domain), _domain(candidate.problem_domain) or ProblemDomain.OTHER)
    return round(max(0.0, min(1.0, W_TEXT * text_score + W_DOMAIN * agreement)), 3)


def rank_similar(
    candidates: Sequence[Candidate],
    text: str,
    domain: str | None,
    *,
    limit: int = MAX_SIMILAR,
    min_score: float = MIN_SCORE,
) -> list[SimilarSession]:
    """Score every candidate; the best `limit` at or above `min_score`, highest first, newer first on ties."""
    words = matching.query_words(text)
    if not words:
        return []
    best = max((c.rank for c in candidates), default=0.0)
    scored = [(score_candidate(c, words, domain, best), c) for c in candidates]
    kept = [(s, c) for s, c in scored if s >= min_score]
    kept.sort(key=lambda sc: (-sc[0], -(sc[1].resolved_at.timestamp() if sc[1].resolved_at else 0.0),
                              str(sc[1].session_id)))
    return [
        SimilarSession(id=c.session_id, problem_summary=c.problem_summary, resolution_summary=c.resolution_summary,
                       resolved_at=c.resolved_at, score=s)
        for s, c in kept[:limit]
    ]


# --- database -------------------------------------------------------------------------------


def dialect_of(db: AsyncSession) -> str:
    return db.get_bind().dialect.name


async def index_resolved(db: AsyncSession, session: PilotSession) -> None:
    """Make a resolved session searchable (SQLite: its FTS5 row; PostgreSQL indexes the row itself).

    Runs inside the resolve's transaction; a failure (say, a database not migrated to 0003) is logged and the
    resolve goes on: a failed SQLite statement undoes only itself, and nothing is flushed from here.
    """
    if dialect_of(db) != "sqlite":
        return
    try:
        with db.no_autoflush:
            await db.execute(delete(_FTS).where(_FTS.c.session_id == session.id))
            await db.execute(insert(_FTS).values(
                session_id=session.id, account_id=session.account_id, summary=session.problem_summary or "",
                intake=intake_search_text(session.intake), resolution=session.resolution_summary or "",
            ))
    except SQLAlchemyError:
        logger.warning("session %s not indexed for similar-session search", session.id, exc_info=True)


async def find_similar(
    db: AsyncSession,
    *,
    account_id: uuid.UUID,
    session_id: uuid.UUID,
    intake: Mapping[str, Any],
    problem_summary: str | None,
    problem_domain: str | None,
    limit: int = MAX_SIMILAR,
) -> list[SimilarSession]:
    """Up to `limit` resolved guided sessions of the account that look like this one (never itself), best first.

    Never raises for a failed search: it is logged and the answer is empty. On PostgreSQL the query runs in a
    SAVEPOINT so that a failure leaves the caller's transaction usable.
    """
    text = query_text(intake, problem_summary)
    words = matching.query_words(text)
    if not words:
        return []
    try:
        if dialect_of(db) == "sqlite":
            candidates = await _candidates_sqlite(db, account_id, session_id, words)
        else:
            async with db.begin_nested():
                candidates = await _candidates_postgresql(db, account_id, session_id, words)
        return rank_similar(candidates, text, problem_domain, limit=limit)
    except Exception:
        logger.warning("similar-session search for session %s failed", session_id, exc_info=True)
        return []


def _columns() -> list[ColumnElement[Any]]:
    return [
        PilotSession.id, PilotSession.problem_summary, PilotSession.problem_domain,
        PilotSession.intake["text"].as_string(), PilotSession.intake[("ticket_data", "summary")].as_string(),
        PilotSession.resolution_summary, PilotSession.resolved_at,
    ]


def _filters(account_id: uuid.UUID, session_id: uuid.UUID) -> list[ColumnElement[bool]]:
    return [
        PilotSession.account_id == account_id, PilotSession.kind == GUIDED, PilotSession.id != session_id,
        # A literal, not a parameter: PostgreSQL proves the partial index's predicate from it.
        PilotSession.status == literal_column(f"'{SessionStatus.RESOLVED.value}'"),
    ]


def _candidate(row: Any, rank: float) -> Candidate:
    return Candidate(
        session_id=row[0], problem_summary=row[1], problem_domain=row[2],
        intake_text=intake_search_text({"text": row[3], "ticket_data": {"summary": row[4]}}),
        resolution_summary=row[5], resolved_at=row[6], rank=rank,
    )


async def _candidates_sqlite(
    db: AsyncSession, account_id: uuid.UUID, session_id: uuid.UUID, words: Sequence[str]
) -> list[Candidate]:
    # Words are letters and digits only, so quoting each one is enough to keep FTS5 syntax out.
    match = " OR ".join(f'"{w}"' for w in words)
    fts_table: ColumnClause[Any] = literal_column(fts.FTS_TABLE)
    rank = func.bm25(fts_table, *_BM25_WEIGHTS, type_=Float)
    stmt = (
        select(*_columns(), rank.label("rank"))
        .select_from(_FTS)
        .join(PilotSession, PilotSession.id == _FTS.c.session_id)
        .where(fts_table.op("MATCH")(match), _FTS.c.account_id == account_id, *_filters(account_id, session_id))
        .order_by(rank, PilotSession.resolved_at.desc())
        .limit(CANDIDATES)
    )
    # bm25 is negative, more negative for better matches.
    return [_candidate(row, max(0.0, -float(row[7]))) for row in (await db.execute(stmt)).all()]


async def _candidates_postgresql(
    db: AsyncSession, account_id: uuid.UUID, session_id: uuid.UUID, words: Sequence[str]
) -> list[Candidate]:
    vector: ColumnClause[Any] = literal_column(f"({fts.PG_SEARCH_VECTOR})")
    query = func.to_tsquery(literal_column("'english'"), " | ".join(words))
    rank = func.ts_rank(vector, query, type_=Float)
    stmt = (
        select(*_columns(), rank.label("rank"))
        .where(vector.op("@@")(query), *_filters(account_id, session_id))
        .order_by(rank.desc(), PilotSession.resolved_at.desc())
        .limit(CANDIDATES)
    )
    return [_candidate(row, max(0.0, float(row[7]))) for row in (await db.execute(stmt)).all()]
