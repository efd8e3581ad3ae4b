"""SQLite connections go back to the pool clean, without a rollback round trip after a commit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from deskpilot.storage import Database


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
