"""Approvals fixtures: a fresh schema on SQLite and on a real PostgreSQL, one tenant, a chat session, test tools."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from deskpilot.identity.models import Role
from deskpilot.llm.tools import Tool
from deskpilot.pilot.models import PilotSession
from deskpilot.storage import Database
from tests.conftest import Tenant, create_schema, make_tenant
from tests.services import pg_database


class RestartArgs(BaseModel):
    host: str = Field(min_length=1, max_length=100)
    service: str = Field(min_length=1, max_length=100)
    force: bool = False


async def restart_service(args: RestartArgs) -> str:
    """Restart a Windows service on a host."""
    return f"restarted {args.service} on {args.host}"


async def disable_user(upn: str, reason: str = "") -> str:
    """Disable a directory account.

    Args:
        upn: The user principal name.
        reason: Why, for the directory's log.
    """
    return f"disabled {upn}"


RESTART = Tool(restart_service)
DISABLE = Tool(disable_user)


@dataclass
class Desk:
    db: Database
    tenant: Tenant
    session_id: uuid.UUID

    @property
    def account_id(self) -> uuid.UUID:
        return self.tenant.account_id

    def user(self, role: Role = Role.ENGINEER) -> uuid.UUID:
        return self.tenant.users[role]


async def _desk(db: Database) -> Desk:
    await create_schema(db)
    tenant = await make_tenant(db, "Acme IT")
    async with db.session(tenant.account_id) as session:
        chat = PilotSession(kind="chat", user_id=tenant.users[Role.ENGINEER])
        session.add(chat)
        await session.commit()
    return Desk(db=db, tenant=tenant, session_id=chat.id)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def desk(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Desk]:
    """One tenant with a chat session, on a fresh SQLite file, then on a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'approvals.db'}")
        try:
            yield await _desk(db)
        finally:
            await db.dispose()
        return
    async with pg_database() as url:
        db = Database(url)
        try:
            yield await _desk(db)
        finally:
            await db.dispose()
