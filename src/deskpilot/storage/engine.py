"""Engine and session factory for SQLite (default) and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

from sqlalchemy import event, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolResetState

from deskpilot.background import running
from deskpilot.storage import sqlite
from deskpilot.storage.tenancy import ALL_ACCOUNTS, SCOPE_KEY

logger = logging.getLogger(__name__)


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    # WAL + NORMAL: one fsync per checkpoint rather than per commit, safe against corruption.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Short on purpose: a statement run on the event loop must not wait there; the connection's thread keeps
    # trying for the URL's `timeout` instead (`storage.sqlite`).
    cursor.execute(f"PRAGMA busy_timeout={sqlite.INLINE_BUSY_MS}")
    # Checkpoints normally run in the background (`Database.checkpoints`); a commit that crossed SQLite's default
    # of 1000 pages checkpointed on the request's path, a 5-8 ms stall (the Pilot turn's p99, bench_pilot). The
    # larger threshold is the backstop for processes that run no background checkpoints (CLI, tests).
    cursor.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_CHECKPOINT_PAGES}")
    cursor.close()


BACKSTOP_CHECKPOINT_PAGES: Final = 20_000
CHECKPOINT_INTERVAL_S: Final = 1.0


def _checkpoint(path: str) -> None:
    # Its own short-lived connection: the pool's are busy with requests, and PASSIVE never waits for them.
    connection = sqlite3.connect(path, timeout=0.1)
    try:
        connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        connection.close()


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


def in_memory_sqlite(url: str) -> bool:
    """Whether `url` names an in-memory SQLite database (gone with its process, seen by no other one)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return False
    return not parsed.database or parsed.database == ":memory:" or "mode=memory" in url


def _warm_first(url: str) -> dict[str, Any]:
    """A file database's pool hands out the most recently used connection first: its page cache is the warm one
    (an in-memory database has one connection, in a pool without that option)."""
    return {} if in_memory_sqlite(url) else {"pool_use_lifo": True}


def make_engine(
    url: str, *, echo: bool = False, pool_size: int = 10, pool_options: Mapping[str, Any] | None = None
) -> AsyncEngine:
    """The engine; `pool_options` (`pool_size`, `max_overflow`, `pool_timeout`) override the pool of either dialect."""
    options = dict(pool_options or {})
    if url.startswith("sqlite"):
        own_reset = "pool_reset_on_return" not in options
        engine = create_async_engine(
            url, echo=echo, async_creator=sqlite.creator(url),
            **{"pool_reset_on_return": None, **_warm_first(url), **options},
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

    @asynccontextmanager
    async def checkpoints(self, interval_s: float = CHECKPOINT_INTERVAL_S) -> AsyncIterator[None]:
        """On SQLite, checkpoint the WAL in a worker thread every `interval_s` while the block runs.

        Servers run this for their lifetime so that no request commits into a checkpoint. Elsewhere nothing.
        """
        path = self.engine.url.database
        if self.dialect != "sqlite" or in_memory_sqlite(self.url) or path is None:
            yield
            return

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval_s)
                try:
                    await asyncio.to_thread(_checkpoint, path)
                except sqlite3.Error:
                    logger.warning("background WAL checkpoint of %s failed", path, exc_info=True)

        async with running(loop(), name="sqlite-checkpoints"):
            yield
