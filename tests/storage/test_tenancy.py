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
from deskpilot.storage.tenancy import SCOPE_PARAM, scoped


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


async def test_one_statement_is_scoped_anew_for_each_account(db: Database) -> None:
    """The account is a parameter of each execution, not part of the cached statement: a statement built once (with
    the criteria applied by `scoped` or not) run for A, then B, then A again sees each account's rows only, and a
    caller's own parameter of that name does not widen the scope."""
    a, b = await _two_accounts(db)
    for account, name in ((a, "Desk A"), (b, "Desk B")):
        async with db.session(account.id) as session:
            session.add(Team(name=name))
            await session.commit()
    for by_name in (select(Team.name).order_by(Team.name), scoped(select(Team.name).order_by(Team.name))):
        seen = []
        for account in (a, b, a):
            async with db.session(account.id) as session:
                seen.append((await session.scalars(by_name, {SCOPE_PARAM: b.id})).all())
        assert seen == [["Desk A"], ["Desk B"], ["Desk A"]]
    # A statement scoped once needs an account's session: not an unscoped one, nor a system session.
    async with db.unscoped_session() as session:
        with pytest.raises(UnscopedQueryError):
            await session.scalars(scoped(select(Team.name)))
    async with db.system_session() as session:
        with pytest.raises(UnscopedQueryError, match="account's session only"):
            await session.scalars(scoped(select(Team.name)))


async def test_bulk_update_by_primary_key_is_refused_on_tenant_tables(db: Database) -> None:
    """Rows matched by id alone (ORM bulk UPDATE by primary key) escape loader criteria: refused, nothing
    changed, in either account."""
    a, b = await _two_accounts(db)
    async with db.session(b.id) as session:
        theirs = Team(name="Theirs")
        session.add(theirs)
        await session.commit()
    async with db.session(a.id) as session:
        ours = Team(name="Ours")
        session.add(ours)
        await session.commit()
        with pytest.raises(UnscopedQueryError, match="bulk UPDATE by primary key"):
            await session.execute(
                update(Team), [{"id": ours.id, "name": "Ours 2"}, {"id": theirs.id, "name": "Taken"}]
            )
        await session.rollback()
    async with db.system_session() as session:
        names = {t.name for t in (await session.scalars(select(Team))).all()}
    assert names == {"Ours", "Theirs"}


async def test_an_orm_update_keeps_the_loaded_objects_in_step(db: Database) -> None:
    """An ORM UPDATE in a scoped session updates the objects the session holds (its WHERE, tenant criteria
    included, is evaluated on them): a later flush of the object is not stale."""
    a, _ = await _two_accounts(db)
    async with db.session(a.id) as session:
        team = Team(name="Desk")
        session.add(team)
        await session.commit()
        await session.execute(update(Team).where(Team.id == team.id).values(name="Renamed"))
        assert team.name == "Renamed"
        await session.commit()
