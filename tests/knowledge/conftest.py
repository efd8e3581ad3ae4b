"""Knowledge fixtures: a migrated database on SQLite and on a real PostgreSQL per test, and an account in it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from deskpilot.all_models import Base
from deskpilot.identity import service as identity
from deskpilot.identity.models import Role
from deskpilot.storage import Database, migrations
from tests.services import require_postgres


async def create_pg_database(base_url: str) -> str:
    """Create an empty database next to `base_url`'s and return its URL."""
    name = f"deskpilot_test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(base_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


async def drop_pg_database(base_url: str, url: str) -> None:
    name = make_url(url).database
    admin = create_async_engine(base_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


async def migrate(url: str) -> None:
    """Migrations, with the tables no migration creates yet in between (as the app's test template does).

    Until the initial revision is regenerated with the knowledge tables, `create_all` supplies them; the
    search revision (0002) then runs against them like it will in production.
    """
    await asyncio.to_thread(migrations.upgrade, url, "0001")
    db = Database(url)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
    finally:
        await db.dispose()
    await asyncio.to_thread(migrations.upgrade, url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'knowledge.db'}"
        await migrate(url)
        yield url
        return
    base = require_postgres()
    url = await create_pg_database(base)
    try:
        await migrate(url)
        yield url
    finally:
        await drop_pg_database(base, url)


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
