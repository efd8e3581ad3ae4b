"""The Alembic migrations and the ORM models describe the same schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from deskpilot.all_models import Base, autogenerate_include_name
from deskpilot.storage import Database, migrations


async def _diff(url: str) -> list[object]:
    db = Database(url)
    try:
        async with db.engine.connect() as conn:

            def compare(sync_conn: object) -> list[object]:
                ctx = MigrationContext.configure(
                    sync_conn,  # type: ignore[arg-type]
                    opts={
                        "compare_type": True,
                        "compare_server_default": True,
                        "include_name": autogenerate_include_name,
                    },
                )
                return list(compare_metadata(ctx, Base.metadata))

            return await conn.run_sync(compare)
    finally:
        await db.dispose()


async def _tables(url: str) -> set[str]:
    db = Database(url)
    try:
        async with db.engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await db.dispose()


async def test_migrations_match_models(database_url: str) -> None:
    await asyncio.to_thread(migrations.upgrade, database_url)
    assert await _diff(database_url) == []
    db = Database(database_url)
    try:
        async with db.engine.connect() as conn:
            assert await migrations.current_revision(conn) == migrations.head_revision(database_url)
    finally:
        await db.dispose()


async def test_downgrade_to_base_and_up_again(database_url: str) -> None:
    await asyncio.to_thread(migrations.upgrade, database_url)
    await asyncio.to_thread(migrations.downgrade, database_url, "base")
    assert await _tables(database_url) <= {"alembic_version"}
    await asyncio.to_thread(migrations.upgrade, database_url)
    assert set(Base.metadata.tables) <= await _tables(database_url)
