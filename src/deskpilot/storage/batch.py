"""Explicit units of work: Core writes committed together, in one step of the connection on SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Dialect, Table, bindparam, insert, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Executable

from deskpilot.storage import sqlite
from deskpilot.storage.tenancy import ALL_ACCOUNTS, SCOPE_KEY, UnscopedQueryError


@dataclass(frozen=True, slots=True)
class Write:
    """One statement of a unit of work. `expect_one`: it must change exactly one row (a compare-and-set)."""

    statement: Executable
    params: Mapping[str, Any]
    expect_one: bool = False


class WriteConflict(Exception):
    """A compare-and-set of the unit changed no row; the whole unit was rolled back. `index` names the write."""

    def __init__(self, index: int) -> None:
        super().__init__(f"write {index} of the unit changed no row")
        self.index = index


_INSERTS: dict[tuple[Table, tuple[str, ...]], Executable] = {}
_UPDATES: dict[tuple[Table, tuple[str, ...], tuple[str, ...]], Executable] = {}


def _table(model: type[Any]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


def insert_row(model: type[Any], values: Mapping[str, Any]) -> Write:
    """INSERT of one row of a mapped class's table; the statement is built once per table and set of columns."""
    table = _table(model)
    key = (table, tuple(values))
    statement = _INSERTS.get(key)
    if statement is None:
        statement = _INSERTS[key] = insert(table).values({name: bindparam(name) for name in values})
    return Write(statement, values)


def update_row(
    model: type[Any], where: Mapping[str, Any], values: Mapping[str, Any], *, null: Sequence[str] = ()
) -> Write:
    """UPDATE … SET `values` WHERE every `where` column equals its value and every `null` column IS NULL.

    Always exactly one row is meant: `where` names the row (its id and account), the rest are compare-and-set
    conditions. The statement is built once per table and set of columns.
    """
    table = _table(model)
    values = dict(values)
    for column in table.columns:
        # As a Core UPDATE would: a column's onupdate (`updated_at`) when the caller does not set it.
        if column.onupdate is not None and column.name not in values:
            arg = getattr(column.onupdate, "arg", None)
            values[column.name] = arg(None) if callable(arg) else arg
    key = (table, tuple(where) + tuple(f"{n} IS NULL" for n in null), tuple(values))
    statement = _UPDATES.get(key)
    if statement is None:
        conditions = [table.c[name] == bindparam(f"w_{name}") for name in where]
        conditions += [table.c[name].is_(None) for name in null]
        statement = _UPDATES[key] = (
            update(table).where(*conditions).values({name: bindparam(f"v_{name}") for name in values})
        )
    params = {f"w_{k}": v for k, v in where.items()} | {f"v_{k}": v for k, v in values.items()}
    return Write(statement, params, expect_one=True)


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]

    def parameters(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        # Every value is given: a column default (`updated_at`'s onupdate, say) is not computed here.
        return tuple(
            params[name] if process is None else process(params[name])
            for name, process in zip(self.names, self.processors, strict=True)
        )


_COMPILED: dict[tuple[int, str], tuple[Executable, _Compiled]] = {}


def _compiled(statement: Executable, dialect: Dialect) -> _Compiled:
    key = (id(statement), dialect.name)
    found = _COMPILED.get(key)
    if found is not None and found[0] is statement:
        return found[1]
    compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
    names = tuple(compiled.positiontup or ())
    processors = tuple(compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names)
    result = _Compiled(compiled.string, names, processors)
    _COMPILED[key] = (statement, result)
    return result


def _apply(conn: sqlite3.Connection, prepared: list[tuple[str, tuple[Any, ...], bool]]) -> int | None:
    """Run the unit on the SQLite connection and commit it; the index of a compare-and-set that lost, rolled back."""
    try:
        for index, (sql, parameters, expect_one) in enumerate(prepared):
            cursor = conn.execute(sql, parameters)
            changed = cursor.rowcount
            cursor.close()
            if expect_one and changed != 1:
                conn.rollback()
                return index
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return None


def _check_scope(db: AsyncSession, writes: Sequence[Write]) -> None:
    """Every write names its account, and it is the session's (Core statements bypass the ORM's scoping)."""
    scope: Any = db.info.get(SCOPE_KEY)
    if scope is None:
        raise UnscopedQueryError("a unit of work needs a session with an account scope")
    for write in writes:
        account = write.params.get("account_id", write.params.get("w_account_id"))
        if account is None:
            raise UnscopedQueryError("every write of a unit of work names its account_id")
        if scope is not ALL_ACCOUNTS and account != scope:
            raise UnscopedQueryError("a unit of work writes another account's rows than its session's scope")


async def commit_writes(db: AsyncSession, writes: Sequence[Write]) -> None:
    """Execute `writes` in order and commit them with whatever the session's transaction holds.

    On SQLite the statements run as one step of the connection (`OneHopConnection.run`: on the event loop when
    safe, else one round trip to its thread); elsewhere one by one. A compare-and-set that changes no row rolls
    everything back and raises `WriteConflict`; a failed statement (a unique index, say) rolls everything back
    and raises, on every database alike, so the session is usable afterwards. The session must have no pending
    ORM changes: they would be flushed after these statements, in a transaction of their own.
    """
    _check_scope(db, writes)
    conn = await db.connection()
    driver = sqlite.in_thread(await conn.get_raw_connection())
    if driver is not None:
        prepared = []
        for write in writes:
            compiled = _compiled(write.statement, conn.dialect)
            prepared.append((compiled.sql, compiled.parameters(write.params), write.expect_one))
        try:
            lost = await driver.run(_apply, prepared)
        except sqlite3.IntegrityError as e:
            await db.rollback()
            raise IntegrityError("unit of work", None, e) from e
        except sqlite3.OperationalError as e:
            await db.rollback()
            raise OperationalError("unit of work", None, e) from e
        if lost is not None:
            await db.rollback()
            raise WriteConflict(lost)
        # Nothing is left to commit in SQLite: this ends the session's transaction without a round trip.
        await db.commit()
        return
    try:
        for index, write in enumerate(writes):
            result = await conn.execute(write.statement, dict(write.params))
            if write.expect_one and getattr(result, "rowcount", 1) != 1:
                raise WriteConflict(index)
    except BaseException:
        # PostgreSQL aborts the transaction on a failed statement: nothing more could run in it.
        await db.rollback()
        raise
    await db.commit()
