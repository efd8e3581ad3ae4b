"""Console pages: sections for every role, profile, team and user management, and API tokens."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from deskpilot.api.state import AppState
from deskpilot.events import audit
from deskpilot.identity import service as identity
from deskpilot.identity.models import Role
from deskpilot.web.nav import SECTIONS, Section
from tests.conftest import Tenant
from tests.web.conftest import PASSWORD, email_of, login

ALL_ROLES = list(Role)
ADMIN_FORMS = ('action="/settings/team/users"', 'action="/settings/team/teams"')


def _token_secret(html: str) -> str:
    found = re.search(r'id="new-token-secret"[^>]*value="(dp_[^"]+)"', html)
    assert found, "no token secret on the page"
    return found.group(1)


# --- layout and sections ------------------------------------------------------------------


@pytest.mark.parametrize("section", SECTIONS, ids=[s.key for s in SECTIONS])
async def test_every_section_renders_in_the_layout(
    client: httpx.AsyncClient, tenant_a: Tenant, section: Section
) -> None:
    await login(client, Role.VIEWER)
    response = await client.get(section.href, follow_redirects=True)
    assert response.status_code == 200
    html = response.text
    assert re.search(rf'<a href="{section.href}"\s+class="active" aria-current="page">', html)
    assert html.count('aria-current="page"') == (2 if section.key == "settings" else 1)
    for landmark in ("<header", '<nav id="site-nav"', '<main id="main"', 'class="skip-link"'):
        assert landmark in html
    for other in SECTIONS:
        assert f">{other.label}</span>" in html
    assert "Acme IT" in html
    assert "Acme IT Viewer" in html
    assert 'id="bell-count"' in html
    assert 'aria-live="polite"' in html


async def test_planned_sections_say_what_they_need(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    await login(client, Role.ENGINEER)
    agents = await client.get("/agents")
    assert "What will appear here" in agents.text
    assert "What it needs" in agents.text
    assert "No LLM provider is configured" in agents.text
    inbox = await client.get("/inbox")
    assert "LLM provider" not in inbox.text.split("What it needs")[1].split("</ul>")[0]


async def test_dashboard_shows_name_role_account_and_team(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    await login(client, Role.LEAD)
    html = (await client.get("/")).text
    assert "Welcome, Acme IT Lead" in html
    assert "lead@acme-it.example" in html
    assert 'role-badge role-lead">Lead<' in html
    assert "Service Desk" in html


# --- settings by role -------------------------------------------------------------------------


@pytest.mark.parametrize("role", ALL_ROLES, ids=[r.value for r in ALL_ROLES])
async def test_settings_pages_render_for_every_role(client: httpx.AsyncClient, tenant_a: Tenant, role: Role) -> None:
    await login(client, role)
    for path in ("/settings/profile", "/settings/team", "/settings/tokens"):
        response = await client.get(path)
        assert response.status_code == 200, path
    team = (await client.get("/settings/team")).text
    is_admin = role.at_least(Role.ADMIN)
    for form in ADMIN_FORMS:
        assert (form in team) is is_admin
    assert ('name="role" form="user-form-' in team) is is_admin
    assert (">Owner</option>" in team) is (role is Role.OWNER)
    assert "engineer@acme-it.example" in team
    tokens = (await client.get("/settings/tokens")).text
    assert ("All tokens in this account" in tokens) is is_admin
    assert tokens.count('id="token-row-') == (5 if is_admin else 1)
    assert (await client.get("/settings", follow_redirects=False)).headers["location"] == "/settings/profile"


@pytest.mark.parametrize("role", [Role.VIEWER, Role.ENGINEER, Role.LEAD])
async def test_below_admin_cannot_post_admin_forms(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState, role: Role
) -> None:
    csrf = await login(client, role)
    created = await client.post("/settings/team/users", data={
        "csrf_token": csrf, "email": "sneaky@acme-it.example", "name": "Sneaky", "role": "owner",
        "password": "long-enough-password"})
    assert created.status_code == 403
    assert "needs the &#39;admin&#39; role" in created.text
    team = await client.post("/settings/team/teams", data={"csrf_token": csrf, "name": "Shadow"})
    assert team.status_code == 403
    promoted = await client.post(f"/settings/team/users/{tenant_a.users[role]}",
                                 data={"csrf_token": csrf, "role": "admin"})
    assert promoted.status_code == 403
    async with app_state.db.session(tenant_a.account_id) as session:
        assert len(await identity.list_users(session)) == 5
        assert (await identity.get_user(session, tenant_a.users[role])).role is role


# --- team and users ---------------------------------------------------------------------------


async def test_admin_adds_user_who_can_then_sign_in(client: httpx.AsyncClient, tenant_a: Tenant,
                                                    app_state: AppState) -> None:
    csrf = await login(client, Role.ADMIN)
    response = await client.post("/settings/team/users", data={
        "csrf_token": csrf, "email": "New.Tech@acme-it.example", "name": "New Tech", "role": "engineer",
        "team_id": str(tenant_a.team_id), "password": "a-fine-long-password"})
    assert response.status_code == 303
    assert response.headers["location"] == "/settings/team?notice=user-created"
    page = await client.get(response.headers["location"])
    assert "User added." in page.text
    assert "new.tech@acme-it.example" in page.text
    async with app_state.db.session(tenant_a.account_id) as session:
        events = await audit.list_events(session, action="user.create")
    assert events[0].details == {"role": "engineer"}
    client.cookies.clear()
    signed_in = await client.post("/login", data={"email": "new.tech@acme-it.example",
                                                  "password": "a-fine-long-password"})
    assert signed_in.status_code == 303


@pytest.mark.parametrize(
    ("fields", "status", "message"),
    [
        ({"email": "engineer@acme-it.example"}, 409, "A user with email &#39;engineer@acme-it.example&#39; already"),
        ({"email": "not-an-email"}, 422, "Email: "),
        ({"name": ""}, 422, "Name: "),
        ({"password": "short"}, 422, "Password: "),
        ({"password": ""}, 422, "Set an initial password"),
        ({"role": "owner"}, 403, "Only an owner can add another owner."),
    ],
)
async def test_add_user_errors_show_inline_and_keep_input(
    client: httpx.AsyncClient, tenant_a: Tenant, fields: dict[str, str], status: int, message: str
) -> None:
    csrf = await login(client, Role.ADMIN)
    data = {"csrf_token": csrf, "email": "someone@acme-it.example", "name": "Someone Typed", "role": "engineer",
            "password": "a-fine-long-password"} | fields
    response = await client.post("/settings/team/users", data=data)
    assert response.status_code == status
    assert message in response.text
    assert 'role="alert" id="add-user-error"' in response.text
    assert "Traceback" not in response.text
    if fields.get("name") != "":
        assert 'value="Someone Typed"' in response.text
    assert "a-fine-long-password" not in response.text


async def test_owner_can_add_an_owner(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    csrf = await login(client, Role.OWNER)
    response = await client.post("/settings/team/users", data={
        "csrf_token": csrf, "email": "second.owner@acme-it.example", "name": "Second Owner", "role": "owner",
        "password": "a-fine-long-password"})
    assert response.status_code == 303


async def test_admin_changes_role_and_team_with_htmx(client: httpx.AsyncClient, tenant_a: Tenant,
                                                     app_state: AppState) -> None:
    csrf = await login(client, Role.ADMIN)
    engineer = tenant_a.users[Role.ENGINEER]
    response = await client.post(f"/settings/team/users/{engineer}", data={"role": "lead", "team_id": ""},
                                 headers={"HX-Request": "true", "X-CSRF-Token": csrf})
    assert response.status_code == 200
    assert response.text.lstrip().startswith(f'<tr id="user-row-{engineer}"')
    assert 'role="status">Saved.</p>' in response.text
    assert '<option value="lead" selected>' in response.text
    async with app_state.db.session(tenant_a.account_id) as session:
        user = await identity.get_user(session, engineer)
        assert (user.role, user.team_id) == (Role.LEAD, None)
        events = await audit.list_events(session, action="user.update")
    assert events[0].details == {"role": "lead", "team_id": None}


async def test_plain_form_user_update_redirects(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    csrf = await login(client, Role.ADMIN)
    response = await client.post(f"/settings/team/users/{tenant_a.users[Role.VIEWER]}",
                                 data={"csrf_token": csrf, "role": "engineer", "team_id": str(tenant_a.team_id)})
    assert response.status_code == 303
    assert response.headers["location"] == "/settings/team?notice=user-updated"


async def test_admin_deactivates_and_reactivates_a_user(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    csrf = await login(client, Role.ADMIN)
    viewer = tenant_a.users[Role.VIEWER]
    headers = {"HX-Request": "true", "X-CSRF-Token": csrf}
    off = await client.post(f"/settings/team/users/{viewer}/active", data={"active": "false"}, headers=headers)
    assert "Deactivated" in off.text
    assert "Reactivate" in off.text
    client.cookies.clear()
    assert (await client.post("/login", data={"email": email_of(Role.VIEWER), "password": PASSWORD})).status_code == 401
    csrf = await login(client, Role.ADMIN)
    on = await client.post(f"/settings/team/users/{viewer}/active", data={"active": "true"},
                           headers={"HX-Request": "true", "X-CSRF-Token": csrf})
    assert "Active" in on.text
    assert "Deactivate" in on.text


async def test_admin_cannot_touch_owner_or_deactivate_self(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    csrf = await login(client, Role.ADMIN)
    headers = {"HX-Request": "true", "X-CSRF-Token": csrf}
    owner = await client.post(f"/settings/team/users/{tenant_a.users[Role.OWNER]}", data={"role": "viewer"},
                              headers=headers)
    assert owner.status_code == 403
    assert "Only an owner can change another owner." in owner.text
    self_off = await client.post(f"/settings/team/users/{tenant_a.users[Role.ADMIN]}/active",
                                 data={"active": "false"}, headers=headers)
    assert self_off.status_code == 409
    assert "You cannot deactivate your own account." in self_off.text
    promote = await client.post(f"/settings/team/users/{tenant_a.users[Role.LEAD]}", data={"role": "owner"},
                                headers=headers)
    assert promote.status_code == 403


async def test_last_owner_cannot_demote_themselves(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    csrf = await login(client, Role.OWNER)
    response = await client.post(f"/settings/team/users/{tenant_a.users[Role.OWNER]}",
                                 data={"csrf_token": csrf, "role": "admin"})
    assert response.status_code == 409
    assert "The account must keep at least one active owner" in response.text


async def test_user_of_another_account_is_not_found(client: httpx.AsyncClient, tenant_a: Tenant,
                                                    tenant_b: Tenant, app_state: AppState) -> None:
    csrf = await login(client, Role.ADMIN, slug="globex-support")
    response = await client.post(f"/settings/team/users/{tenant_a.users[Role.ENGINEER]}",
                                 data={"csrf_token": csrf, "role": "viewer"})
    assert response.status_code == 404
    assert "not found" in response.text
    assert "engineer@acme-it.example" not in (await client.get("/settings/team")).text
    async with app_state.db.session(tenant_a.account_id) as session:
        assert (await identity.get_user(session, tenant_a.users[Role.ENGINEER])).role is Role.ENGINEER


async def test_admin_creates_team_and_duplicate_is_inline_error(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    csrf = await login(client, Role.ADMIN)
    created = await client.post("/settings/team/teams", data={"csrf_token": csrf, "name": "Projects"})
    assert created.status_code == 303
    page = await client.get(created.headers["location"])
    assert "Team created." in page.text
    assert "<span>Projects</span>" in page.text
    duplicate = await client.post("/settings/team/teams", data={"csrf_token": csrf, "name": "Projects"})
    assert duplicate.status_code == 409
    assert "A team named &#39;Projects&#39; already exists" in duplicate.text
    empty = await client.post("/settings/team/teams", data={"csrf_token": csrf, "name": "  "})
    assert empty.status_code == 422


# --- profile ----------------------------------------------------------------------------------


async def test_change_own_password(client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState) -> None:
    csrf = await login(client, Role.ENGINEER)

    async def change(current: str, new: str, confirm: str) -> httpx.Response:
        return await client.post("/settings/profile/password", data={
            "csrf_token": csrf, "current_password": current, "new_password": new, "confirm_password": confirm})

    wrong = await change("nope", "brand-new-password", "brand-new-password")
    assert wrong.status_code == 422
    assert "Your current password is wrong." in wrong.text
    mismatch = await change(PASSWORD, "brand-new-password", "brand-new-passwort")
    assert mismatch.status_code == 422
    assert "differ" in mismatch.text
    weak = await change(PASSWORD, "short", "short")
    assert weak.status_code == 422
    assert "Password must have at least 10 characters" in weak.text
    done = await change(PASSWORD, "brand-new-password", "brand-new-password")
    assert done.status_code == 303
    assert "Your password was changed." in (await client.get(done.headers["location"])).text
    client.cookies.clear()
    old = await client.post("/login", data={"email": email_of(Role.ENGINEER), "password": PASSWORD})
    assert old.status_code == 401
    new = await client.post("/login", data={"email": email_of(Role.ENGINEER), "password": "brand-new-password"})
    assert new.status_code == 303
    async with app_state.db.session(tenant_a.account_id) as session:
        assert await audit.list_events(session, action="user.password_change")


# --- API tokens -------------------------------------------------------------------------------


async def test_token_secret_is_shown_once_and_works(client: httpx.AsyncClient, tenant_a: Tenant,
                                                    app_state: AppState) -> None:
    csrf = await login(client, Role.ENGINEER)
    response = await client.post("/settings/tokens", data={"csrf_token": csrf, "name": "PSA sync", "lifetime": "30"})
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    assert "This is the only time the token" in response.text
    secret = _token_secret(response.text)
    listing = await client.get("/settings/tokens")
    assert secret not in listing.text
    assert secret[:10] in listing.text
    me = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.json()["email"] == email_of(Role.ENGINEER)
    async with app_state.db.session(tenant_a.account_id) as session:
        tokens = await identity.list_api_tokens(session, user_id=tenant_a.users[Role.ENGINEER])
        events = await audit.list_events(session, action="token.create")
    created = next(t for t in tokens if t.name == "PSA sync")
    assert created.expires_at is not None
    assert events[0].resource_id == str(created.id)


async def test_token_name_is_required(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    csrf = await login(client, Role.ENGINEER)
    response = await client.post("/settings/tokens", data={"csrf_token": csrf, "name": " "})
    assert response.status_code == 422
    assert 'id="create-token-error"' in response.text
    assert "new-token-secret" not in response.text


async def test_revoke_own_token_with_htmx(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    csrf = await login(client, Role.ENGINEER)
    secret = _token_secret((await client.post("/settings/tokens", data={"csrf_token": csrf, "name": "ci"})).text)
    token_id = (await client.get("/api/v1/tokens", headers={"Authorization": f"Bearer {secret}"})).json()[0]["id"]
    response = await client.post(f"/settings/tokens/{token_id}/revoke",
                                 headers={"HX-Request": "true", "X-CSRF-Token": csrf})
    assert response.status_code == 200
    assert response.text.lstrip().startswith(f'<tr id="token-row-{token_id}"')
    assert "Revoked" in response.text
    assert "Yes, revoke" not in response.text
    assert (await client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})).status_code == 401


async def test_plain_form_revoke_redirects_with_notice(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    csrf = await login(client, Role.VIEWER)
    page = (await client.get("/settings/tokens")).text
    token_id = re.search(r'id="token-row-([0-9a-f-]+)"', page).group(1)  # type: ignore[union-attr]
    response = await client.post(f"/settings/tokens/{token_id}/revoke", data={"csrf_token": csrf})
    assert response.headers["location"] == "/settings/tokens?notice=token-revoked"
    assert "API token revoked." in (await client.get(response.headers["location"])).text


async def test_only_admins_revoke_other_users_tokens(client: httpx.AsyncClient, tenant_a: Tenant,
                                                     app_state: AppState) -> None:
    async with app_state.db.session(tenant_a.account_id) as session:
        lead_token = (await identity.list_api_tokens(session, user_id=tenant_a.users[Role.LEAD]))[0]
    csrf = await login(client, Role.ENGINEER)
    refused = await client.post(f"/settings/tokens/{lead_token.id}/revoke", data={"csrf_token": csrf})
    assert refused.status_code == 403
    assert "Only an admin can revoke another user&#39;s token." in refused.text
    csrf = await login(client, Role.ADMIN)
    page = (await client.get("/settings/tokens")).text
    assert "Acme IT Lead" in page
    done = await client.post(f"/settings/tokens/{lead_token.id}/revoke", data={"csrf_token": csrf})
    assert done.status_code == 303


async def test_token_of_another_account_cannot_be_revoked(client: httpx.AsyncClient, tenant_a: Tenant,
                                                          tenant_b: Tenant, app_state: AppState) -> None:
    async with app_state.db.session(tenant_a.account_id) as session:
        victim = (await identity.list_api_tokens(session, user_id=tenant_a.users[Role.OWNER]))[0]
    csrf = await login(client, Role.OWNER, slug="globex-support")
    assert str(victim.id) not in (await client.get("/settings/tokens")).text
    response = await client.post(f"/settings/tokens/{victim.id}/revoke", data={"csrf_token": csrf})
    assert response.status_code == 404
    assert "not found" in response.text
    async with app_state.db.session(tenant_a.account_id) as session:
        assert (await identity.get_api_token(session, victim.id)).revoked_at is None
    assert (await client.post(f"/settings/tokens/{uuid.uuid4()}/revoke", data={"csrf_token": csrf})).status_code == 404
