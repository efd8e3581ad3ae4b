"""PSA service: encryption at rest, updates, member mapping, pushes that never raise, and retry."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import text

from deskpilot.api.state import AppState
from deskpilot.errors import ValidationFailed
from deskpilot.identity.models import Role
from deskpilot.psa import service as psa
from deskpilot.psa.errors import (
    InvalidPSAConfig,
    NoPSAConnection,
    PSAConnectionInactive,
    PSAConnectionNameTaken,
    PSAConnectionNotFound,
    PSAPushAlreadyDone,
)
from deskpilot.psa.models import MappingSource, PushKind, PushStatus
from deskpilot.psa.registry import PSAKind
from deskpilot.psa.schemas import NoteFlags, TimeEntryDraft
from deskpilot.security.crypto import SecretBox, generate_key
from tests.conftest import Tenant
from tests.fakes.connectwise_server import PRIVATE_KEY, PUBLIC_KEY, FakeConnectWise

SESSION_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")


async def make_connection(
    state: AppState, tenant: Tenant, server: FakeConnectWise, name: str = "ConnectWise"
) -> uuid.UUID:
    async with state.db.session(tenant.account_id) as session:
        connection = await psa.create_connection(
            session, state.secrets, account_id=tenant.account_id, name=name, kind=PSAKind.CONNECTWISE,
            settings=server.settings(), credentials=server.credentials(),
        )
        await session.commit()
        return connection.id


async def test_credentials_are_encrypted_at_rest(
    app_state: AppState, tenant_a: Tenant, connectwise_server: FakeConnectWise
) -> None:
    """FP-045: PSA credentials are encrypted (Fernet) at rest."""
    connection_id = await make_connection(app_state, tenant_a, connectwise_server)
    async with app_state.db.engine.connect() as conn:
        row = (await conn.execute(text("SELECT * FROM psa_connections"))).mappings().one()
    raw = " ".join(str(v) for v in row.values())
    assert PRIVATE_KEY not in raw
    assert PUBLIC_KEY not in raw
    assert app_state.secrets.decrypt_json(row["credentials_encrypted"]) == connectwise_server.credentials()
    async with app_state.db.session(tenant_a.account_id) as session:
        view = psa.connection_view(await psa.get_connection(session, connection_id), app_state.secrets)
    assert view.credentials == {"public_key": "…AB12", "has_private_key": True}
    assert PRIVATE_KEY not in view.model_dump_json()
    async with app_state.db.session(tenant_a.account_id) as session:
        connection = await psa.get_connection(session, connection_id)
    assert psa.connection_view(connection, SecretBox([generate_key()])).credentials == {"unreadable": True}


async def test_invalid_config_never_echoes_secrets(app_state: AppState, tenant_a: Tenant) -> None:
    secret = "x" * 150
    async with app_state.db.session(tenant_a.account_id) as session:
        with pytest.raises(InvalidPSAConfig) as caught:
            await psa.create_connection(
                session, app_state.secrets, account_id=tenant_a.account_id, name="cw", kind="connectwise",
                settings={"site": "cw.example", "company_id": "acme", "client_id": "c"},
                credentials={"public_key": "pub", "private_key": secret},
            )
        assert "private_key" in caught.value.detail
        assert secret not in caught.value.detail
        with pytest.raises(InvalidPSAConfig, match="unknown PSA kind 'autotask'"):
            await psa.create_connection(
                session, app_state.secrets, account_id=tenant_a.account_id, name="at", kind="autotask",
                settings={}, credentials={},
            )


async def test_update_merges_settings_and_keeps_unmentioned_secrets(
    app_state: AppState, tenant_a: Tenant, connectwise_server: FakeConnectWise
) -> None:
    connection_id = await make_connection(app_state, tenant_a, connectwise_server)
    await make_connection(app_state, tenant_a, connectwise_server, name="Other")
    async with app_state.db.session(tenant_a.account_id) as session:
        connection = await psa.update_connection(
            session, app_state.secrets, connection_id, settings={"company_id": "newco"},
            credentials={"public_key": "NewPublicKey-7777", "private_key": ""},
        )
        assert connection.settings["company_id"] == "newco"
        assert connection.settings["site"] == connectwise_server.site
        stored = app_state.secrets.decrypt_json(connection.credentials_encrypted)
        assert stored == {"public_key": "NewPublicKey-7777", "private_key": PRIVATE_KEY}
        with pytest.raises(PSAConnectionNameTaken):
            await psa.update_connection(session, app_state.secrets, connection_id, name="Other")
        with pytest.raises(InvalidPSAConfig, match="client_id"):
            await psa.update_connection(session, app_state.secrets, connection_id, settings={"client_id": None})


async def test_test_connection_records_the_outcome(
    app_state: AppState, tenant_a: Tenant, connectwise_server: FakeConnectWise, http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    connection_id = await make_connection(app_state, tenant_a, connectwise_server)
    async with app_state.db.session(tenant_a.account_id) as session:
        ok = await psa.test_connection(session, app_state.secrets, connection_id, http_client=http)
        assert ok.ok
        assert ok.error is None
        connectwise_server.inject(401, path="/system/info", body={"code": "Unauthorized", "message": "x" * 500})
        failed = await psa.test_connection(session, app_state.secrets, connection_id, http_client=http)
        connection = await psa.get_connection(session, connection_id)
    assert not failed.ok
    assert failed.error is not None
    assert len(failed.error) <= 200
    assert (connection.last_test_ok, connection.last_error) == (False, failed.error)
    assert caplog.records, "the failure should be logged"
    assert PRIVATE_KEY not in caplog.text
    assert PUBLIC_KEY not in caplog.text


async def test_deleted_connection_is_inactive_and_refuses_providers(
    app_state: AppState, tenant_a: Tenant, connectwise_server: FakeConnectWise
) -> None:
    connection_id = await make_connection(app_state, tenant_a, connectwise_server)
    async with app_state.db.session(tenant_a.account_id) as session:
        await psa.delete_connection(session, connection_id)
        assert await psa.list_connections(session) == []
        assert len(await psa.list_connections(session, include_inactive=True)) == 1
        with pytest.raises(PSAConnectionInactive):
            await psa.provider_for_connection(session, app_state.secrets, connection_id)
        with pytest.raises(PSAConnectionInactive):
            await psa.test_connection(session, app_state.secrets, connection_id)


async def test_connections_are_invisible_to_other_accounts(
    app_state: AppState, tenant_a: Tenant, tenant_b: Tenant, connectwise_server: FakeConnectWise
) -> None:
    connection_id = await make_connection(app_state, tenant_a, connectwise_server)
    async with app_state.db.session(tenant_b.account_id) as session:
        with pytest.raises(PSAConnectionNotFound):
            await psa.get_connection(session, connection_id)
        assert await psa.list_connections(session, include_inactive=True) == []
        result = await psa.record_and_push(
            session, app_state.secrets, connection_id=connection_id, ticket_id="101", subject_type="session",
            subject_id=SESSION_ID, note_text="x",
        )
    assert result.status == "failed"
    assert connectwise_server.calls == []


async def test_ticket_context_passthrough_and_safe_load(
    app_state: AppState, tenant_a: Tenant, connectwise_server: FakeConnectWise, http: httpx.AsyncClient
) -> None:
    connection_id = await make_connection(app_state, tenant_a, connectwise_server)
    async with app_state.db.session(tenant_a.account_id) as session:
        context = await psa.get_ticket_context(session, app_state.secrets, connection_id, "101", http_client=http)
        assert context.company is not None
        assert context.company.identifier == "ACME"
        loaded = await psa.load_ticket_context(session, app_state.secrets, connection_id, "101", http_client=http)
        assert loaded.status == "loaded"
        assert loaded.context == context
        missing = await psa.load_ticket_context(session, app_state.secrets, connection_id, "999", http_client=http)
        assert missing.status == "unavailable"
        assert missing.context is None
        assert missing.error is not None
        assert "HTTP 404" in missing.error
        found = await psa.search_tickets(session, app_state.secrets, connection_id, "printer", http_client=http)
        assert [t.id for t in found] == ["101"]


# --- member mappings ------------------------------------------------------------------------


async def test_auto_mapping_by_email_keeps_manual_overrides(
    app_state: AppState, tenant_a: Tenant, connectwise_server: FakeConnectWise, http: httpx.AsyncClient
) -> None:
    """FP-045: members are mapped by email automatically; a manual override wins."""
    connection_id = await make_connection(app_state, tenant_a, connectwise_server)
    owner, engineer = tenant_a.users[Role.OWNER], tenant_a.users[Role.ENGINEER]
    async with app_state.db.session(tenant_a.account_id) as session:
        manual = await psa.set_member_mapping(session, user_id=owner, member_identifier="boss")
        assert (manual.source, manual.connection_id) == (MappingSource.MANUAL, connection_id)
        result = await psa.auto_map_members(session, app_state.secrets, http_client=http)
        assert (result.members_found, result.matched, result.manual_kept, result.removed) == (2, 1, 1, 0)
        by_user = {m.user_id: m for m in result.mappings}
        assert len(by_user) == 5
        # Members' emails differ in case from the users' (Engineer@Acme-IT.example).
        assert (by_user[engineer].member_identifier, by_user[engineer].source) == ("jsmith", MappingSource.AUTO)
        assert (by_user[owner].member_identifier, by_user[owner].source) == ("boss", MappingSource.MANUAL)
        assert by_user[tenant_a.users[Role.LEAD]].member_identifier is None  # that member is inactive
        assert await psa.member_for_user(session, connection_id, engineer) == "jsmith"

        connectwise_server.members[0]["primaryEmail"] = "someone.else@acme-it.example"
        again = await psa.auto_map_members(session, app_state.secrets, connection_id=connection_id, http_client=http)
        assert (again.matched, again.removed) == (0, 1)
        assert await psa.member_for_user(session, connection_id, engineer) is None

        cleared = await psa.set_member_mapping(session, user_id=owner, member_identifier=None)
        assert cleared.member_identifier is None
        assert cleared.source is None


async def test_duplicate_member_emails_are_not_guessed(
    app_state: AppState, tenant_a: Tenant, connectwise_server: FakeConnectWise, http: httpx.AsyncClient
) -> None:
    await make_connection(app_state, tenant_a, connectwise_server)
    connectwise_server.members.append({"id": 9, "identifier": "jsmith2", "firstName": "J", "lastName": "S",
                                       "primaryEmail": "engineer@acme-it.example", "inactiveFlag": False})
    async with app_state.db.session(tenant_a.account_id) as session:
        result = await psa.auto_map_members(session, app_state.secrets, http_client=http)
    assert result.matched == 1  # only the owner


async def test_mappings_without_or_with_several_connections(
    app_state: AppState, tenant_a: Tenant, connectwise_server: FakeConnectWise
) -> None:
    engineer = tenant_a.users[Role.ENGINEER]
    async with app_state.db.session(tenant_a.account_id) as session:
        listed = await psa.list_member_mappings(session)
        assert len(listed) == 5
        assert all(m.member_identifier is None and m.connection_id is None for m in listed)
        with pytest.raises(NoPSAConnection):
            await psa.set_member_mapping(session, user_id=engineer, member_identifier="jsmith")
    first = await make_connection(app_state, tenant_a, connectwise_server, name="one")
    await make_connection(app_state, tenant_a, connectwise_server, name="two")
    async with app_state.db.session(tenant_a.account_id) as session:
        with pytest.raises(ValidationFailed, match="connection_id"):
            await psa.list_member_mappings(session)
        mapping = await psa.set_member_mapping(session, user_id=engineer, member_identifier="x", connection_id=first)
        assert mapping.connection_id == first


# --- pushes ---------------------------------------------------------------------------------


def draft(user_id: uuid.UUID, hours: str = "0.25") -> TimeEntryDraft:
    return TimeEntryDraft(user_id=user_id, hours=Decimal(hours), notes="Diagnosis and fix",
                          started_at=datetime(2026, 3, 4, 9, tzinfo=UTC))


async def test_push_note_and_time_entry(
    app_state: AppState, tenant_a: Tenant, connectwise_server: FakeConnectWise, http: httpx.AsyncClient
) -> None:
    """FP-045: notes and time entries are posted to the ticket."""
    connection_id = await make_connection(app_state, tenant_a, connectwise_server)
    engineer = tenant_a.users[Role.ENGINEER]
    async with app_state.db.session(tenant_a.account_id) as session:
        await psa.set_member_mapping(session, user_id=engineer, member_identifier="jsmith")
        result = await psa.record_and_push(
            session, app_state.secrets, connection_id=connection_id, ticket_id="101", subject_type="session",
            subject_id=SESSION_ID, note_text="Resolved: replaced the toner.", flags=NoteFlags(resolution=True),
            time_entry=draft(engineer, "0.333"), http_client=http,
        )
        await session.commit()
        pushes = await psa.list_pushes(session, subject_id=SESSION_ID)
    assert (result.status, result.error, result.member_mapping_warning) == ("pushed", None, None)
    assert len(result.push_ids) == 2
    assert connectwise_server.notes[101][-1]["resolutionFlag"] is True
    entry = connectwise_server.time_entries[0]
    assert (entry["member"], entry["actualHours"], entry["chargeToId"]) == ({"identifier": "jsmith"}, 0.33, 101)
    by_kind = {p.kind: p for p in pushes}
    assert by_kind[PushKind.NOTE].status is PushStatus.PUSHED
    assert by_kind[PushKind.NOTE].external_id == str(connectwise_server.notes[101][-1]["id"])
    assert by_kind[PushKind.TIME_ENTRY].payload["hours"] == "0.33"
    assert by_kind[PushKind.TIME_ENTRY].attempts == 1


async def test_unmapped_engineer_gets_a_warning_and_no_time_entry(
    app_state: AppState, tenant_a: Tenant, connectwise_server: FakeConnectWise, http: httpx.AsyncClient
) -> None:
    connection_id = await make_connection(app_state, tenant_a, connectwise_server)
    async with app_state.db.session(tenant_a.account_id) as session:
        result = await psa.record_and_push(
            session, app_state.secrets, connection_id=connection_id, ticket_id="101", subject_type="session",
            subject_id=SESSION_ID, note_text="Escalated.", time_entry=draft(tenant_a.users[Role.LEAD]),
            http_client=http,
        )
    assert result.status == "pushed"
    assert result.member_mapping_warning is not None
    assert "0.25 hours was not logged" in result.member_mapping_warning
    assert len(result.push_ids) == 1
    assert connectwise_server.time_entries == []


async def test_no_psa(app_state: AppState, tenant_a: Tenant) -> None:
    async with app_state.db.session(tenant_a.account_id) as session:
        for connection_id, ticket_id in ((None, "1"), (uuid.uuid4(), None), (uuid.uuid4(), "")):
            result = await psa.record_and_push(
                session, app_state.secrets, connection_id=connection_id, ticket_id=ticket_id, subject_type="session",
                subject_id=SESSION_ID, note_text="x",
            )
            assert (result.status, result.push_ids) == ("no_psa", [])


async def test_failed_push_never_raises_and_retry_succeeds(
    app_state: AppState, tenant_a: Tenant, connectwise_server: FakeConnectWise, http: httpx.AsyncClient
) -> None:
    connection_id = await make_connection(app_state, tenant_a, connectwise_server)
    connectwise_server.inject(500, method="POST", body={"code": "Boom", "message": "database offline " * 30})
    async with app_state.db.session(tenant_a.account_id) as session:
        result = await psa.record_and_push(
            session, app_state.secrets, connection_id=connection_id, ticket_id="101", subject_type="session",
            subject_id=SESSION_ID, note_text="Resolved.", http_client=http,
        )
        await session.commit()
    assert result.status == "failed"
    assert result.error is not None
    assert "HTTP 500" in result.error
    assert len(result.error) <= 200
    push_id = result.push_ids[0]
    async with app_state.db.session(tenant_a.account_id) as session:
        push = await psa.get_push(session, push_id)
        assert (push.status, push.attempts, push.last_error) == (PushStatus.FAILED, 1, result.error)
        push = await psa.retry_push(session, app_state.secrets, push_id, http_client=http)
        assert (push.status, push.attempts, push.last_error) == (PushStatus.PUSHED, 2, None)
        assert push.pushed_at is not None
        with pytest.raises(PSAPushAlreadyDone):
            await psa.retry_push(session, app_state.secrets, push_id, http_client=http)
    assert len(connectwise_server.calls_to("POST", "/service/tickets/101/notes")) == 2


async def test_push_failures_of_every_kind_are_recorded(
    app_state: AppState, tenant_a: Tenant, connectwise_server: FakeConnectWise, http: httpx.AsyncClient
) -> None:
    connection_id = await make_connection(app_state, tenant_a, connectwise_server)
    async with app_state.db.session(tenant_a.account_id) as session:
        not_a_number = await psa.record_and_push(
            session, app_state.secrets, connection_id=connection_id, ticket_id="ABC-1", subject_type="session",
            subject_id=SESSION_ID, note_text="x", http_client=http,
        )
        assert not_a_number.status == "failed"
        assert "ticket ids are numbers" in (not_a_number.error or "")
        connectwise_server.inject(200, method="POST", delay_s=2)
        async with httpx.AsyncClient(timeout=0.2) as impatient:
            slow = await psa.record_and_push(
                session, app_state.secrets, connection_id=connection_id, ticket_id="101", subject_type="session",
                subject_id=SESSION_ID, note_text="x", http_client=impatient,
            )
        assert slow.status == "failed"
        assert "in time" in (slow.error or "")
        await psa.delete_connection(session, connection_id)
        inactive = await psa.record_and_push(
            session, app_state.secrets, connection_id=connection_id, ticket_id="101", subject_type="session",
            subject_id=SESSION_ID, note_text="x", http_client=http,
        )
        assert inactive.status == "failed"
        assert "inactive" in (inactive.error or "")
        retried = await psa.retry_push(session, app_state.secrets, inactive.push_ids[0], http_client=http)
        assert (retried.status, retried.attempts) == (PushStatus.FAILED, 2)


def test_note_flags_need_one_flag() -> None:
    with pytest.raises(ValueError, match="at least one"):
        NoteFlags(detail=False)
    with pytest.raises(ValueError, match="greater than 0"):
        TimeEntryDraft(user_id=uuid.uuid4(), hours=Decimal(0), started_at=datetime.now(UTC))
