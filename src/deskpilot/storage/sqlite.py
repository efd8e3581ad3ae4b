"""aiosqlite connections that cost one thread round trip per statement, and can run a unit of work in one."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import make_url

T = TypeVar("T")

# sqlite3 returns these from a cursor: the description, the rows, rowcount and lastrowid.
_Outcome = tuple[Any, list[Any], int, int | None]


def _statement(conn: sqlite3.Connection, sql: str, parameters: Any) -> _Outcome:
    cursor = conn.cursor()
    try:
        cursor.execute(sql, parameters)
        description = cursor.description
        return description, cursor.fetchall() if description else [], cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


def _executemany(conn: sqlite3.Connection, sql: str, parameters: Iterable[Any]) -> _Outcome:
    cursor = conn.cursor()
    try:
        cursor.executemany(sql, parameters)
        return cursor.description, [], cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneHopCursor:
    """The cursor SQLAlchemy's aiosqlite adapter drives, with each statement done in one trip to the thread.

    aiosqlite's own cursor costs a trip to create it, one to execute, one to fetch and one to close: about three
    times the work on the event loop for the same statement. Here the statement runs, its rows are fetched and
    its sqlite3 cursor is closed in the connection's thread at once; fetches then read the buffered rows.
    """

    __slots__ = ("_conn", "_rows", "arraysize", "description", "lastrowid", "rowcount")

    def __init__(self, conn: OneHopConnection) -> None:
        self._conn = conn
        self._rows: list[Any] = []
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1

    async def __aenter__(self) -> OneHopCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def _take(self, outcome: _Outcome) -> OneHopCursor:
        self.description, self._rows, self.rowcount, self.lastrowid = outcome
        return self

    async def execute(self, sql: str, parameters: Any = ()) -> OneHopCursor:
        return self._take(await self._conn.run(_statement, sql, () if parameters is None else parameters))

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> OneHopCursor:
        return self._take(await self._conn.run(_executemany, sql, list(parameters)))

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = self.arraysize if size is None else size
        rows, self._rows = self._rows[:count], self._rows[count:]
        return rows

    async def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    async def close(self) -> None:
        self._rows = []


class OneHopConnection(aiosqlite.Connection):
    """An aiosqlite connection whose cursors cost one thread round trip per statement (see `OneHopCursor`)."""

    def cursor(self) -> OneHopCursor:  # type: ignore[override]  # SQLAlchemy enters it with `async with`/await
        return OneHopCursor(self)

    # A commit or rollback with no transaction open does nothing in SQLite: skip the round trip (reading
    # `in_transaction` does not touch the database). Ending a read, or committing a unit of work already
    # committed in the thread (`run`), then costs nothing.
    async def commit(self) -> None:
        if self._connection is not None and not self._connection.in_transaction:
            return
        await super().commit()

    async def rollback(self) -> None:
        if self._connection is not None and not self._connection.in_transaction:
            return
        await super().rollback()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(sqlite3_connection, *args)` in the connection's thread: any number of statements, one round trip.

        aiosqlite has no public call for this; `_execute` is what each of its own methods uses (pinned in uv.lock).
        """
        result: T = await self._execute(fn, self._conn, *args)  # type: ignore[no-untyped-call]
        return result


def creator(url: str) -> Callable[[], OneHopConnection]:
    """An `async_creator` for `create_async_engine`: the connections the aiosqlite dialect makes, one-hop."""
    args, options = SQLiteDialect_aiosqlite().create_connect_args(make_url(url))
    database = str(args[0])

    def connect() -> OneHopConnection:
        def connector() -> sqlite3.Connection:
            return sqlite3.connect(database, **options)

        connection = OneHopConnection(connector, 64)
        # As the dialect does for aiosqlite's own connections: a forgotten connection must not keep the process up.
        connection._thread.daemon = True
        return connection

    return connect


def in_thread(conn: Any) -> OneHopConnection | None:
    """The one-hop driver connection behind a pooled DBAPI connection, if it is one."""
    driver = getattr(conn, "driver_connection", None)
    return driver if isinstance(driver, OneHopConnection) else None
