"""Knowledge fixtures: a migrated database on SQLite and on a real PostgreSQL per test, and an account in it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from deskpilot.identity import service as identity
from deskpilot.identity.models import Role
from deskpilot.storage import Database


@pytest.fixture
def database_url(migrated_database_url: str) -> str:
    return migrated_database_url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    yield database
    await database.dispose()


@dataclass(frozen=True)
class Account:
    id: uuid.UUID
    team_id: uuid.UUID
    other_team_id: uuid.UUID
    lead_id: uuid.UUID


async def make_account(db: Database, name: str) -> Account:
    slug = name.lower().replace(" ", "-")
    async with db.system_session() as session:
        boot = await identity.bootstrap(session, account_name=name, email=f"owner@{slug}.example", name=name,
                                        password=None)
        team = await identity.create_team(session, account_id=boot.account.id, name="Service Desk")
        other = await identity.create_team(session, account_id=boot.account.id, name="Projects")
        lead = await identity.create_user(session, account_id=boot.account.id, email=f"lead@{slug}.example",
                                          name="Lead", role=Role.LEAD, team_id=team.id)
        await session.commit()
    return Account(id=boot.account.id, team_id=team.id, other_team_id=other.id, lead_id=lead.id)


@pytest.fixture
async def account(db: Database) -> Account:
    return await make_account(db, "Acme IT")


@pytest.fixture
async def other_account(db: Database) -> Account:
    return await make_account(db, "Globex Support")
