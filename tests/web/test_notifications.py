"""Notifications: the API (list, mark read, stream format), the console bell and its page, across accounts."""

from __future__ import annotations

import uuid

import httpx
import pytest

from deskpilot.api.app import create_app
from deskpilot.api.routes.notifications import sse_event
from deskpilot.api.state import AppState
from deskpilot.events import notifications
from deskpilot.events.pubsub import user_channel
from deskpilot.identity.models import Role
from deskpilot.settings import Settings
from tests.conftest import Tenant
from tests.web.conftest import login


async def _add(app_state: AppState, tenant: Tenant, role: Role, title: str, link: str | None = None) -> uuid.UUID:
    async with app_state.db.session(tenant.account_id) as session:
        added = notifications.add_notification(session, account_id=tenant.account_id, user_id=tenant.users[role],
                                               kind="test", title=title, body=f"body of {title}", link=link)
        await session.commit()
    return added.id


# --- API ---------------------------------------------------------------------------------------


async def test_list_unread_only_and_limit(client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState) -> None:
    ids = [await _add(app_state, tenant_a, Role.LEAD, f"n{i}") for i in range(3)]
    await _add(app_state, tenant_a, Role.ENGINEER, "someone else's")
    headers = tenant_a.headers(Role.LEAD)
    listed = await client.get("/api/v1/notifications", headers=headers)
    assert listed.status_code == 200
    assert [n["title"] for n in listed.json()] == ["n2", "n1", "n0"]
    assert {"id", "kind", "title", "body", "link", "created_at", "read_at"} <= set(listed.json()[0])
    limited = await client.get("/api/v1/notifications", params={"limit": 2}, headers=headers)
    assert len(limited.json()) == 2
    marked = await client.post("/api/v1/notifications/read", json={"ids": [str(ids[0])]}, headers=headers)
    assert marked.json() == {"marked": 1, "unread": 2}
    unread = await client.get("/api/v1/notifications", params={"unread_only": True}, headers=headers)
    assert [n["title"] for n in unread.json()] == ["n2", "n1"]
    assert (await client.get("/api/v1/notifications", params={"limit": 0}, headers=headers)).status_code == 422


async def test_mark_all_read(client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState) -> None:
    for i in range(2):
        await _add(app_state, tenant_a, Role.VIEWER, f"n{i}")
    headers = tenant_a.headers(Role.VIEWER)
    assert (await client.post("/api/v1/notifications/read", json={"all": True}, headers=headers)).json() == {
        "marked": 2, "unread": 0}
    assert (await client.post("/api/v1/notifications/read", json={"all": True}, headers=headers)).json() == {
        "marked": 0, "unread": 0}


@pytest.mark.parametrize("body", [{}, {"all": True, "ids": []}, {"all": False}, {"ids": ["x"]}, {"other": 1}])
async def test_mark_read_needs_ids_or_all(client: httpx.AsyncClient, tenant_a: Tenant, body: dict[str, object]) -> None:
    response = await client.post("/api/v1/notifications/read", json=body, headers=tenant_a.headers())
    assert response.status_code == 422
    assert response.json()["code"] == "validation_failed"


async def test_notifications_need_authentication(client: httpx.AsyncClient) -> None:
    for method, url in (("GET", "/api/v1/notifications"), ("POST", "/api/v1/notifications/read"),
                        ("GET", "/api/v1/notifications/stream")):
        response = await client.request(method, url)
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"


async def test_cookie_session_must_send_csrf_header_to_mark_read(client: httpx.AsyncClient, tenant_a: Tenant,
                                                                 app_state: AppState) -> None:
    await _add(app_state, tenant_a, Role.ENGINEER, "n")
    csrf = await login(client, Role.ENGINEER)
    refused = await client.post("/api/v1/notifications/read", json={"all": True})
    assert refused.status_code == 403
    assert refused.json()["code"] == "csrf_failed"
    done = await client.post("/api/v1/notifications/read", json={"all": True}, headers={"X-CSRF-Token": csrf})
    assert done.json()["marked"] == 1


async def test_other_accounts_and_users_cannot_see_or_mark(
    client: httpx.AsyncClient, tenant_a: Tenant, tenant_b: Tenant, app_state: AppState
) -> None:
    # There is no per-notification URL for assert_invisible_to_other_account; the list and the ids are the surface.
    mine = await _add(app_state, tenant_a, Role.OWNER, "A's secret")
    for headers in (tenant_b.headers(Role.OWNER), tenant_a.headers(Role.ADMIN)):
        assert (await client.get("/api/v1/notifications", headers=headers)).json() == []
        marked = await client.post("/api/v1/notifications/read", json={"ids": [str(mine)]}, headers=headers)
        assert marked.json() == {"marked": 0, "unread": 0}
    still = await client.get("/api/v1/notifications", params={"unread_only": True}, headers=tenant_a.headers())
    assert [n["id"] for n in still.json()] == [str(mine)]


async def test_mark_read_is_announced_to_the_users_other_tabs(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    await _add(app_state, tenant_a, Role.LEAD, "n")
    async with app_state.pubsub.subscribe(user_channel(tenant_a.users[Role.LEAD])) as sub:
        await client.post("/api/v1/notifications/read", json={"all": True}, headers=tenant_a.headers(Role.LEAD))
        assert await sub.get(timeout_s=2) == {"type": "notifications.read", "unread": 0}


def test_sse_event_format() -> None:
    assert sse_event({"type": "notification", "title": "a\nb"}) == (
        'event: notification\ndata: {"type":"notification","title":"a\\nb"}\n\n')
    assert sse_event({"type": "Bad Name\nx", "n": 1}).startswith("event: message\n")
    assert sse_event({"n": 1}) == 'event: message\ndata: {"n":1}\n\n'


def test_openapi_names_the_operations(settings: Settings) -> None:
    schema = create_app(settings).openapi()
    operations = {op["operationId"] for path in schema["paths"].values() for op in path.values()}
    assert {"list_notifications", "mark_notifications_read", "stream_notifications"} <= operations
    assert not any(p == "/" or p.startswith("/settings") for p in schema["paths"]), "console pages leak into OpenAPI"


# --- console bell ---------------------------------------------------------------------------------


async def test_bell_shows_unread_count_and_recent_items(client: httpx.AsyncClient, tenant_a: Tenant,
                                                        app_state: AppState) -> None:
    await _add(app_state, tenant_a, Role.ENGINEER, "Escalation from Contoso", link="/inbox")
    await _add(app_state, tenant_a, Role.ENGINEER, "Sneaky link", link="javascript:alert(1)")
    await _add(app_state, tenant_a, Role.ENGINEER, "Offsite link", link="https://evil.example/x")
    await login(client, Role.ENGINEER)
    html = (await client.get("/")).text
    assert '<span class="badge" data-unread="3">3</span>' in html
    assert 'href="/inbox"' in html
    assert "Escalation from Contoso" in html
    assert "javascript:" not in html
    assert "evil.example" not in html
    panel = await client.get("/notifications/panel", headers={"HX-Request": "true"})
    assert panel.text.lstrip().startswith('<div class="dropdown-panel dropdown-right bell-panel" id="bell-panel"')
    assert 'id="bell-count" hx-swap-oob="innerHTML"' in panel.text


async def test_mark_all_read_from_the_bell_with_htmx(client: httpx.AsyncClient, tenant_a: Tenant,
                                                     app_state: AppState) -> None:
    await _add(app_state, tenant_a, Role.ENGINEER, "one")
    csrf = await login(client, Role.ENGINEER)
    response = await client.post("/notifications/read", headers={"HX-Request": "true", "X-CSRF-Token": csrf})
    assert response.status_code == 200
    assert 'data-unread' not in response.text
    assert "Mark all read" not in response.text
    async with app_state.db.session(tenant_a.account_id) as session:
        assert await notifications.unread_count(session, tenant_a.users[Role.ENGINEER]) == 0


async def test_notifications_page_and_plain_mark_all_read(client: httpx.AsyncClient, tenant_a: Tenant,
                                                          app_state: AppState) -> None:
    csrf = await login(client, Role.VIEWER)
    empty = await client.get("/notifications")
    assert "No notifications yet." in empty.text
    await _add(app_state, tenant_a, Role.VIEWER, "Run finished")
    page = await client.get("/notifications")
    assert "Run finished" in page.text
    assert "body of Run finished" in page.text
    done = await client.post("/notifications/read", data={"csrf_token": csrf})
    assert done.headers["location"] == "/notifications?notice=notifications-read"
    assert "All notifications marked as read." in (await client.get(done.headers["location"])).text
    assert (await client.post("/notifications/read")).status_code == 403
