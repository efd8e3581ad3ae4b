"""Approvals pages over HTTP: the inbox's cards and decided list, deciding from a card, problems shown inline."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta

import httpx
import pytest
from markupsafe import escape

from deskpilot.api.state import AppState
from deskpilot.approvals import service as approvals
from deskpilot.approvals.models import ApprovalStatus, SourceKind
from deskpilot.identity.models import Role
from tests.api.test_approvals import chat_session, paused_call
from tests.conftest import Tenant
from tests.web.conftest import login

HTMX = {"HX-Request": "true"}


async def status_of(app_state: AppState, tenant: Tenant, approval_id: uuid.UUID) -> ApprovalStatus:
    async with app_state.db.session(tenant.account_id) as session:
        return (await approvals.get_request(session, tenant.account_id, approval_id)).status


async def test_inbox_shows_pending_cards(client: httpx.AsyncClient, app_state: AppState, tenant_a: Tenant) -> None:
    session_id = await chat_session(app_state, tenant_a)
    approval = await paused_call(app_state, tenant_a, session_id=session_id)
    await login(client, Role.ENGINEER)
    page = await client.get("/approvals")
    assert page.status_code == 200
    text = page.text
    assert "<h1>Approvals</h1>" in text
    assert '<a href="/approvals" class="active" aria-current="page">' in text
    assert "Not available yet" not in text  # the placeholder is gone
    assert f'id="approval-{approval}"' in text
    assert "<code>restart_service</code>" in text
    assert escape('restart_service(host="PRN-01", service="Spooler", force=false)') in text
    assert escape(json.dumps({"host": "PRN-01", "service": "Spooler", "force": False}, indent=2)) in text
    assert "Acme IT Engineer" in text
    assert f'<a href="/chat/{session_id}">Chat session</a>' in text
    assert "Expires" in text
    for button in (
        ">Approve<",
        ">Approve always in this session<",
        ">Approve with these arguments<",
        ">Reject this call<",
    ):
        assert button in text
    assert f'hx-post="/approvals/{approval}/decide"' in text
    assert "No decisions yet." in text


async def test_viewers_read_without_decision_forms(
    client: httpx.AsyncClient, app_state: AppState, tenant_a: Tenant
) -> None:
    approval = await paused_call(app_state, tenant_a)
    csrf = await login(client, Role.VIEWER)
    text = (await client.get("/approvals")).text
    assert f'id="approval-{approval}"' in text
    assert "Waiting for an engineer or above to decide." in text
    assert ">Approve<" not in text
    refused = await client.post(f"/approvals/{approval}/decide", data={"csrf_token": csrf, "decision": "approve"})
    assert refused.status_code == 403
    assert await status_of(app_state, tenant_a, approval) is ApprovalStatus.PENDING


async def test_approve_from_the_card_swaps_in_the_decided_card(
    client: httpx.AsyncClient, app_state: AppState, tenant_a: Tenant
) -> None:
    approval = await paused_call(app_state, tenant_a)
    csrf = await login(client, Role.LEAD)
    response = await client.post(
        f"/approvals/{approval}/decide", data={"decision": "approve"}, headers={**HTMX, "X-CSRF-Token": csrf}
    )
    assert response.status_code == 200
    fragment = response.text
    assert fragment.lstrip().startswith("<article")
    assert 'data-approval-status="approved"' in fragment
    assert "<strong>Approved</strong> by Acme IT Lead" in fragment
    assert ">Approve<" not in fragment
    trigger = json.loads(response.headers["HX-Trigger"])
    assert trigger["approval-decided"]["id"] == str(approval)
    assert trigger["approval-decided"]["status"] == "approved"
    page = (await client.get("/approvals")).text
    assert "Nothing is waiting for a decision." in page
    assert f'id="decided-{approval}"' in page


async def test_edit_with_invalid_json_or_arguments_shows_the_problem_in_the_card(
    client: httpx.AsyncClient, app_state: AppState, tenant_a: Tenant
) -> None:
    approval = await paused_call(app_state, tenant_a)
    csrf = await login(client, Role.ENGINEER)
    headers = {**HTMX, "X-CSRF-Token": csrf}
    broken = '{"host": "PRN-02", '
    response = await client.post(
        f"/approvals/{approval}/decide", headers=headers, data={"decision": "edit", "edited_arguments": broken}
    )
    assert response.status_code == 422
    assert 'role="alert"' in response.text
    assert "not valid JSON" in response.text
    assert escape(broken) in response.text  # what was typed stays in the textarea
    assert 'aria-invalid="true"' in response.text
    assert '<details class="approval-more" open>' in response.text

    wrong = await client.post(
        f"/approvals/{approval}/decide",
        headers=headers,
        data={"decision": "edit", "edited_arguments": '{"host": "PRN-02"}'},
    )
    assert wrong.status_code == 422
    assert "These arguments cannot be used — service: Field required." in wrong.text
    assert await status_of(app_state, tenant_a, approval) is ApprovalStatus.PENDING

    # Without JavaScript the whole page comes back, the problem shown on its card.
    page = await client.post(
        f"/approvals/{approval}/decide", data={"csrf_token": csrf, "decision": "edit", "edited_arguments": "[1, 2]"}
    )
    assert page.status_code == 422
    assert "<h1>Approvals</h1>" in page.text
    assert "Edited arguments must be a JSON object" in page.text

    fixed = await client.post(
        f"/approvals/{approval}/decide",
        headers=headers,
        data={
            "decision": "edit",
            "edited_arguments": '{"host": "PRN-02", "service": "Spooler"}',
            "reason": "other printer",
        },
    )
    assert fixed.status_code == 200
    assert "Arguments as approved" in fixed.text
    assert "Approved with edits" in fixed.text
    assert "Reason: other printer" in fixed.text


async def test_reject_without_javascript_redirects_with_a_notice(
    client: httpx.AsyncClient, app_state: AppState, tenant_a: Tenant
) -> None:
    approval = await paused_call(app_state, tenant_a)
    csrf = await login(client, Role.ENGINEER)
    response = await client.post(
        f"/approvals/{approval}/decide", data={"csrf_token": csrf, "decision": "reject", "reason": "wrong host"}
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/approvals?done=reject"
    page = (await client.get(response.headers["location"])).text
    assert "Rejected: the call will not run." in page
    assert "Reason: wrong host" in page
    assert await status_of(app_state, tenant_a, approval) is ApprovalStatus.REJECTED
    again = await client.post(
        f"/approvals/{approval}/decide", data={"decision": "approve"}, headers={**HTMX, "X-CSRF-Token": csrf}
    )
    assert again.status_code == 409
    assert "is already rejected" in again.text


async def test_expired_unknown_and_unsafe_decisions(
    client: httpx.AsyncClient, app_state: AppState, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    approval = await paused_call(app_state, tenant_a, ttl=timedelta(milliseconds=20))
    fresh = await paused_call(app_state, tenant_a, call_id="call_2")
    await asyncio.sleep(0.05)
    csrf = await login(client, Role.ENGINEER)
    headers = {**HTMX, "X-CSRF-Token": csrf}
    expired = await client.post(f"/approvals/{approval}/decide", headers=headers, data={"decision": "approve"})
    assert expired.status_code == 410
    assert 'data-approval-status="expired"' in expired.text
    assert "the call will not run" in expired.text
    assert await status_of(app_state, tenant_a, approval) is ApprovalStatus.EXPIRED

    unknown = await client.post(f"/approvals/{fresh}/decide", headers=headers, data={"decision": "run-it"})
    assert unknown.status_code == 422
    assert "Unknown decision" in unknown.text
    no_csrf = await client.post(f"/approvals/{fresh}/decide", data={"decision": "approve"})
    assert no_csrf.status_code == 403
    assert await status_of(app_state, tenant_a, fresh) is ApprovalStatus.PENDING

    await login(client, Role.OWNER, slug="globex-support")
    other_csrf = (await client.get("/approvals")).text.split('name="csrf_token" value="')[1].split('"')[0]
    assert f'id="approval-{fresh}"' not in (await client.get("/approvals")).text
    foreign = await client.post(f"/approvals/{fresh}/decide", data={"csrf_token": other_csrf, "decision": "approve"})
    assert foreign.status_code == 404
    assert "Approval not found" in foreign.text
    assert await status_of(app_state, tenant_a, fresh) is ApprovalStatus.PENDING


@pytest.mark.parametrize(("source", "shown"), [("chat", "call_chat"), ("automation", "call_auto"), ("bogus", None)])
async def test_inbox_filters_by_source(
    client: httpx.AsyncClient, app_state: AppState, tenant_a: Tenant, source: str, shown: str | None
) -> None:
    ids = {
        "call_chat": await paused_call(app_state, tenant_a, call_id="call_chat"),
        "call_auto": await paused_call(app_state, tenant_a, call_id="call_auto", source_kind=SourceKind.AUTOMATION),
    }
    await login(client, Role.VIEWER)
    text = (await client.get(f"/approvals?source={source}")).text
    for call, approval_id in ids.items():
        assert (f'id="approval-{approval_id}"' in text) is (shown is None or shown == call)
