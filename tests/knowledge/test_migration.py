"""Revision 0002 and the create_all hooks build the full-text structures; autogenerate leaves them alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from deskpilot.all_models import Base, autogenerate_include_name
from deskpilot.knowledge import fts
from deskpilot.knowledge import service as knowledge
from deskpilot.knowledge.models import FlowStatus
from deskpilot.knowledge.schemas import parse_flow_document
from deskpilot.storage import Database, migrations
from tests.knowledge.conftest import Account
from tests.knowledge.flows import flow_doc
from tests.migration_support import load_revision, search_structures


async def _structures(db: Database) -> set[str]:
    return await search_structures(db, "flows", fts.is_search_structure)


async def _diff(db: Database, *, filtered: bool) -> list[object]:
    opts: dict[str, object] = {"compare_type": True, "compare_server_default": True}
    if filtered:
        opts["include_name"] = autogenerate_include_name

    def compare(conn: object) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(conn, opts=opts), Base.metadata))  # type: ignore[arg-type]

    async with db.engine.connect() as conn:
        return await conn.run_sync(compare)


def test_revision_repeats_the_search_sql() -> None:
    revision = load_revision("2026_11_25_knowledge_search.py")
    assert (revision.revision, revision.down_revision) == ("0002", "0001")
    assert revision.SQLITE_CREATE_FTS == fts.SQLITE_CREATE_FTS
    assert revision.SQLITE_DROP_FTS == fts.SQLITE_DROP_FTS
    assert revision.PG_CREATE_INDEX == fts.PG_CREATE_INDEX
    assert revision.PG_DROP_INDEX == fts.PG_DROP_INDEX


async def test_down_and_up_again_rebuilds_and_backfills(db: Database, database_url: str, account: Account) -> None:
    expected = {fts.FTS_TABLE} if db.dialect == "sqlite" else {fts.SEARCH_INDEX}
    assert expected <= await _structures(db)
    async with db.session(account.id) as session:
        await knowledge.create_flow(session, account_id=account.id, document=parse_flow_document(flow_doc()),
                                    status=FlowStatus.APPROVED)
        await session.commit()
    await db.dispose()
    await asyncio.to_thread(migrations.downgrade, database_url, "0001")
    assert await _structures(db) == set()
    await asyncio.to_thread(migrations.upgrade, database_url)
    assert expected <= await _structures(db)
    async with db.session(account.id) as session:
        matches = await knowledge.find_matches(session, account.id, "outlook password", "m365")
    assert [m.name for m in matches] == ["Outlook keeps asking for a password"]


async def test_autogenerate_ignores_the_search_structures(db: Database) -> None:
    assert await _diff(db, filtered=True) == []
    unfiltered = " ".join(map(str, await _diff(db, filtered=False)))
    assert fts.FTS_TABLE in unfiltered or fts.SEARCH_INDEX in unfiltered


async def test_create_all_alone_builds_and_drops_them(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'plain.db'}")
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        assert await _structures(db) >= {fts.FTS_TABLE}
        async with db.engine.begin() as conn:
            await conn.run_sync(Base.metadata.drop_all)
        assert await _structures(db) == set()
    finally:
        await db.dispose()


def test_filter_names() -> None:
    assert not fts.autogenerate_include_name("flows_fts_data", "table", {})
    assert not fts.autogenerate_include_name("ix_flows_search", "index", {"table_name": "flows"})
    assert fts.autogenerate_include_name("flows", "table", {})
    assert fts.autogenerate_include_name("ix_flows_team_id", "index", {})
    assert fts.autogenerate_include_name(None, "column", {})
