"""PSA endpoints: roles, secrets never in responses, cross-account 404s, tickets, mappings and the retry flow."""

from __future__ import annotations

import uuid

import httpx

from deskpilot.api.state import AppState
from deskpilot.identity.models import Role
from deskpilot.psa import service as psa
from tests.conftest import Tenant
from tests.fakes.connectwise_server import PRIVATE_KEY, PUBLIC_KEY, FakeConnectWise
from tests.tenancy import assert_invisible_to_other_account

BASE = "/api/v1/psa"


def body(server: FakeConnectWise, name: str = "ConnectWise") -> dict[str, object]:
    return {"name": name, "kind": "connectwise", "settings": server.settings(), "credentials": server.credentials()}


async def create(client: httpx.AsyncClient, tenant: Tenant, server: FakeConnectWise) -> str:
    response = await client.post(f"{BASE}/connections", json=body(server), headers=tenant.headers(Role.ADMIN))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def assert_no_secrets(response: httpx.Response) -> None:
    assert PRIVATE_KEY not in response.text
    assert PUBLIC_KEY not in response.text


async def test_create_and_read_never_show_secrets(
    client: httpx.AsyncClient, tenant_a: Tenant, connectwise_server: FakeConnectWise
) -> None:
    created = await client.post(f"{BASE}/connections", json=body(connectwise_server), headers=tenant_a.headers())
    assert created.status_code == 201
    assert_no_secrets(created)
    data = created.json()
    assert data["credentials"] == {"public_key": "…AB12", "has_private_key": True}
    assert data["settings"]["site"] == connectwise_server.site
    assert data["settings"]["api_version"] == "2022.1"
    for url in (f"{BASE}/connections", f"{BASE}/connections/{data['id']}"):
        response = await client.get(url, headers=tenant_a.headers(Role.ENGINEER))
        assert response.status_code == 200
        assert_no_secrets(response)
    audit = await client.get("/api/v1/audit-events", headers=tenant_a.headers())
    assert "psa_connection.create" in audit.text
    assert_no_secrets(audit)


async def test_webhook_connection(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    secret = "whsec-abcdefghijklmnop-1234"
    created = await client.post(
        f"{BASE}/connections",
        json={"name": "Halo bridge", "kind": "webhook", "settings": {"url": "https://hooks.example/psa"},
              "credentials": {"secret": secret}},
        headers=tenant_a.headers(Role.ADMIN),
    )
    assert created.status_code == 201
    assert created.json()["credentials"] == {"has_secret": True}
    assert secret not in created.text
    tickets = await client.get(f"{BASE}/connections/{created.json()['id']}/tickets?q=x",
                               headers=tenant_a.headers(Role.ENGINEER))
    assert tickets.status_code == 501
    assert tickets.json()["code"] == "psa_not_supported"


async def test_validation_errors_do_not_echo_secrets(
    client: httpx.AsyncClient, tenant_a: Tenant, connectwise_server: FakeConnectWise
) -> None:
    bad = body(connectwise_server)
    bad["credentials"] = {"public_key": "p", "private_key": PRIVATE_KEY * 5}
    response = await client.post(f"{BASE}/connections", json=bad, headers=tenant_a.headers(Role.ADMIN))
    assert response.status_code == 422
    assert PRIVATE_KEY not in response.text
    wrong_kind = await client.post(f"{BASE}/connections", json={**bad, "kind": "autotask"},
                                   headers=tenant_a.headers(Role.ADMIN))
    assert wrong_kind.status_code == 422


async def test_roles(client: httpx.AsyncClient, tenant_a: Tenant, connectwise_server: FakeConnectWise) -> None:
    engineer = tenant_a.headers(Role.ENGINEER)
    denied = await client.post(f"{BASE}/connections", json=body(connectwise_server), headers=engineer)
    assert denied.status_code == 403
    connection_id = await create(client, tenant_a, connectwise_server)
    for method, url in (("PATCH", f"/connections/{connection_id}"), ("DELETE", f"/connections/{connection_id}"),
                        ("POST", f"/connections/{connection_id}/test"), ("GET", "/member-mappings"),
                        ("POST", "/member-mappings/auto")):
        response = await client.request(method, BASE + url, headers=engineer, json={} if method == "PATCH" else None)
        assert response.status_code == 403, (method, url)
    viewer = await client.get(f"{BASE}/connections", headers=tenant_a.headers(Role.VIEWER))
    assert viewer.status_code == 403


async def test_patch_delete_and_test(
    client: httpx.AsyncClient, tenant_a: Tenant, connectwise_server: FakeConnectWise, app_state: AppState
) -> None:
    connection_id = await create(client, tenant_a, connectwise_server)
    admin = tenant_a.headers(Role.ADMIN)
    tested = await client.post(f"{BASE}/connections/{connection_id}/test", headers=admin)
    assert tested.status_code == 200
    assert tested.json()["ok"] is True
    patched = await client.patch(
        f"{BASE}/connections/{connection_id}",
        json={"name": "CW prod", "credentials": {"private_key": "a-wrong-private-key"}},
        headers=admin,
    )
    assert patched.status_code == 200
    assert patched.json()["name"] == "CW prod"
    assert patched.json()["last_test_ok"] is None
    assert "a-wrong-private-key" not in patched.text
    failed = await client.post(f"{BASE}/connections/{connection_id}/test", headers=admin)
    assert failed.json()["ok"] is False
    assert "HTTP 401" in failed.json()["error"]
    shown = (await client.get(f"{BASE}/connections/{connection_id}", headers=admin)).json()
    assert shown["last_test_ok"] is False
    assert "HTTP 401" in shown["last_error"]
    audit = await client.get("/api/v1/audit-events", headers=tenant_a.headers())
    assert "credentials.private_key" in audit.text
    assert "a-wrong-private-key" not in audit.text

    deleted = await client.delete(f"{BASE}/connections/{connection_id}", headers=admin)
    assert deleted.status_code == 200
    assert deleted.json()["is_active"] is False
    assert (await client.get(f"{BASE}/connections", headers=admin)).json() == []
    listed = await client.get(f"{BASE}/connections?include_inactive=true", headers=admin)
    assert [c["id"] for c in listed.json()] == [connection_id]
    inactive = await client.post(f"{BASE}/connections/{connection_id}/test", headers=admin)
    assert inactive.status_code == 409
    assert inactive.json()["code"] == "psa_connection_inactive"


async def test_tickets(client: httpx.AsyncClient, tenant_a: Tenant, connectwise_server: FakeConnectWise) -> None:
    connection_id = await create(client, tenant_a, connectwise_server)
    engineer = tenant_a.headers(Role.ENGINEER)
    found = await client.get(f"{BASE}/connections/{connection_id}/tickets", params={"q": "printer"},
                             headers=engineer)
    assert found.status_code == 200
    assert [t["id"] for t in found.json()] == ["101"]
    context = await client.get(f"{BASE}/connections/{connection_id}/tickets/101", headers=engineer)
    assert context.status_code == 200
    assert context.json()["company"]["identifier"] == "ACME"
    assert context.json()["contact"]["email"] == "jane@acme.example"
    missing = await client.get(f"{BASE}/connections/{connection_id}/tickets/999", headers=engineer)
    assert missing.status_code == 404
    assert missing.json()["code"] == "psa_not_found"
    connectwise_server.inject(503, path="/service/tickets")
    down = await client.get(f"{BASE}/connections/{connection_id}/tickets", params={"q": "x"}, headers=engineer)
    assert down.status_code == 503
    assert down.json()["code"] == "psa_unavailable"


async def test_member_mappings(
    client: httpx.AsyncClient, tenant_a: Tenant, connectwise_server: FakeConnectWise
) -> None:
    admin = tenant_a.headers(Role.ADMIN)
    empty = await client.get(f"{BASE}/member-mappings", headers=admin)
    assert len(empty.json()) == 5
    assert {m["member_identifier"] for m in empty.json()} == {None}
    await create(client, tenant_a, connectwise_server)
    owner = tenant_a.users[Role.OWNER]
    put = await client.put(f"{BASE}/member-mappings/{owner}", json={"member_identifier": "boss"}, headers=admin)
    assert put.status_code == 200
    assert put.json()["source"] == "manual"
    auto = await client.post(f"{BASE}/member-mappings/auto", headers=admin)
    assert auto.status_code == 200
    assert (auto.json()["matched"], auto.json()["manual_kept"]) == (1, 1)
    listed = {m["user_id"]: m for m in (await client.get(f"{BASE}/member-mappings", headers=admin)).json()}
    assert len(listed) == 5
    assert listed[str(tenant_a.users[Role.ENGINEER])]["member_identifier"] == "jsmith"
    assert listed[str(owner)]["member_identifier"] == "boss"
    single = await client.get(f"{BASE}/member-mappings/{owner}", headers=admin)
    assert single.json()["member_identifier"] == "boss"
    cleared = await client.put(f"{BASE}/member-mappings/{owner}", json={"member_identifier": None}, headers=admin)
    assert cleared.json()["member_identifier"] is None
    unknown = await client.put(f"{BASE}/member-mappings/{uuid.uuid4()}", json={"member_identifier": "x"},
                               headers=admin)
    assert unknown.status_code == 404


async def test_retry_flow(
    client: httpx.AsyncClient, tenant_a: Tenant, tenant_b: Tenant, connectwise_server: FakeConnectWise,
    app_state: AppState,
) -> None:
    connection_id = uuid.UUID(await create(client, tenant_a, connectwise_server))
    subject_id = uuid.uuid4()
    connectwise_server.inject(500, method="POST", path="/service/tickets/101/notes")
    async with app_state.db.session(tenant_a.account_id) as session:
        result = await psa.record_and_push(
            session, app_state.secrets, connection_id=connection_id, ticket_id="101", subject_type="session",
            subject_id=subject_id, note_text="Resolved: new toner.",
        )
        await session.commit()
    assert result.status == "failed"
    engineer = tenant_a.headers(Role.ENGINEER)
    listed = await client.get(f"{BASE}/pushes", params={"subject_id": str(subject_id)}, headers=engineer)
    assert [(p["status"], p["attempts"]) for p in listed.json()] == [("failed", 1)]
    push_id = listed.json()[0]["id"]
    assert listed.json()[0]["payload"]["text"] == "Resolved: new toner."

    other = await client.post(f"{BASE}/pushes/{push_id}/retry", headers=tenant_b.headers())
    assert other.status_code == 404
    retried = await client.post(f"{BASE}/pushes/{push_id}/retry", headers=engineer)
    assert retried.status_code == 200
    assert (retried.json()["status"], retried.json()["attempts"], retried.json()["last_error"]) == ("pushed", 2, None)
    assert retried.json()["external_id"] == str(connectwise_server.notes[101][-1]["id"])
    again = await client.post(f"{BASE}/pushes/{push_id}/retry", headers=engineer)
    assert again.status_code == 409
    assert again.json()["code"] == "psa_push_already_done"
    failed_only = await client.get(f"{BASE}/pushes", params={"status": "failed"}, headers=engineer)
    assert failed_only.json() == []
    assert (await client.get(f"{BASE}/pushes", headers=tenant_b.headers())).json() == []


async def test_every_resource_is_invisible_to_other_accounts(
    client: httpx.AsyncClient, tenant_a: Tenant, tenant_b: Tenant, connectwise_server: FakeConnectWise,
    app_state: AppState,
) -> None:
    connection_id = await create(client, tenant_a, connectwise_server)
    owner_a, owner_b = tenant_a.headers(), tenant_b.headers()
    await assert_invisible_to_other_account(
        client, f"{BASE}/connections/{connection_id}", owner_headers=owner_a, other_headers=owner_b,
        methods=("GET", "PATCH", "DELETE"), json={"name": "hijacked", "credentials": {"private_key": "mine-now"}},
    )
    tickets = f"{BASE}/connections/{connection_id}/tickets"
    for url in (f"{tickets}?q=printer", f"{tickets}/101"):
        await assert_invisible_to_other_account(client, url, owner_headers=owner_a, other_headers=owner_b)
    user_id = tenant_a.users[Role.ENGINEER]
    await assert_invisible_to_other_account(
        client, f"{BASE}/member-mappings/{user_id}", owner_headers=owner_a, other_headers=owner_b,
        methods=("GET", "PUT"), json={"member_identifier": "intruder"},
    )
    foreign = await client.get(f"{BASE}/member-mappings", params={"connection_id": connection_id}, headers=owner_b)
    assert foreign.status_code == 404
    foreign_auto = await client.post(f"{BASE}/member-mappings/auto", params={"connection_id": connection_id},
                                     headers=owner_b)
    assert foreign_auto.status_code == 404

    before = (await client.get(f"{BASE}/connections/{connection_id}", headers=owner_a)).json()
    tested = await client.post(f"{BASE}/connections/{connection_id}/test", headers=owner_b)
    assert tested.status_code == 404
    assert (await client.get(f"{BASE}/connections/{connection_id}", headers=owner_a)).json() == before

    async with app_state.db.session(tenant_a.account_id) as session:
        result = await psa.record_and_push(
            session, app_state.secrets, connection_id=uuid.UUID(connection_id), ticket_id="101",
            subject_type="session", subject_id=uuid.uuid4(), note_text="x",
        )
        await session.commit()
    await assert_invisible_to_other_account(
        client, f"{BASE}/pushes/{result.push_ids[0]}", owner_headers=owner_a, other_headers=owner_b
    )
    assert connectwise_server.calls_to("GET", "/system/info") == []  # the other account's test call never left
