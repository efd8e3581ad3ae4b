"""SQLite connections go back to the pool clean, without a rollback round trip after a commit."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from deskpilot.storage import Database
from deskpilot.storage import engine as engine_module
from deskpilot.storage.engine import in_memory_sqlite


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'reset.db'}")
    async with database.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (x INTEGER)"))
    yield database
    await database.dispose()


async def _count(db: Database) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM t"))).scalar_one())


async def test_a_transaction_left_open_on_the_driver_is_rolled_back_on_return(db: Database) -> None:
    async with db.engine.connect() as conn:
        driver: Any = (await conn.get_raw_connection()).driver_connection
        await driver.execute("INSERT INTO t VALUES (1)")  # behind SQLAlchemy's back: it knows of no transaction
        assert driver.in_transaction
    assert not driver.in_transaction
    assert await _count(db) == 0


async def test_a_committed_connection_goes_back_without_a_rollback(db: Database) -> None:
    rollbacks: list[object] = []
    event.listen(db.engine.sync_engine, "rollback", rollbacks.append)
    async with db.engine.connect() as conn:
        driver: Any = (await conn.get_raw_connection()).driver_connection
        calls: list[str] = []
        original = driver.rollback

        async def rollback() -> None:
            calls.append("rollback")
            await original()

        driver.rollback = rollback
        await conn.execute(text("INSERT INTO t VALUES (1)"))
        await conn.commit()
    assert calls == []
    assert rollbacks == []
    assert await _count(db) == 1


async def test_background_checkpoints_keep_the_wal_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commits never checkpoint on the request's path (a raised threshold); the background task does."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'wal.db'}")
    ran: list[str] = []

    def counting(path: str) -> None:
        ran.append(path)
        real_checkpoint(path)

    real_checkpoint = engine_module._checkpoint
    monkeypatch.setattr(engine_module, "_checkpoint", counting)
    try:
        async with db.engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
            threshold = (await conn.exec_driver_sql("PRAGMA wal_autocheckpoint")).scalar()
        assert threshold == engine_module.BACKSTOP_CHECKPOINT_PAGES
        for _ in range(20):
            async with db.engine.begin() as conn:
                await conn.exec_driver_sql("INSERT INTO t (body) VALUES (?)", ("x" * 4000,))
        assert (tmp_path / "wal.db-wal").stat().st_size > 20 * 4000  # nothing checkpointed on the way
        async with db.checkpoints(interval_s=0.01):
            await asyncio.sleep(0.2)
        assert ran
        assert ran[0].endswith("wal.db")
        with sqlite3.connect(tmp_path / "wal.db") as direct:
            busy, log, checkpointed = direct.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert (busy, log) == (0, checkpointed)
    finally:
        await db.dispose()


async def _driver(conn: Any) -> Any:
    return (await conn.get_raw_connection()).driver_connection


async def test_a_file_database_hands_out_the_connection_returned_last(db: Database) -> None:
    async with db.engine.connect() as first, db.engine.connect() as second:
        first_driver, second_driver = await _driver(first), await _driver(second)
        assert first_driver is not second_driver
    # `first` went back before `second` (contexts exit in reverse): the warm one is `first`, returned last.
    async with db.engine.connect() as again:
        assert await _driver(again) is first_driver


async def test_an_in_memory_database_keeps_its_single_connection_pool() -> None:
    database = Database("sqlite+aiosqlite://")
    try:
        async with database.engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await database.dispose()


@pytest.mark.parametrize(
    ("url", "in_memory"),
    [
        ("sqlite+aiosqlite://", True),
        ("sqlite+aiosqlite:///:memory:", True),
        ("sqlite+aiosqlite:///file:shared?mode=memory&cache=shared&uri=true", True),
        ("sqlite+aiosqlite:///./deskpilot.db", False),
        ("postgresql+asyncpg://deskpilot@db/deskpilot", False),
    ],
)
def test_in_memory_sqlite_is_told_from_a_database_file_or_server(url: str, in_memory: bool) -> None:
    assert in_memory_sqlite(url) is in_memory
