"""Engine and session factory for SQLite (default) and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolResetState

from deskpilot.storage import sqlite
from deskpilot.storage.tenancy import ALL_ACCOUNTS, SCOPE_KEY


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    # WAL + NORMAL: one fsync per checkpoint rather than per commit, safe against corruption.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _sqlite_reset(dbapi_connection: Any, _record: ConnectionPoolEntry, state: PoolResetState) -> None:
    """Roll back on return to the pool only when SQLite says a transaction is open.

    The pool's default reset rolls back unconditionally: after every commit that is one more aiosqlite thread
    round trip (two per Pilot turn) for nothing. `in_transaction` is SQLite's own autocommit flag, read without
    a round trip, so a connection still goes back clean whatever left it dirty.
    """
    if state.transaction_was_reset or not state.asyncio_safe:
        return
    if dbapi_connection.driver_connection.in_transaction:
        dbapi_connection.rollback()


def make_engine(
    url: str, *, echo: bool = False, pool_size: int = 10, pool_options: Mapping[str, Any] | None = None
) -> AsyncEngine:
    """The engine; `pool_options` (`pool_size`, `max_overflow`, `pool_timeout`) override the pool of either dialect."""
    options = dict(pool_options or {})
    if url.startswith("sqlite"):
        own_reset = "pool_reset_on_return" not in options
        engine = create_async_engine(
            url, echo=echo, async_creator=sqlite.creator(url), **{"pool_reset_on_return": None, **options}
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        if own_reset:
            event.listen(engine.sync_engine, "reset", _sqlite_reset)
        return engine
    return create_async_engine(url, echo=echo, **{"pool_size": pool_size, "pool_pre_ping": True, **options})


class Database:
    """Owns the engine; hands out sessions bound to one account (or, explicitly, to all)."""

    def __init__(
        self, url: str, *, echo: bool = False, pool_size: int = 10, pool_options: Mapping[str, Any] | None = None
    ) -> None:
        self.url = url
        self.engine = make_engine(url, echo=echo, pool_size=pool_size, pool_options=pool_options)
        self._factory = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self, account_id: uuid.UUID) -> AsyncIterator[AsyncSession]:
        """A session whose queries see only `account_id`'s rows."""
        async with self._factory() as session:
            session.info[SCOPE_KEY] = account_id
            yield session

    @asynccontextmanager
    async def system_session(self) -> AsyncIterator[AsyncSession]:
        """A session that sees every account: for login, bootstrap and scheduled system work only."""
        async with self._factory() as session:
            session.info[SCOPE_KEY] = ALL_ACCOUNTS
            yield session

    @asynccontextmanager
    async def unscoped_session(self) -> AsyncIterator[AsyncSession]:
        """A session that may touch only tables no account owns (accounts themselves)."""
        async with self._factory() as session:
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()
