"""Tests-only handlers and tables for a real worker (`--import tests.worker.handlers`), keyed for idempotency."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence

from pydantic import BaseModel
from sqlalchemy import BigInteger, Float, Integer, String, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from deskpilot.errors import NotFound
from deskpilot.events.pubsub import JsonObject
from deskpilot.jobs import JobContext, RetryPolicy, registry
from deskpilot.storage import Database

QUICK_RETRY = RetryPolicy(max_retries=3, backoff_s=0.05, jitter=False)


class TestBase(DeclarativeBase):
    """Separate from the application's metadata, so these tables never reach migrations."""

    __test__ = False


class Delivery(TestBase):
    __tablename__ = "job_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(100), index=True)
    job_id: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer)
    pid: Mapped[int] = mapped_column(Integer)
    loop_id: Mapped[int] = mapped_column(BigInteger)
    engine_id: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[float] = mapped_column(Float)


class ClaimedKey(TestBase):
    __tablename__ = "job_keys"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)


class Work(TestBase):
    __tablename__ = "job_work"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(100), index=True)


class RecordArgs(BaseModel):
    key: str
    crash_after_work: bool = False
    succeed_on: int = 1


async def _record_delivery(ctx: JobContext, key: str) -> None:
    async with ctx.database.unscoped_session() as session:
        session.add(
            Delivery(
                key=key,
                job_id=ctx.job_id,
                attempt=ctx.attempt,
                pid=os.getpid(),
                loop_id=id(asyncio.get_running_loop()),
                engine_id=id(ctx.database.engine),
                at=time.time(),
            )
        )
        await session.commit()


async def _do_work_once(ctx: JobContext, key: str) -> bool:
    """The idempotent part: claim the key and do the work in one transaction; False if already done."""
    async with ctx.database.unscoped_session() as session:
        session.add(ClaimedKey(key=key))
        session.add(Work(key=key))
        try:
            await session.commit()
        except IntegrityError:
            await session.rollback()
            return False
    return True


@registry.job("tests.record")
async def record(ctx: JobContext, payload: JsonObject) -> None:
    args = RecordArgs.model_validate(payload)
    await _record_delivery(ctx, args.key)
    if await _do_work_once(ctx, args.key) and args.crash_after_work:
        # The work is committed but the message not yet acknowledged: the worst moment to die.
        os._exit(1)


@registry.job("tests.flaky", retry=QUICK_RETRY)
async def flaky(ctx: JobContext, payload: JsonObject) -> None:
    args = RecordArgs.model_validate(payload)
    await _record_delivery(ctx, args.key)
    if ctx.attempt < args.succeed_on:
        raise RuntimeError(f"attempt {ctx.attempt} fails on purpose")
    await _do_work_once(ctx, args.key)


@registry.job("tests.missing_row", retry=QUICK_RETRY)
async def missing_row(ctx: JobContext, payload: JsonObject) -> None:
    args = RecordArgs.model_validate(payload)
    await _record_delivery(ctx, args.key)
    raise NotFound(f"run {args.key!r} not found")


async def create_tables(database: Database) -> None:
    async with database.engine.begin() as conn:
        await conn.run_sync(TestBase.metadata.create_all)


async def deliveries(database: Database, key: str) -> Sequence[Delivery]:
    async with database.unscoped_session() as session:
        rows = await session.scalars(select(Delivery).where(Delivery.key == key).order_by(Delivery.id))
        return rows.all()


async def work_done(database: Database, key: str) -> int:
    async with database.unscoped_session() as session:
        return int(await session.scalar(select(func.count()).select_from(Work).where(Work.key == key)) or 0)


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout_s: float = 15.0, every_s: float = 0.02) -> None:
    """Poll `check` until it is true; fail after `timeout_s` (a bound, never an open-ended sleep)."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(every_s)
