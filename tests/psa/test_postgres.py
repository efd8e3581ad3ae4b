"""The PSA tables and queries on a real PostgreSQL (JSONB payloads, string enums, scoped lookups)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from deskpilot.identity.models import Role
from deskpilot.psa import service as psa
from deskpilot.psa.models import PushStatus
from deskpilot.psa.registry import PSAKind
from deskpilot.psa.schemas import NoteFlags
from deskpilot.security.crypto import SecretBox, generate_key
from deskpilot.storage import Database
from tests.conftest import create_schema, make_tenant
from tests.fakes.connectwise_server import FakeConnectWise
from tests.services import pg_database

pytestmark = pytest.mark.postgres


async def test_connection_push_and_mapping_round_trip(
    connectwise_server: FakeConnectWise, http: httpx.AsyncClient
) -> None:
    secrets = SecretBox([generate_key()])
    async with pg_database() as url:
        db = Database(url)
        try:
            await create_schema(db)
            tenant = await make_tenant(db, "Acme IT", password=None)  # type: ignore[arg-type]
            other = await make_tenant(db, "Globex Support", password=None)  # type: ignore[arg-type]
            subject_id = uuid.uuid4()
            async with db.session(tenant.account_id) as session:
                connection = await psa.create_connection(
                    session, secrets, account_id=tenant.account_id, name="CW", kind=PSAKind.CONNECTWISE,
                    settings=connectwise_server.settings(), credentials=connectwise_server.credentials(),
                )
                mapped = await psa.auto_map_members(session, secrets, http_client=http)
                result = await psa.record_and_push(
                    session, secrets, connection_id=connection.id, ticket_id="101", subject_type="session",
                    subject_id=subject_id, note_text="Resolved.", flags=NoteFlags(resolution=True),
                    http_client=http,
                )
                await session.commit()
            assert mapped.matched == 2
            assert result.status == "pushed"
            async with db.session(tenant.account_id) as session:
                pushes = await psa.list_pushes(session, subject_id=subject_id, status=PushStatus.PUSHED)
                assert [p.payload["resolution"] for p in pushes] == [True]
                assert await psa.member_for_user(session, connection.id, tenant.users[Role.ENGINEER]) == "jsmith"
            async with db.session(other.account_id) as session:
                assert await psa.list_pushes(session, subject_id=subject_id) == []
                assert await psa.list_connections(session, include_inactive=True) == []
        finally:
            await db.dispose()
