"""The Approvals inbox API: listing, reading and deciding, roles, problems and tenancy."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import httpx

from deskpilot.api.state import AppState
from deskpilot.approvals import service as approvals
from deskpilot.approvals.models import ApprovalStatus, SourceKind
from deskpilot.events import notifications
from deskpilot.identity.models import Role
from deskpilot.pilot.models import PilotSession
from tests.approvals.conftest import RESTART
from tests.conftest import Tenant
from tests.tenancy import assert_invisible_to_other_account

ARGS = {"host": "PRN-01", "service": "Spooler"}


async def chat_session(app_state: AppState, tenant: Tenant) -> uuid.UUID:
    async with app_state.db.session(tenant.account_id) as session:
        row = PilotSession(kind="chat", user_id=tenant.users[Role.ENGINEER])
        session.add(row)
        await session.commit()
        return row.id


async def paused_call(
    app_state: AppState,
    tenant: Tenant,
    *,
    call_id: str = "call_1",
    session_id: uuid.UUID | None = None,
    ttl: timedelta = approvals.DEFAULT_TTL,
    source_kind: SourceKind = SourceKind.CHAT,
    host: str = "PRN-01",
) -> uuid.UUID:
    async with app_state.db.session(tenant.account_id) as session:
        request = await approvals.request_approval(
            session,
            tenant.account_id,
            tool=RESTART,
            tool_call_id=call_id,
            arguments={**ARGS, "host": host},
            source_kind=source_kind,
            source_id=uuid.uuid4(),
            session_id=session_id,
            requested_by_id=tenant.users[Role.ENGINEER],
            ttl=ttl,
        )
        await session.commit()
        return request.id


def url(approval_id: uuid.UUID, decision: bool = False) -> str:
    return f"/api/v1/approvals/{approval_id}" + ("/decision" if decision else "")


async def test_inbox_lists_pending_newest_first_with_pages(
    client: httpx.AsyncClient, app_state: AppState, tenant_a: Tenant
) -> None:
    first = await paused_call(app_state, tenant_a, call_id="a", host="PRN-01")
    second = await paused_call(app_state, tenant_a, call_id="b", host="PRN-02", source_kind=SourceKind.AUTOMATION)
    third = await paused_call(app_state, tenant_a, call_id="c", host="PRN-03")
    decided = await client.post(url(first, True), json={"decision": "reject"}, headers=tenant_a.headers(Role.LEAD))
    assert decided.status_code == 200, decided.text

    page = (await client.get("/api/v1/approvals", headers=tenant_a.headers(Role.VIEWER))).json()
    assert [i["id"] for i in page["items"]] == [str(third), str(second)]
    assert (page["total"], page["limit"], page["offset"]) == (2, 50, 0)
    assert page["items"][0]["arguments"] == {"host": "PRN-03", "service": "Spooler", "force": False}
    assert page["items"][0]["status"] == "pending"

    one = (await client.get("/api/v1/approvals?limit=1&offset=1", headers=tenant_a.headers())).json()
    assert ([i["id"] for i in one["items"]], one["total"]) == ([str(second)], 2)
    chat_only = (await client.get("/api/v1/approvals?source_kind=chat", headers=tenant_a.headers())).json()
    assert [i["id"] for i in chat_only["items"]] == [str(third)]
    both = (await client.get("/api/v1/approvals?status=rejected&status=pending", headers=tenant_a.headers())).json()
    assert both["total"] == 3
    rejected = (await client.get("/api/v1/approvals?status=rejected", headers=tenant_a.headers())).json()
    assert [(i["id"], i["decision"]) for i in rejected["items"]] == [(str(first), "reject")]
    bad = await client.get("/api/v1/approvals?status=waiting", headers=tenant_a.headers())
    assert bad.status_code == 422
    assert bad.json()["code"] == "validation_failed"


async def test_read_one_and_decide_by_role(client: httpx.AsyncClient, app_state: AppState, tenant_a: Tenant) -> None:
    approval = await paused_call(app_state, tenant_a)
    shown = await client.get(url(approval), headers=tenant_a.headers(Role.VIEWER))
    assert shown.status_code == 200
    body = shown.json()
    assert (body["tool_name"], body["tool_call_id"], body["status"]) == ("restart_service", "call_1", "pending")
    assert body["arguments_sha256"] == approvals.arguments_sha256(body["arguments"])
    assert body["summary"].startswith("restart_service(")

    refused = await client.post(
        url(approval, True), json={"decision": "approve"}, headers=tenant_a.headers(Role.VIEWER)
    )
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "permission_denied"

    approved = await client.post(
        url(approval, True), json={"decision": "approve", "reason": " go ahead "}, headers=tenant_a.headers(Role.LEAD)
    )
    assert approved.status_code == 200
    body = approved.json()
    assert (body["status"], body["decision"], body["reason"]) == ("approved", "approve", "go ahead")
    assert body["decided_by_id"] == str(tenant_a.users[Role.LEAD])
    async with app_state.db.session(tenant_a.account_id) as session:
        [note] = await notifications.list_notifications(session, tenant_a.users[Role.ENGINEER])
    assert note.kind == "approval.decided"

    again = await client.post(url(approval, True), json={"decision": "reject"}, headers=tenant_a.headers())
    assert again.status_code == 409
    assert again.json()["code"] == "approval_not_pending"
    assert again.json()["approval_status"] == "approved"

    missing = await client.get(url(uuid.uuid4()), headers=tenant_a.headers())
    assert missing.status_code == 404
    assert missing.json()["code"] == "approval_not_found"
    anonymous = await client.get("/api/v1/approvals")
    assert anonymous.status_code == 401


async def test_edit_is_validated_like_the_models_arguments(
    client: httpx.AsyncClient, app_state: AppState, tenant_a: Tenant
) -> None:
    approval = await paused_call(app_state, tenant_a)
    headers = tenant_a.headers(Role.ENGINEER)
    invalid = await client.post(
        url(approval, True),
        headers=headers,
        json={"decision": "edit", "edited_arguments": {"host": "", "service": "Spooler"}},
    )
    assert invalid.status_code == 422
    problem = invalid.json()
    assert problem["code"] == "approval_arguments_invalid"
    assert problem["errors"][0]["field"] == "host"
    no_arguments = await client.post(url(approval, True), headers=headers, json={"decision": "edit"})
    assert (no_arguments.status_code, no_arguments.json()["code"]) == (422, "approval_decision_invalid")
    extra = await client.post(url(approval, True), headers=headers, json={"decision": "approve", "run": True})
    assert (extra.status_code, extra.json()["code"]) == (422, "validation_failed")
    assert (await client.get(url(approval), headers=headers)).json()["status"] == "pending"

    edited = await client.post(
        url(approval, True),
        headers=headers,
        json={"decision": "edit", "edited_arguments": {"host": "PRN-09", "service": "Spooler"}},
    )
    assert edited.status_code == 200
    body = edited.json()
    assert body["edited_arguments"] == {"host": "PRN-09", "service": "Spooler", "force": False}
    assert body["arguments_sha256"] == approvals.arguments_sha256(body["edited_arguments"])


async def test_expired_request_is_gone(client: httpx.AsyncClient, app_state: AppState, tenant_a: Tenant) -> None:
    approval = await paused_call(app_state, tenant_a, ttl=timedelta(milliseconds=20))
    await asyncio.sleep(0.05)
    listed = (await client.get("/api/v1/approvals", headers=tenant_a.headers())).json()
    assert listed["total"] == 0
    assert (await client.get(url(approval), headers=tenant_a.headers())).json()["status"] == "expired"
    gone = await client.post(url(approval, True), json={"decision": "approve"}, headers=tenant_a.headers())
    assert gone.status_code == 410
    assert gone.json()["code"] == "approval_expired"
    async with app_state.db.session(tenant_a.account_id) as session:
        stored = await approvals.get_request(session, tenant_a.account_id, approval)
    assert stored.status is ApprovalStatus.EXPIRED  # the refusal also stored the expiry
    expired = (await client.get("/api/v1/approvals?status=expired", headers=tenant_a.headers())).json()
    assert [i["id"] for i in expired["items"]] == [str(approval)]


async def test_approve_always_needs_a_session_and_grants_the_tool(
    client: httpx.AsyncClient, app_state: AppState, tenant_a: Tenant
) -> None:
    session_id = await chat_session(app_state, tenant_a)
    in_session = await paused_call(app_state, tenant_a, session_id=session_id)
    outside = await paused_call(app_state, tenant_a, call_id="call_2")
    refused = await client.post(url(outside, True), json={"decision": "approve_always"}, headers=tenant_a.headers())
    assert (refused.status_code, refused.json()["code"]) == (422, "approval_decision_invalid")
    granted = await client.post(url(in_session, True), json={"decision": "approve_always"}, headers=tenant_a.headers())
    assert granted.json()["status"] == "approved"
    async with app_state.db.session(tenant_a.account_id) as session:
        assert await approvals.has_grant(session, tenant_a.account_id, session_id, "restart_service")
    in_session_list = (
        await client.get(f"/api/v1/approvals?status=approved&session_id={session_id}", headers=tenant_a.headers())
    ).json()
    assert [i["id"] for i in in_session_list["items"]] == [str(in_session)]


async def test_approvals_are_invisible_to_another_account(
    client: httpx.AsyncClient, app_state: AppState, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    approval = await paused_call(app_state, tenant_a)
    await assert_invisible_to_other_account(
        client, url(approval), owner_headers=tenant_a.headers(), other_headers=tenant_b.headers()
    )
    for decision in ("approve", "reject"):
        response = await client.post(url(approval, True), json={"decision": decision}, headers=tenant_b.headers())
        assert response.status_code == 404
        assert response.json()["code"] == "approval_not_found"
    assert (await client.get("/api/v1/approvals", headers=tenant_b.headers())).json()["total"] == 0
    assert (await client.get(url(approval), headers=tenant_a.headers())).json()["status"] == "pending"
