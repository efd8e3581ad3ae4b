"""Revision 0002 and the create_all hooks build the full-text structures; autogenerate leaves them alone."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from types import ModuleType

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from deskpilot.all_models import Base, autogenerate_include_name
from deskpilot.knowledge import fts
from deskpilot.knowledge import service as knowledge
from deskpilot.knowledge.models import FlowStatus
from deskpilot.knowledge.schemas import parse_flow_document
from deskpilot.storage import Database, migrations
from tests.knowledge.conftest import Account
from tests.knowledge.flows import flow_doc

MIGRATION = Path(__file__).resolve().parents[2] / "migrations" / "versions" / "2026_11_25_knowledge_search.py"


def _migration_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("knowledge_search_revision", MIGRATION)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _structures(db: Database) -> set[str]:
    def read(conn: object) -> set[str]:
        insp = inspect(conn)
        names = set(insp.get_table_names())
        if "flows" in names:
            names |= {i["name"] for i in insp.get_indexes("flows") if i["name"]}
        return {n for n in names if fts.is_search_structure(n, "table") or fts.is_search_structure(n, "index")}

    async with db.engine.connect() as conn:
        return await conn.run_sync(read)


async def _diff(db: Database, *, filtered: bool) -> list[object]:
    opts: dict[str, object] = {"compare_type": True, "compare_server_default": True}
    if filtered:
        opts["include_name"] = autogenerate_include_name

    def compare(conn: object) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(conn, opts=opts), Base.metadata))  # type: ignore[arg-type]

    async with db.engine.connect() as conn:
        return await conn.run_sync(compare)


def test_revision_repeats_the_search_sql() -> None:
    revision = _migration_module()
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
