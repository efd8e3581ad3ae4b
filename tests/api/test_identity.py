"""Identity endpoints: roles, tokens, problem+json errors and cross-account isolation."""

from __future__ import annotations

import httpx

from deskpilot.identity.models import Role
from tests.conftest import Tenant
from tests.tenancy import assert_invisible_to_other_account


async def test_me_with_bearer_token(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    response = await client.get("/api/v1/me", headers=tenant_a.headers(Role.LEAD))
    assert response.status_code == 200
    assert response.json()["role"] == "lead"
    assert response.headers["x-request-id"]


async def test_missing_and_bad_tokens_are_problems(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    missing = await client.get("/api/v1/me")
    assert missing.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["code"] == "authentication_required"
    wrong = await client.get("/api/v1/me", headers={"Authorization": "Bearer dp_" + "x" * 40})
    assert wrong.status_code == 401
    assert wrong.json()["code"] == "invalid_credentials"
    basic = await client.get("/api/v1/me", headers={"Authorization": "Basic abc"})
    assert basic.json()["detail"].startswith("Authorization header must be")


async def test_validation_error_names_the_field(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    response = await client.post("/api/v1/users", json={"email": "not-an-email", "name": ""},
                                 headers=tenant_a.headers(Role.ADMIN))
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_failed"
    fields = {e["field"] for e in body["errors"]}
    assert {"email", "name"} <= fields


async def test_engineer_cannot_create_users(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    response = await client.post("/api/v1/users", json={"email": "new@acme.example", "name": "New"},
                                 headers=tenant_a.headers(Role.ENGINEER))
    assert response.status_code == 403
    assert "'admin'" in response.json()["detail"]


async def test_admin_creates_user_and_duplicate_email_conflicts(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    body = {"email": "New.Person@acme.example", "name": "New Person", "role": "engineer"}
    created = await client.post("/api/v1/users", json=body, headers=tenant_a.headers(Role.ADMIN))
    assert created.status_code == 201
    assert created.json()["email"] == "new.person@acme.example"
    again = await client.post("/api/v1/users", json=body, headers=tenant_a.headers(Role.ADMIN))
    assert again.status_code == 409
    assert again.json()["code"] == "email_taken"


async def test_admin_cannot_mint_owner(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    body = {"email": "boss@acme.example", "name": "Boss", "role": "owner"}
    response = await client.post("/api/v1/users", json=body, headers=tenant_a.headers(Role.ADMIN))
    assert response.status_code == 403


async def test_last_owner_cannot_be_demoted(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    owner_id = tenant_a.users[Role.OWNER]
    response = await client.patch(f"/api/v1/users/{owner_id}", json={"role": "admin"}, headers=tenant_a.headers())
    assert response.status_code == 409
    assert response.json()["code"] == "last_owner"


async def test_token_lifecycle(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    created = await client.post("/api/v1/tokens", json={"name": "ci"}, headers=tenant_a.headers(Role.ENGINEER))
    assert created.status_code == 201
    secret = created.json()["secret"]
    token_id = created.json()["id"]
    me = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200
    listed = await client.get("/api/v1/tokens", headers=tenant_a.headers(Role.ENGINEER))
    entry = next(t for t in listed.json() if t["id"] == token_id)
    assert "secret" not in entry
    assert entry["last_used_at"] is not None
    revoked = await client.delete(f"/api/v1/tokens/{token_id}", headers=tenant_a.headers(Role.ENGINEER))
    assert revoked.status_code == 200
    after = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert after.status_code == 401


async def test_engineer_cannot_revoke_others_token(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    listed = await client.get("/api/v1/tokens", headers=tenant_a.headers(Role.OWNER))
    lead_token = next(t for t in listed.json() if t["user_id"] == str(tenant_a.users[Role.LEAD]))
    response = await client.delete(f"/api/v1/tokens/{lead_token['id']}", headers=tenant_a.headers(Role.ENGINEER))
    assert response.status_code == 403


async def test_resources_invisible_across_accounts(
    client: httpx.AsyncClient, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    team = f"/api/v1/teams/{tenant_a.team_id}"
    user = f"/api/v1/users/{tenant_a.users[Role.ENGINEER]}"
    created = await client.post("/api/v1/clients", json={"name": "Initech"}, headers=tenant_a.headers())
    client_url = f"/api/v1/clients/{created.json()['id']}"
    for url in (team, user, client_url):
        await assert_invisible_to_other_account(
            client, url, owner_headers=tenant_a.headers(), other_headers=tenant_b.headers()
        )
    await assert_invisible_to_other_account(
        client, user, owner_headers=tenant_a.headers(), other_headers=tenant_b.headers(),
        methods=("PATCH",), json={"name": "Hijacked"},
    )
    b_users = await client.get("/api/v1/users", headers=tenant_b.headers())
    assert {u["email"].split("@")[1] for u in b_users.json()} == {"globex-support.example"}
    listed = await client.get("/api/v1/tokens", headers=tenant_a.headers())
    token_id = listed.json()[0]["id"]
    stolen = await client.delete(f"/api/v1/tokens/{token_id}", headers=tenant_b.headers())
    assert stolen.status_code == 404


async def test_health_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json()["status"] == "ok"
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"
    metrics = await client.get("/metrics")
    assert "deskpilot_http_requests_total" in metrics.text


async def test_unknown_route_is_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/nope")
    assert response.status_code == 404
    assert response.json()["detail"] == "no route for GET /api/v1/nope"
