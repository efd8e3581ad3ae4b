"""SQLite steps (`storage.sqlite`): on the event loop when safe, else in the connection's thread; never a deadlock."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from deskpilot.identity.models import Account
from deskpilot.storage import Database, migrations
from deskpilot.storage.sqlite import OneHopConnection


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'steps.db'}"
    await asyncio.to_thread(migrations.upgrade, url)
    database = Database(url)
    yield database
    await database.dispose()


@pytest.fixture
def thread_steps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the functions that went to a connection's thread."""
    steps: list[str] = []
    original = OneHopConnection._execute

    async def counting(self: OneHopConnection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        steps.append(getattr(getattr(fn, "func", fn), "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(OneHopConnection, "_execute", counting)
    return steps


async def _add_account(db: Database, name: str) -> None:
    async with db.unscoped_session() as session:
        session.add(Account(name=name, slug=f"{name.lower()}-{uuid.uuid4().hex[:6]}"))
        await session.commit()


async def _names(db: Database) -> list[str]:
    async with db.unscoped_session() as session:
        return sorted(await session.scalars(select(Account.name)))


async def test_with_no_other_transaction_open_statements_run_on_the_loop(db: Database, thread_steps: list[str]) -> None:
    await _names(db)  # the pool's connection exists now (opening it is a thread step)
    thread_steps.clear()
    await _add_account(db, "Acme")
    assert await _names(db) == ["Acme"]
    assert thread_steps == []


async def test_while_another_connection_holds_a_transaction_statements_go_to_the_thread(
    db: Database, thread_steps: list[str]
) -> None:
    async with db.unscoped_session() as holder:
        holder.add(Account(name="Held", slug="held"))
        await holder.flush()  # a write transaction is open on the holder's connection
        thread_steps.clear()
        # Another connection reads (WAL: readers never wait) in its thread, since the holder is in a transaction.
        assert await _names(db) == []
        assert thread_steps
        await holder.commit()
    assert await _names(db) == ["Held"]


async def test_a_lock_held_by_another_process_sends_the_write_to_the_thread_which_waits_for_it(
    db: Database, thread_steps: list[str], tmp_path: Path
) -> None:
    await _names(db)
    other = sqlite3.connect(tmp_path / "steps.db", check_same_thread=False)  # stands for another process
    other.execute("BEGIN IMMEDIATE")
    thread_steps.clear()
    write = asyncio.create_task(_add_account(db, "Later"))
    await asyncio.sleep(0.2)  # the event loop is not blocked while the write waits in its thread
    assert not write.done()
    assert thread_steps  # tried on the loop for a few ms, then handed to the thread
    other.rollback()
    other.close()
    await asyncio.wait_for(write, timeout=10)
    assert await _names(db) == ["Later"]
