"""Similar resolved sessions (FP-021): full-text search on SQLite and PostgreSQL, scoring, wiring, migration 0003."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect

from deskpilot.all_models import Base, autogenerate_include_name
from deskpilot.pilot import fts, service, similar
from deskpilot.pilot.schemas import ResolveRequest, SessionCreate
from deskpilot.storage import Database, migrations
from tests.migration_support import load_revision, search_structures
from tests.pilot.conftest import Desk, classification, make_desk, question, scripted

NEW = "Outlook keeps asking for the password after the mailbox migration"
NEW_SUMMARY = "Outlook password prompts after mailbox migration"


@pytest.fixture
def database_url(migrated_database_url: str) -> str:
    return migrated_database_url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    yield database
    await database.dispose()


@pytest.fixture
async def acme(db: Database) -> AsyncIterator[Desk]:
    desk = await make_desk(db, "Acme IT")
    yield desk
    await desk.pubsub.close()


@pytest.fixture
async def globex(db: Database) -> AsyncIterator[Desk]:
    desk = await make_desk(db, "Globex Support")
    yield desk
    await desk.pubsub.close()


async def start(desk: Desk, text: str, summary: str, domain: str = "m365") -> uuid.UUID:
    llm, _, _ = scripted(classification(summary, domain), question())
    started = await desk.call(service.start_session, desk.deps(llm), desk.engineer, SessionCreate(text=text))
    return started.session_id


async def resolved(desk: Desk, text: str, summary: str, resolution: str, domain: str = "m365") -> uuid.UUID:
    session_id = await start(desk, text, summary, domain)
    llm, _, _ = scripted()
    await desk.call(service.resolve, desk.deps(llm), desk.engineer, session_id,
                    ResolveRequest(resolution_summary=resolution))
    return session_id


async def _structures(db: Database) -> set[str]:
    return await search_structures(db, "sessions", fts.is_search_structure)


# --- pure -----------------------------------------------------------------------------------


def test_fp021_revision_repeats_the_search_sql() -> None:
    revision = load_revision("2026_11_25_session_search.py")
    assert (revision.revision, revision.down_revision) == ("0003", "0002")
    assert revision.SQLITE_CREATE_FTS == fts.SQLITE_CREATE_FTS
    assert revision.SQLITE_DROP_FTS == fts.SQLITE_DROP_FTS
    assert revision.PG_CREATE_INDEX == fts.PG_CREATE_INDEX
    assert revision.PG_DROP_INDEX == fts.PG_DROP_INDEX


def test_fp021_autogenerate_filter_leaves_the_session_structures_out() -> None:
    for hook in (fts.autogenerate_include_name, autogenerate_include_name):
        assert not hook("sessions_fts", "table", {})
        assert not hook("sessions_fts_idx", "table", {})
        assert not hook("ix_sessions_search", "index", {"table_name": "sessions"})
        assert hook("sessions", "table", {})
        assert hook("ix_sessions_account_status", "index", {"table_name": "sessions"})
        assert hook(None, "column", {})
    assert not autogenerate_include_name("flows_fts", "table", {})


def test_fp021_intake_search_text_is_description_and_ticket_summary() -> None:
    intake = {"text": " VPN drops ", "log_content": "E42 boiler", "ticket_data": {"summary": "VPN unstable"}}
    assert similar.intake_search_text(intake) == "VPN drops\nVPN unstable"
    assert similar.intake_search_text({"text": "", "log_content": "only a log"}) == ""
    assert similar.query_text({"text": "", "log_content": "x"}, "Printer offline") == "Printer offline"


def _candidate(summary: str, resolution: str = "", intake: str = "", domain: str | None = "m365",
               rank: float = 1.0, days_ago: int = 1) -> similar.Candidate:
    return similar.Candidate(
        session_id=uuid.uuid4(), problem_summary=summary, problem_domain=domain, intake_text=intake,
        resolution_summary=resolution, resolved_at=datetime(2026, 11, 1, tzinfo=UTC) - timedelta(days=days_ago),
        rank=rank,
    )


def test_fp021_score_is_bounded_and_orders_by_text_and_domain() -> None:
    words = ["outlook", "password", "mailbox", "migration"]
    full = _candidate("Outlook password prompt after mailbox migration")
    half = _candidate("Outlook password prompt")
    other_domain = _candidate("Outlook password prompt", domain="printing")
    prefix = _candidate("Outlook passwords", intake="migrated mailboxes")
    nothing = _candidate("Printer offline")
    scores = {name: similar.score_candidate(c, words, "m365", best_rank=1.0)
              for name, c in [("full", full), ("half", half), ("other", other_domain), ("prefix", prefix),
                              ("nothing", nothing)]}
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    assert scores["full"] == 1.0  # every term, same domain, best rank
    assert scores["full"] > scores["prefix"] > scores["half"] > scores["other"] > scores["nothing"]
    assert scores["nothing"] == 0.15  # no text in common: only the domain agreement remains
    # The engine's rank only orders candidates that cover the query equally well.
    assert similar.score_candidate(full, words, "m365", best_rank=4.0) < scores["full"]
    assert similar.score_candidate(full, words, "m365", best_rank=4.0) > scores["half"]


def test_fp021_rank_similar_keeps_the_best_three_above_the_floor() -> None:
    best = _candidate("Outlook password prompt after mailbox migration")
    newer = _candidate("Outlook password prompt", days_ago=1)
    older = _candidate("Outlook password prompt", days_ago=30)
    fourth = _candidate("Outlook password", domain="email")
    weak = _candidate("Mailbox full")
    ranked = similar.rank_similar([weak, older, fourth, newer, best], NEW, "m365")
    assert [r.id for r in ranked] == [best.session_id, newer.session_id, older.session_id]
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)
    assert ranked[0].problem_summary == best.problem_summary
    assert ranked[0].resolved_at == best.resolved_at
    assert similar.rank_similar([weak], NEW, "m365") == []  # one shared word stays under MIN_SCORE
    assert similar.rank_similar([best], "the and of", "m365") == []  # nothing to search for


# --- on SQLite and PostgreSQL -----------------------------------------------------------------


async def test_fp021_resolved_sessions_of_the_account_are_found_best_first(acme: Desk, globex: Desk) -> None:
    best = await resolved(acme, "Outlook asks for the password again and again after the mailbox migration",
                          "Outlook password prompts after migration", "Recreated the Outlook profile")
    prompt = await resolved(acme, "Outlook password prompt on one laptop", "Outlook password prompt",
                            "Cleared the cached credentials")
    migration = await resolved(acme, "Mailbox migration stuck, Outlook shows the old mailbox",
                               "Mailbox migration stalled", "Restarted the migration batch")
    crash = await resolved(acme, "Outlook crashes when opening attachments", "Outlook crash on attachments",
                           "Repaired Office", domain="endpoint")
    printer = await resolved(acme, "Printer offline in accounting", "Printer offline", "Restarted the spooler",
                             domain="printing")
    unresolved = await start(acme, NEW, NEW_SUMMARY)
    elsewhere = await resolved(globex, NEW, NEW_SUMMARY, "Recreated the Outlook profile")

    llm, _, _ = scripted(classification(NEW_SUMMARY, "m365"), question())
    started = await acme.call(service.start_session, acme.deps(llm), acme.engineer, SessionCreate(text=NEW))
    found = started.similar_sessions
    ids = [s.id for s in found]
    assert len(found) == 3  # at most 3, although four resolved sessions share words with it
    assert ids[0] == best
    assert set(ids) <= {best, prompt, migration, crash}
    assert {unresolved, elsewhere, printer, started.session_id}.isdisjoint(ids)
    assert [s.score for s in found] == sorted((s.score for s in found), reverse=True)
    assert all(0.0 < s.score <= 1.0 for s in found)
    assert found[0].problem_summary == "Outlook password prompts after migration"
    assert found[0].resolution_summary == "Recreated the Outlook profile"
    assert found[0].resolved_at is not None

    # The detail of the open session lists the same sessions, searched on read.
    detail = await acme.call(service.get_session, acme.engineer, started.session_id)
    assert detail.similar_sessions == found
    # The other account sees only its own resolved session, never Acme's.
    llm, _, _ = scripted(classification(NEW_SUMMARY, "m365"), question())
    theirs = await globex.call(service.start_session, globex.deps(llm), globex.engineer, SessionCreate(text=NEW))
    assert [s.id for s in theirs.similar_sessions] == [elsewhere]


async def test_fp021_a_session_is_searchable_once_resolved_and_never_lists_itself(acme: Desk) -> None:
    first = await start(acme, NEW, NEW_SUMMARY)
    llm, _, _ = scripted(classification(NEW_SUMMARY, "m365"), question())
    second = await acme.call(service.start_session, acme.deps(llm), acme.engineer, SessionCreate(text=NEW))
    assert second.similar_sessions == []  # the first one is still active
    llm, _, _ = scripted()
    await acme.call(service.resolve, acme.deps(llm), acme.engineer, first,
                    ResolveRequest(resolution_summary="Recreated the Outlook profile"))
    detail = await acme.call(service.get_session, acme.engineer, second.session_id)
    assert [s.id for s in detail.similar_sessions] == [first]
    assert detail.similar_sessions[0].score > 0.9
    # A closed session lists none; and searching with its own text never returns it.
    closed = await acme.call(service.get_session, acme.engineer, first)
    assert closed.similar_sessions == []
    async with acme.session() as s:
        itself = await similar.find_similar(s, account_id=acme.account_id, session_id=first,
                                            intake={"text": NEW}, problem_summary=NEW_SUMMARY, problem_domain="m365")
    assert itself == []


async def test_fp021_search_failure_is_non_fatal(
    acme: Desk, db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await resolved(acme, NEW, NEW_SUMMARY, "Recreated the Outlook profile")
    if db.dialect == "sqlite":
        async with db.engine.begin() as conn:
            await conn.exec_driver_sql(fts.SQLITE_DROP_FTS)
    else:
        monkeypatch.setattr(fts, "PG_SEARCH_VECTOR", "to_tsvector('english', no_such_column)")
    caplog.set_level(logging.WARNING, logger="deskpilot.pilot.similar")
    llm, _, _ = scripted(classification(NEW_SUMMARY, "m365"), question())
    started = await acme.call(service.start_session, acme.deps(llm), acme.engineer, SessionCreate(text=NEW))
    assert started.similar_sessions == []
    assert started.first_step.step_type == "question"
    assert "similar-session search" in caplog.text
    detail = await acme.call(service.get_session, acme.engineer, started.session_id)
    assert detail.similar_sessions == []
    assert len(detail.steps) == 1
    # Resolving still works when the session cannot be indexed (SQLite: the FTS table is gone).
    llm, _, _ = scripted()
    closed = await acme.call(service.resolve, acme.deps(llm), acme.engineer, started.session_id,
                             ResolveRequest(resolution_summary="Recreated the Outlook profile"))
    assert closed.status == "resolved"
    assert (await acme.call(service.get_session, acme.engineer, started.session_id)).status == "resolved"


async def test_fp021_migration_0003_down_and_up_rebuilds_and_backfills(
    acme: Desk, db: Database, database_url: str
) -> None:
    expected = {fts.FTS_TABLE} if db.dialect == "sqlite" else {fts.SEARCH_INDEX}
    assert expected <= await _structures(db)
    old = await resolved(acme, NEW, NEW_SUMMARY, "Recreated the Outlook profile")
    await db.dispose()
    await asyncio.to_thread(migrations.downgrade, database_url, "0002")
    assert await _structures(db) == set()
    await asyncio.to_thread(migrations.upgrade, database_url)
    assert expected <= await _structures(db)
    async with acme.session() as s:
        found = await similar.find_similar(s, account_id=acme.account_id, session_id=uuid.uuid4(),
                                           intake={"text": NEW}, problem_summary=None, problem_domain="m365")
    assert [f.id for f in found] == [old]


async def test_fp021_create_all_alone_builds_and_drops_the_fts_table(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'plain.db'}")
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        assert await _structures(db) >= {fts.FTS_TABLE}
        async with db.engine.begin() as conn:
            await conn.run_sync(Base.metadata.drop_all)
        assert fts.FTS_TABLE not in await _structures_plain(db)
    finally:
        await db.dispose()


async def _structures_plain(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
