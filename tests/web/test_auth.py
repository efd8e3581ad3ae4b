"""Console sign-in, sign-out, login redirects and CSRF protection over HTTP."""

from __future__ import annotations

import httpx
import pytest

from deskpilot.api.state import AppState
from deskpilot.events import audit
from deskpilot.identity import service as identity
from deskpilot.identity.models import Role
from deskpilot.security.throttle import FailureWindow
from tests.conftest import Tenant
from tests.web.conftest import PASSWORD, email_of, login


async def test_pages_redirect_to_login_with_next_when_signed_out(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    response = await client.get("/settings/tokens?tab=1")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/settings/tokens%3Ftab%3D1"
    assert (await client.get("/")).headers["location"] == "/login"


async def test_htmx_request_without_session_gets_a_client_redirect(client: httpx.AsyncClient) -> None:
    headers = {"HX-Request": "true", "HX-Current-URL": "http://testserver/settings/team?x=1"}
    response = await client.get("/notifications/panel", headers=headers)
    assert response.status_code == 204
    assert response.headers["hx-redirect"] == "/login?next=/settings/team%3Fx%3D1"
    bare = await client.post("/notifications/read", headers={"HX-Request": "true"})
    assert bare.headers["hx-redirect"] == "/login"


async def test_login_page_is_an_accessible_form(client: httpx.AsyncClient) -> None:
    response = await client.get("/login")
    assert response.status_code == 200
    html = response.text
    assert '<label for="email">' in html
    assert 'id="email"' in html
    assert '<label for="password">' in html
    assert 'type="password"' in html
    assert '<main id="main"' in html
    assert 'class="skip-link"' in html
    assert "default-src 'self'" in response.headers["content-security-policy"]


async def test_login_sets_a_hardened_cookie_and_redirects(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    response = await client.post("/login", data={"email": "Owner@Acme-IT.example ", "password": PASSWORD,
                                                  "next": "/settings/team"})
    assert response.status_code == 303
    assert response.headers["location"] == "/settings/team"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{app_state.settings.security.session_cookie}=")
    lowered = cookie.lower()
    assert "httponly" in lowered
    assert "samesite=lax" in lowered
    assert "path=/" in lowered
    assert f"max-age={app_state.settings.security.session_max_age_s}" in lowered
    assert "secure" not in lowered.replace("samesite", "")
    dashboard = await client.get("/")
    assert dashboard.status_code == 200
    assert "Welcome, Acme IT Owner" in dashboard.text
    async with app_state.db.session(tenant_a.account_id) as session:
        events = await audit.list_events(session, action="user.login")
    assert [e.resource_id for e in events] == [str(tenant_a.users[Role.OWNER])]


async def test_cookie_is_secure_when_configured(client: httpx.AsyncClient, tenant_a: Tenant,
                                                app_state: AppState) -> None:
    app_state.settings.security.cookie_secure = True
    response = await client.post("/login", data={"email": email_of(Role.VIEWER), "password": PASSWORD})
    assert "; secure" in response.headers["set-cookie"].lower()


async def test_wrong_password_rerenders_form_with_error_and_is_audited(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    response = await client.post("/login", data={"email": email_of(Role.LEAD), "password": "wrong-password!",
                                                  "next": "/pilot"})
    assert response.status_code == 401
    assert "The email address or password is wrong." in response.text
    assert f'value="{email_of(Role.LEAD)}"' in response.text
    assert 'name="next" value="/pilot"' in response.text
    assert "set-cookie" not in response.headers
    async with app_state.db.session(tenant_a.account_id) as session:
        events = await audit.list_events(session, action="user.login_failed")
    assert len(events) == 1
    assert events[0].resource_id == str(tenant_a.users[Role.LEAD])
    assert events[0].actor_user_id is None


async def test_unknown_email_and_empty_form_are_refused(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    unknown = await client.post("/login", data={"email": "nobody@acme-it.example", "password": PASSWORD})
    assert unknown.status_code == 401
    assert "The email address or password is wrong." in unknown.text
    empty = await client.post("/login", data={"email": "", "password": ""})
    assert empty.status_code == 422
    assert "Enter your email address and your password." in empty.text


async def test_deactivated_user_cannot_sign_in(client: httpx.AsyncClient, tenant_a: Tenant,
                                               app_state: AppState) -> None:
    async with app_state.db.session(tenant_a.account_id) as session:
        await identity.update_user(session, tenant_a.users[Role.VIEWER], is_active=False)
        await session.commit()
    response = await client.post("/login", data={"email": email_of(Role.VIEWER), "password": PASSWORD})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("next_url", "expected"),
    [
        ("/settings/team", "/settings/team"),
        ("/pilot?x=1", "/pilot?x=1"),
        ("https://evil.example/", "/"),
        ("//evil.example/path", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("", "/"),
    ],
)
async def test_login_redirects_only_to_same_site_paths(
    client: httpx.AsyncClient, tenant_a: Tenant, next_url: str, expected: str
) -> None:
    response = await client.post("/login", data={"email": email_of(Role.ENGINEER), "password": PASSWORD,
                                                  "next": next_url})
    assert response.status_code == 303
    assert response.headers["location"] == expected


async def test_login_page_keeps_only_safe_next(client: httpx.AsyncClient) -> None:
    response = await client.get("/login", params={"next": "https://evil.example"})
    assert 'name="next" value="/"' in response.text


async def test_cross_site_login_post_is_refused(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    response = await client.post("/login", data={"email": email_of(Role.OWNER), "password": PASSWORD},
                                 headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 403
    assert "set-cookie" not in response.headers


async def test_signed_in_user_visiting_login_goes_on(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    await login(client, Role.ENGINEER)
    response = await client.get("/login", params={"next": "/inbox"})
    assert response.status_code == 303
    assert response.headers["location"] == "/inbox"


async def test_logout_needs_csrf_then_clears_the_cookie(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    csrf = await login(client, Role.ENGINEER)
    refused = await client.post("/logout")
    assert refused.status_code == 403
    assert "This form has expired" in refused.text
    assert (await client.get("/")).status_code == 200

    response = await client.post("/logout", data={"csrf_token": csrf})
    assert response.status_code == 303
    assert response.headers["location"] == "/login?notice=signed-out"
    assert 'max-age=0' in response.headers["set-cookie"].lower()
    assert (await client.get("/")).status_code == 303
    notice = await client.get("/login?notice=signed-out")
    assert "You are signed out." in notice.text
    async with app_state.db.session(tenant_a.account_id) as session:
        assert await audit.list_events(session, action="user.logout")


@pytest.mark.parametrize("token", [None, "", "not-the-token"])
async def test_console_forms_reject_missing_or_wrong_csrf(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState, token: str | None
) -> None:
    await login(client, Role.ADMIN)
    data = {"name": "Night shift"} | ({} if token is None else {"csrf_token": token})
    response = await client.post("/settings/team/teams", data=data)
    assert response.status_code == 403
    assert "nothing was changed" in response.text
    async with app_state.db.session(tenant_a.account_id) as session:
        assert [t.name for t in await identity.list_teams(session)] == ["Service Desk"]


async def test_csrf_token_of_another_session_is_rejected(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    old = await login(client, Role.ADMIN)
    await login(client, Role.ADMIN)
    response = await client.post("/settings/team/teams", data={"name": "Night shift", "csrf_token": old})
    assert response.status_code == 403


async def test_htmx_header_carries_the_csrf_token(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    csrf = await login(client, Role.ADMIN)
    page = await client.get("/")
    assert f'hx-headers=\'{{"X-CSRF-Token": "{csrf}"}}\'' in page.text
    response = await client.post("/settings/team/teams", data={"name": "Night shift"},
                                 headers={"X-CSRF-Token": csrf})
    assert response.status_code == 303


async def test_api_accepts_the_console_cookie_with_csrf_header(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    csrf = await login(client, Role.ENGINEER)
    me = await client.get("/api/v1/me")
    assert me.json()["email"] == email_of(Role.ENGINEER)
    refused = await client.post("/api/v1/tokens", json={"name": "x"})
    assert refused.status_code == 403
    created = await client.post("/api/v1/tokens", json={"name": "x"}, headers={"X-CSRF-Token": csrf})
    assert created.status_code == 201


async def test_tampered_cookie_counts_as_signed_out(client: httpx.AsyncClient, tenant_a: Tenant,
                                                    app_state: AppState) -> None:
    await login(client, Role.OWNER)
    name = app_state.settings.security.session_cookie
    value = client.cookies[name]
    client.cookies.set(name, value[:-2] + ("AA" if not value.endswith("AA") else "BB"))
    assert (await client.get("/")).status_code == 303


async def test_static_assets_are_served(client: httpx.AsyncClient) -> None:
    htmx = await client.get("/static/vendor/htmx-2.0.11.min.js")
    assert htmx.status_code == 200
    assert "htmx" in htmx.text[:200]
    css = await client.get("/static/css/console.css")
    assert css.status_code == 200
    assert (await client.get("/static/js/console.js")).status_code == 200
    page = await client.get("/login")
    assert "/static/css/console.css?v=" in page.text


def _session_cookie(client: httpx.AsyncClient, app_state: AppState) -> str:
    value = client.cookies.get(app_state.settings.security.session_cookie)
    assert value
    return value


async def _signed_in(client: httpx.AsyncClient, app_state: AppState, cookie: str) -> bool:
    """Whether `cookie` (from any browser) still opens the console."""
    client.cookies.clear()
    client.cookies.set(app_state.settings.security.session_cookie, cookie)
    return (await client.get("/")).status_code == 200


async def test_sign_out_voids_every_console_cookie_of_the_user(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    """A copied cookie is useless after sign-out, and so is the user's other browser; other users stay in."""
    await login(client, Role.ENGINEER)
    other_browser = _session_cookie(client, app_state)
    await login(client, Role.LEAD)
    colleague = _session_cookie(client, app_state)
    csrf = await login(client, Role.ENGINEER)
    this_browser = _session_cookie(client, app_state)
    assert (await client.post("/logout", data={"csrf_token": csrf})).status_code == 303
    assert not await _signed_in(client, app_state, this_browser)
    assert not await _signed_in(client, app_state, other_browser)
    assert await _signed_in(client, app_state, colleague)
    # Signing in again works, with a cookie of the new epoch.
    await login(client, Role.ENGINEER)
    assert await _signed_in(client, app_state, _session_cookie(client, app_state))


async def test_a_new_password_signs_out_other_browsers_but_not_this_one(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    await login(client, Role.ADMIN)
    other_browser = _session_cookie(client, app_state)
    csrf = await login(client, Role.ADMIN)
    changed = await client.post("/settings/profile/password", data={
        "csrf_token": csrf, "current_password": PASSWORD, "new_password": "a-brand-new-passphrase",
        "confirm_password": "a-brand-new-passphrase",
    })
    assert changed.status_code == 303
    assert (await client.get(changed.headers["location"])).status_code == 200
    this_browser = _session_cookie(client, app_state)
    assert not await _signed_in(client, app_state, other_browser)
    assert await _signed_in(client, app_state, this_browser)


async def test_repeated_wrong_passwords_pause_sign_in_for_that_email(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    """After LOGIN_FAILURES_ALLOWED wrong passwords within the window even the right one is refused (429, with
    Retry-After), other users are unaffected, and the pause ends when the failures age out of the window. The
    audit log's count holds across processes: a fresh process (its own count empty) refuses too."""
    now = [0.0]
    window = identity.LOGIN_FAILURE_WINDOW.total_seconds()
    app_state.email_failures = FailureWindow(identity.LOGIN_FAILURES_ALLOWED, window, clock=lambda: now[0])
    for _ in range(identity.LOGIN_FAILURES_ALLOWED):
        wrong = await client.post("/login", data={"email": email_of(Role.LEAD), "password": "wrong-password!"})
        assert wrong.status_code == 401
    paused = await client.post("/login", data={"email": email_of(Role.LEAD), "password": PASSWORD})
    assert paused.status_code == 429
    assert "Too many wrong passwords for this address: try again in 15 minutes." in paused.text
    assert 840 < int(paused.headers["retry-after"]) <= 900
    assert "set-cookie" not in paused.headers
    # The refused attempt is not one more failure.
    async with app_state.db.session(tenant_a.account_id) as session:
        failures = await audit.list_events(session, action=identity.LOGIN_FAILED_ACTION)
    assert len(failures) == identity.LOGIN_FAILURES_ALLOWED
    assert (await client.post("/login", data={"email": email_of(Role.ENGINEER), "password": PASSWORD})).status_code \
        == 303
    app_state.email_failures = FailureWindow(identity.LOGIN_FAILURES_ALLOWED, window, clock=lambda: now[0])
    assert (await client.post("/login", data={"email": email_of(Role.LEAD), "password": PASSWORD})).status_code == 429

    # The failures age out of the window: in the audit log (every process) and in this process's count.
    async with app_state.db.session(tenant_a.account_id) as session:
        for event in await audit.list_events(session, action=identity.LOGIN_FAILED_ACTION):
            event.created_at -= identity.LOGIN_FAILURE_WINDOW
        await session.commit()
    now[0] += window
    assert (await client.post("/login", data={"email": email_of(Role.LEAD), "password": PASSWORD})).status_code == 303


async def test_wrong_passwords_from_one_address_pause_its_sign_ins_for_every_email(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    """A password spray (one wrong guess for each of many emails) from one client address is paused there, the
    right password of another user included; unknown emails count too."""
    app_state.sign_in_failures = FailureWindow(3, 900.0)
    for email in ("nobody@acme-it.example", email_of(Role.LEAD), email_of(Role.VIEWER)):
        assert (await client.post("/login", data={"email": email, "password": "wrong-password!"})).status_code == 401
    paused = await client.post("/login", data={"email": email_of(Role.ENGINEER), "password": PASSWORD})
    assert paused.status_code == 429
    assert "Too many wrong passwords from this network: try again in 15 minutes." in paused.text
    assert 0 < int(paused.headers["retry-after"]) <= 900
    assert "set-cookie" not in paused.headers


async def test_a_pause_does_not_tell_whether_the_email_has_an_account(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    """An unknown email is paused after as many wrong passwords as a known one, with the same answer."""
    answers = []
    for email in ("nobody@acme-it.example", email_of(Role.LEAD)):
        for _ in range(identity.LOGIN_FAILURES_ALLOWED):
            assert (await client.post("/login", data={"email": email, "password": "wrong!"})).status_code == 401
        paused = await client.post("/login", data={"email": email, "password": PASSWORD})
        answers.append((paused.status_code, "Too many wrong passwords for this address" in paused.text))
    assert answers == [(429, True), (429, True)]
