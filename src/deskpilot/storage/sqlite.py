"""aiosqlite connections that run a statement or a unit of work in one step: on the event loop when safe, else in
one thread round trip."""

from __future__ import annotations

import sqlite3
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Final, TypeVar

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


# The connections `creator` opened in this process and not yet closed: whether another one holds a transaction.
_OPEN: weakref.WeakSet[OneHopConnection] = weakref.WeakSet()
# SQLite's own busy timeout on these connections: how long a statement on the event loop waits for another
# process's lock before it goes to the connection's thread, which keeps trying for the connection's `timeout`.
INLINE_BUSY_MS: Final = 5
_RETRY_S: Final = 0.002
_LOCKED: Final = ("locked", "busy")


def _is_locked(error: sqlite3.OperationalError) -> bool:
    return any(word in str(error) for word in _LOCKED)


def _patiently(fn: Callable[..., T], conn: sqlite3.Connection, patience_s: float, *args: Any) -> T:
    """In the connection's thread: `fn`, tried again while the database is locked, for up to `patience_s`."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return fn(conn, *args)
        except sqlite3.OperationalError as e:
            if not _is_locked(e) or time.monotonic() >= deadline:
                raise
        time.sleep(_RETRY_S)


class OneHopConnection(aiosqlite.Connection):
    """An aiosqlite connection that runs each statement, or a whole unit of work (`run`), in one step.

    A thread round trip costs far more than a short SQLite statement: the hand-over itself, and the GIL, which the
    thread must win back from the event loop after every step of SQLite (a loop busy with Python holds it for up
    to the switch interval each time: measured, a 0.3 ms batch took 1.4-3.9 ms while the loop parsed a model's
    reply). So when no other connection of this process holds a transaction, the work runs right on the event
    loop: in WAL mode a reader never waits, and a writer can only wait for another process, for at most
    `INLINE_BUSY_MS` (SQLite's busy timeout on these connections), after which it goes to the thread. With
    another connection of this process inside a transaction, it goes to the thread: that holder needs the event
    loop to finish, so waiting on the loop for its lock would deadlock. In the thread a locked database is tried
    again for up to `patience_s` (the connection's `timeout`).
    """

    def __init__(self, connector: Callable[[], sqlite3.Connection], iter_chunk_size: int, patience_s: float) -> None:
        super().__init__(connector, iter_chunk_size)
        self._patience_s = patience_s
        _OPEN.add(self)

    def cursor(self) -> OneHopCursor:  # type: ignore[override]  # SQLAlchemy enters it with `async with`/await
        return OneHopCursor(self)

    def _may_inline(self) -> bool:
        conn = self._connection
        if conn is None or not self._running:
            return False
        return not any(
            other is not self and other._connection is not None and other._connection.in_transaction
            for other in _OPEN
        )

    # A commit or rollback with no transaction open does nothing in SQLite: skip it (reading `in_transaction`
    # does not touch the database). Ending a read, or committing a unit of work already committed, costs nothing.
    async def commit(self) -> None:
        if self._connection is not None and not self._connection.in_transaction:
            return
        await self.run(_commit)

    async def rollback(self) -> None:
        if self._connection is not None and not self._connection.in_transaction:
            return
        await self.run(_rollback)

    async def close(self) -> None:
        _OPEN.discard(self)
        await super().close()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(sqlite3_connection, *args)`: any number of statements in one step, on the loop or in the thread.

        `fn` must leave nothing half done when it raises (a unit of work rolls back): a lock it could not get in
        time on the loop is tried again in the thread. aiosqlite has no public call for the thread; `_execute`
        is what each of its own methods uses (pinned in uv.lock).
        """
        if self._may_inline():
            try:
                return fn(self._conn, *args)
            except sqlite3.OperationalError as e:
                if not _is_locked(e):
                    raise
        result: T = await self._execute(_patiently, fn, self._conn, self._patience_s, *args)  # type: ignore[no-untyped-call]
        return result


def _commit(conn: sqlite3.Connection) -> None:
    conn.commit()


def _rollback(conn: sqlite3.Connection) -> None:
    conn.rollback()


def creator(url: str) -> Callable[[], OneHopConnection]:
    """An `async_creator` for `create_async_engine`: the connections the aiosqlite dialect makes, one-hop."""
    args, options = SQLiteDialect_aiosqlite().create_connect_args(make_url(url))
    database = str(args[0])

    # Used from the event loop's thread and the connection's own, never both at once (each step is awaited).
    # The wait for a lock is the thread's (`_patiently`, the URL's `timeout`); SQLite's own stays short.
    patience_s = float(options.get("timeout", 5.0))
    connect_options: dict[str, Any] = {**options, "check_same_thread": False, "timeout": INLINE_BUSY_MS / 1000}

    def connect() -> OneHopConnection:
        def connector() -> sqlite3.Connection:
            connection: sqlite3.Connection = sqlite3.connect(database, **connect_options)
            return connection

        connection = OneHopConnection(connector, 64, patience_s)
        # As the dialect does for aiosqlite's own connections: a forgotten connection must not keep the process up.
        connection._thread.daemon = True
        return connection

    return connect


def in_thread(conn: Any) -> OneHopConnection | None:
    """The one-hop driver connection behind a pooled DBAPI connection, if it is one."""
    driver = getattr(conn, "driver_connection", None)
    return driver if isinstance(driver, OneHopConnection) else None
