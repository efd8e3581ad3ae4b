"""Shared fixtures: settings on a temporary SQLite file, the app, and accounts with tokens."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import create_engine

from deskpilot.all_models import Base
from deskpilot.api.app import create_app
from deskpilot.api.state import AppState
from deskpilot.identity import service as identity
from deskpilot.identity.models import Role
from deskpilot.identity.token_cache import token_cache
from deskpilot.security import passwords
from deskpilot.settings import Environment, Settings
from deskpilot.storage import Database, migrations
from tests.services import pg_database


def cheap_hasher() -> PasswordHasher:
    return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture(autouse=True)
def _cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 at production cost takes 0.1-0.3 s a hash and the suite creates hundreds of users.

    Verification reads the cost from each stored hash, so real hashes still verify; only new ones are cheap.
    """
    monkeypatch.setattr(passwords, "_hasher", cheap_hasher())


@pytest.fixture(autouse=True)
def _empty_token_cache() -> None:
    """API-token authentications cached by one test never answer another's."""
    token_cache.clear()


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": Environment.TEST,
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"},
    }
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def migrated_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database migrated to head: a SQLite file, then a throwaway database on the real PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'migrated.db'}"
        await asyncio.to_thread(migrations.upgrade, url)
        yield url
        return
    async with pg_database() as url:
        await asyncio.to_thread(migrations.upgrade, url)
        yield url


@pytest.fixture
def settings(tmp_path: Path, migrated_template: Path) -> Settings:
    shutil.copyfile(migrated_template, tmp_path / "test.db")
    return make_settings(tmp_path)


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated to head per test run; each test copies it (migrations run once)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrations.upgrade(f"sqlite+aiosqlite:///{path}")
    # Tables a migration does not create yet still appear; tests/storage/test_migrations.py fails on that drift.
    engine = create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    engine.dispose()
    return path


async def create_schema(db: Database) -> None:
    """Create the schema from the models (tests that do not go through `app_state`)."""
    async with db.engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)


@pytest.fixture
async def app_state(settings: Settings) -> AsyncIterator[AppState]:
    state = AppState.build(settings)
    yield state
    await state.close()


@dataclass(frozen=True)
class Tenant:
    """An account with one user per role and an API token for each."""

    account_id: uuid.UUID
    users: dict[Role, uuid.UUID]
    tokens: dict[Role, str]
    team_id: uuid.UUID

    def headers(self, role: Role = Role.OWNER) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


async def make_tenant(db: Database, name: str, password: str = "correct-horse-battery") -> Tenant:
    slug = name.lower().replace(" ", "-")
    async with db.system_session() as session:
        boot = await identity.bootstrap(
            session, account_name=name, email=f"owner@{slug}.example", name=f"{name} Owner", password=password
        )
        team = await identity.create_team(session, account_id=boot.account.id, name="Service Desk")
        users = {Role.OWNER: boot.owner.id}
        tokens = {Role.OWNER: boot.token.secret}
        for role in (Role.ADMIN, Role.LEAD, Role.ENGINEER, Role.VIEWER):
            user = await identity.create_user(
                session, account_id=boot.account.id, email=f"{role.value}@{slug}.example",
                name=f"{name} {role.value.title()}", role=role, password=password, team_id=team.id,
            )
            users[role] = user.id
            tokens[role] = (await identity.create_api_token(session, user=user, name="tests")).secret
        await session.commit()
    return Tenant(account_id=boot.account.id, users=users, tokens=tokens, team_id=team.id)


@pytest.fixture
async def tenant_a(app_state: AppState) -> Tenant:
    return await make_tenant(app_state.db, "Acme IT")


@pytest.fixture
async def tenant_b(app_state: AppState) -> Tenant:
    return await make_tenant(app_state.db, "Globex Support")


@pytest.fixture
async def client(app_state: AppState, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, state=app_state)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http
