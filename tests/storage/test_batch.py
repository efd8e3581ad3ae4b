"""Units of work (`storage.batch`): Core writes committed together, scoped by account, compare-and-set, one trip."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from deskpilot.identity.models import Account, Team
from deskpilot.storage import Database, UnscopedQueryError, migrations, utcnow
from deskpilot.storage.batch import WriteConflict, commit_writes, insert_row, update_row
from deskpilot.storage.sqlite import OneHopConnection


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    await asyncio.to_thread(migrations.upgrade, database_url)
    database = Database(database_url)
    yield database
    await database.dispose()


async def _accounts_with_teams(db: Database) -> tuple[Account, Team, Account, Team]:
    async with db.unscoped_session() as session:
        a, b = Account(name="A", slug="a"), Account(name="B", slug="b")
        session.add_all([a, b])
        await session.commit()
    teams = []
    for account in (a, b):
        async with db.session(account.id) as session:
            team = Team(name="Desk")
            session.add(team)
            await session.commit()
            teams.append(team)
    return a, teams[0], b, teams[1]


async def _names(db: Database, account: Account) -> list[str]:
    async with db.session(account.id) as session:
        return sorted(await session.scalars(select(Team.name)))


def _team(account_id: uuid.UUID, name: str) -> dict[str, Any]:
    now = utcnow()
    return {"id": uuid.uuid4(), "account_id": account_id, "name": name, "created_at": now, "updated_at": now}


async def test_a_unit_commits_inserts_and_updates_together(db: Database) -> None:
    a, team_a, b, _ = await _accounts_with_teams(db)
    async with db.session(a.id) as session:
        await commit_writes(
            session,
            [
                insert_row(Team, _team(a.id, "Field")),
                update_row(
                    Team, {"id": team_a.id, "account_id": a.id}, {"name": "Service Desk", "updated_at": utcnow()}
                ),
            ],
        )
    assert await _names(db, a) == ["Field", "Service Desk"]
    assert await _names(db, b) == ["Desk"]


async def test_a_lost_compare_and_set_rolls_back_the_whole_unit(db: Database) -> None:
    a, team_a, _, _ = await _accounts_with_teams(db)
    async with db.session(a.id) as session:
        with pytest.raises(WriteConflict) as lost:
            await commit_writes(
                session,
                [
                    insert_row(Team, _team(a.id, "Field")),
                    update_row(Team, {"id": team_a.id, "account_id": a.id}, {"name": "Renamed"}, null=("created_at",)),
                ],
            )
    assert lost.value.index == 1
    assert await _names(db, a) == ["Desk"]


async def test_writes_carry_the_session_account_and_never_reach_another(db: Database) -> None:
    a, _, b, team_b = await _accounts_with_teams(db)
    async with db.session(a.id) as session:
        # Naming the other account is refused before anything is sent.
        with pytest.raises(UnscopedQueryError):
            await commit_writes(session, [update_row(Team, {"id": team_b.id, "account_id": b.id}, {"name": "X"})])
        with pytest.raises(UnscopedQueryError):
            await commit_writes(session, [insert_row(Team, _team(b.id, "Field"))])
        # The session's own account with another account's row id: the account filter matches no row.
        with pytest.raises(WriteConflict):
            await commit_writes(session, [update_row(Team, {"id": team_b.id, "account_id": a.id}, {"name": "X"})])
    async with db.unscoped_session() as session:
        with pytest.raises(UnscopedQueryError):
            await commit_writes(session, [insert_row(Team, _team(a.id, "Field"))])
    assert await _names(db, a) == ["Desk"]
    assert await _names(db, b) == ["Desk"]


async def test_sqlite_runs_a_unit_in_one_thread_round_trip(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    if db.dialect != "sqlite":
        pytest.skip("thread round trips are aiosqlite's")
    a, team_a, _, _ = await _accounts_with_teams(db)
    trips: list[str] = []
    original = OneHopConnection.run

    async def counting(self: OneHopConnection, fn: Any, *args: Any) -> Any:
        trips.append(fn.__name__)
        return await original(self, fn, *args)

    monkeypatch.setattr(OneHopConnection, "run", counting)
    async with db.session(a.id) as session:
        await commit_writes(
            session,
            [
                insert_row(Team, _team(a.id, "Field")),
                insert_row(Team, _team(a.id, "Network")),
                update_row(
                    Team, {"id": team_a.id, "account_id": a.id}, {"name": "Service Desk", "updated_at": utcnow()}
                ),
            ],
        )
    assert trips == ["_apply"]
    assert await _names(db, a) == ["Field", "Network", "Service Desk"]
