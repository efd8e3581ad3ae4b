"""Tenant scoping: queries see one account, unscoped access to tenant tables is impossible."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update

from deskpilot.events.models import AuditEvent
from deskpilot.identity.models import Account, Team
from deskpilot.storage import Database, UnscopedQueryError, migrations


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    await asyncio.to_thread(migrations.upgrade, database_url)
    database = Database(database_url)
    yield database
    await database.dispose()


async def _two_accounts(db: Database) -> tuple[Account, Account]:
    async with db.unscoped_session() as session:
        a, b = Account(name="A", slug="a"), Account(name="B", slug="b")
        session.add_all([a, b])
        await session.commit()
    return a, b


async def test_scoped_session_sees_only_its_account(db: Database) -> None:
    a, b = await _two_accounts(db)
    async with db.session(a.id) as session:
        session.add(Team(name="Desk"))  # account_id stamped from the scope
        await session.commit()
    async with db.session(b.id) as session:
        session.add(Team(name="Desk"))
        await session.commit()
    async with db.session(a.id) as session:
        teams = (await session.scalars(select(Team))).all()
        assert [t.account_id for t in teams] == [a.id]
        # Updates are scoped too: B's team is untouched.
        await session.execute(update(Team).values(name="Renamed"))
        await session.commit()
    async with db.system_session() as session:
        names = {(t.account_id, t.name) for t in (await session.scalars(select(Team))).all()}
    assert names == {(a.id, "Renamed"), (b.id, "Desk")}


async def test_get_by_primary_key_respects_scope(db: Database) -> None:
    a, b = await _two_accounts(db)
    async with db.session(a.id) as session:
        team = Team(name="Desk")
        session.add(team)
        await session.commit()
    async with db.session(b.id) as session:
        assert await session.get(Team, team.id) is None


async def test_unscoped_session_cannot_touch_tenant_tables(db: Database) -> None:
    await _two_accounts(db)
    async with db.unscoped_session() as session:
        with pytest.raises(UnscopedQueryError):
            await session.scalars(select(Team))
        assert len((await session.scalars(select(Account))).all()) == 2


async def test_cannot_write_into_another_account(db: Database) -> None:
    a, b = await _two_accounts(db)
    async with db.session(a.id) as session:
        session.add(Team(name="Sneaky", account_id=b.id))
        with pytest.raises(UnscopedQueryError):
            await session.flush()


async def test_timestamps_are_timezone_aware_and_json_round_trips(db: Database) -> None:
    a, _ = await _two_accounts(db)
    when = datetime(2026, 3, 1, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    async with db.session(a.id) as session:
        event = AuditEvent(actor_label="t", action="x.y", resource_type="thing", created_at=when,
                           details={"nested": {"list": [1, "two", None]}, "unicode": "Grüße"})
        session.add(event)
        await session.commit()
    async with db.session(a.id) as session:
        stored = await session.get(AuditEvent, event.id, populate_existing=True)
        assert stored is not None
        assert stored.created_at == when
        assert stored.created_at.tzinfo is not None
        assert stored.created_at.utcoffset() == timedelta(0)
        assert stored.details == {"nested": {"list": [1, "two", None]}, "unicode": "Grüße"}
    naive = AuditEvent(actor_label="t", action="x", resource_type="y", created_at=datetime(2026, 1, 1))
    async with db.session(a.id) as session:
        session.add(naive)
        with pytest.raises(Exception, match="naive datetime"):
            await session.flush()
    assert datetime.now(UTC).tzinfo is UTC
