"""The approvals service on SQLite and PostgreSQL: binding, validation, decisions, single use, resume, expiry."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import func, select, update

from deskpilot.approvals import service as approvals
from deskpilot.approvals.errors import (
    ApprovalArgumentsInvalid,
    ApprovalCallMismatch,
    ApprovalDecisionInvalid,
    ApprovalExpired,
    ApprovalNotFound,
    ApprovalNotPending,
    ApprovalToolUnknown,
)
from deskpilot.approvals.models import ApprovalRequest, ApprovalStatus, Decision, SourceKind
from deskpilot.approvals.schemas import InterruptRequest, ResumeDecision
from deskpilot.approvals.tools import ApprovalTools, needs_approval
from deskpilot.events import audit, notifications
from deskpilot.events.audit import Actor
from deskpilot.identity.models import Role
from deskpilot.llm.tools import Tool
from deskpilot.storage import utcnow
from tests.approvals.conftest import DISABLE, RESTART, Desk, RestartArgs
from tests.conftest import make_tenant

ARGS = {"service": "Spooler", "host": "PRN-01"}


def actor(desk: Desk, role: Role = Role.ENGINEER) -> Actor:
    return Actor(desk.user(role), f"{role.value}@acme-it.example")


async def ask(
    desk: Desk,
    *,
    call_id: str = "call_1",
    arguments: str | Mapping[str, Any] = ARGS,
    source_id: uuid.UUID | None = None,
    in_session: bool = True,
    ttl: timedelta = approvals.DEFAULT_TTL,
    tool: Tool | type[BaseModel] = RESTART,
) -> ApprovalRequest:
    async with desk.db.session(desk.account_id) as session:
        request = await approvals.request_approval(
            session,
            desk.account_id,
            tool=tool,
            tool_call_id=call_id,
            arguments=arguments,
            source_kind=SourceKind.CHAT,
            source_id=source_id or uuid.uuid4(),
            session_id=desk.session_id if in_session else None,
            requested_by_id=desk.user(Role.ENGINEER),
            ttl=ttl,
        )
        await session.commit()
        return request


async def decide(
    desk: Desk, request_id: uuid.UUID, decision: Decision, role: Role = Role.LEAD, **kwargs: Any
) -> approvals.DecisionOutcome:
    async with desk.db.session(desk.account_id) as session:
        outcome = await approvals.decide(
            session, desk.account_id, request_id, decision, decided_by=actor(desk, role), **kwargs
        )
        await session.commit()
        return outcome


async def claim(desk: Desk, request_id: uuid.UUID) -> approvals.ClaimedCall | None:
    async with desk.db.session(desk.account_id) as session:
        claimed = await approvals.claim_for_execution(session, desk.account_id, request_id)
        await session.commit()
        return claimed


async def stored(desk: Desk, request_id: uuid.UUID) -> ApprovalRequest:
    async with desk.db.session(desk.account_id) as session:
        return await approvals.get_request(session, desk.account_id, request_id)


async def resume(desk: Desk, source_id: uuid.UUID, decisions: list[ResumeDecision]) -> approvals.BatchOutcome:
    async with desk.db.session(desk.account_id) as session:
        outcome = await approvals.decide_batch(session, desk.account_id, source_id, decisions, decided_by=actor(desk))
        await session.commit()
        return outcome


# --- requesting: validation and binding ----------------------------------------------------------------


async def test_arguments_are_validated_before_anything_is_stored(desk: Desk) -> None:
    """Issue #4: a paused call's arguments are validated before the human is asked; invalid ones store nothing."""
    with pytest.raises(ApprovalArgumentsInvalid) as caught:
        await ask(desk, arguments={"service": "Spooler"})
    assert caught.value.status == 422
    assert caught.value.code == "approval_arguments_invalid"
    assert caught.value.extra["errors"][0]["field"] == "host"
    with pytest.raises(ApprovalArgumentsInvalid):
        await ask(desk, arguments='{"host": "PRN-01", "service": ')  # the model's JSON text, broken
    async with desk.db.session(desk.account_id) as session:
        assert await session.scalar(select(func.count()).select_from(ApprovalRequest)) == 0


async def test_request_is_bound_to_tool_call_and_canonical_argument_hash(desk: Desk) -> None:
    source = uuid.uuid4()
    request = await ask(desk, arguments='{"service":"Spooler","host":"PRN-01"}', source_id=source)
    assert request.status is ApprovalStatus.PENDING
    assert (request.tool_name, request.tool_call_id, request.source_id) == ("restart_service", "call_1", source)
    assert request.session_id == desk.session_id
    assert request.requested_by_id == desk.user(Role.ENGINEER)
    # Validated: defaults filled; hashed as canonical JSON, so key order does not matter.
    assert request.arguments == {"host": "PRN-01", "service": "Spooler", "force": False}
    canonical = json.dumps(request.arguments, sort_keys=True, separators=(",", ":"))
    assert request.arguments_sha256 == hashlib.sha256(canonical.encode()).hexdigest()
    assert request.arguments_sha256 == approvals.arguments_sha256(
        {"force": False, "service": "Spooler", "host": "PRN-01"}
    )
    assert request.expires_at - request.created_at == approvals.DEFAULT_TTL
    assert request.summary == 'restart_service(host="PRN-01", service="Spooler", force=false)'
    assert needs_approval("restart_service")  # a Tool that asks is marked as needing approval


async def test_same_call_requested_twice_is_one_request_and_other_arguments_conflict(desk: Desk) -> None:
    source = uuid.uuid4()
    first = await ask(desk, source_id=source)
    again = await ask(desk, source_id=source, arguments={"host": "PRN-01", "service": "Spooler", "force": False})
    assert again.id == first.id
    with pytest.raises(ApprovalCallMismatch):
        await ask(desk, source_id=source, arguments={"host": "PRN-02", "service": "Spooler"})
    other_call = await ask(desk, source_id=source, call_id="call_2")
    assert other_call.id != first.id


async def test_argument_model_instead_of_tool_needs_a_name(desk: Desk) -> None:
    async with desk.db.session(desk.account_id) as session:
        with pytest.raises(ValueError, match="tool_name"):
            await approvals.request_approval(
                session,
                desk.account_id,
                tool=RestartArgs,
                tool_call_id="c",
                arguments=ARGS,
                source_kind=SourceKind.AUTOMATION,
                source_id=uuid.uuid4(),
            )
        request = await approvals.request_approval(
            session,
            desk.account_id,
            tool=RestartArgs,
            tool_name="restart_service",
            tool_call_id="c",
            arguments=ARGS,
            source_kind=SourceKind.AUTOMATION,
            source_id=uuid.uuid4(),
            summary="Restart  the\nspooler",
        )
    assert request.summary == "Restart the spooler"
    assert request.session_id is None
    assert request.requested_by_id is None


# --- deciding ------------------------------------------------------------------------------------------


async def test_approved_call_is_claimed_exactly_once(desk: Desk) -> None:
    request = await ask(desk)
    outcome = await decide(desk, request.id, Decision.APPROVE, reason="change window is open")
    assert outcome.request.status is ApprovalStatus.APPROVED
    assert outcome.request.decided_by_id == desk.user(Role.LEAD)
    assert outcome.request.reason == "change window is open"
    claimed = await claim(desk, request.id)
    assert claimed is not None
    assert claimed.arguments == {"host": "PRN-01", "service": "Spooler", "force": False}
    assert RESTART.validate(claimed.arguments_json) == RestartArgs(host="PRN-01", service="Spooler")
    assert await claim(desk, request.id) is None
    async with desk.db.session(desk.account_id) as session:
        done = await approvals.record_execution(session, desk.account_id, request.id, result="restarted")
        await session.commit()
    assert (done.status, done.result) == (ApprovalStatus.EXECUTED, "restarted")
    assert await claim(desk, request.id) is None


async def test_concurrent_claims_hand_out_the_call_once(desk: Desk) -> None:
    """Issue #4 single use: two resumes racing for the same approved call; exactly one gets its arguments."""
    for attempt in range(5):
        request = await ask(desk, call_id=f"race_{attempt}")
        await decide(desk, request.id, Decision.APPROVE)
        results = await asyncio.gather(claim(desk, request.id), claim(desk, request.id), claim(desk, request.id))
        assert sum(r is not None for r in results) == 1, results


async def test_concurrent_decisions_one_wins(desk: Desk) -> None:
    request = await ask(desk)
    results = await asyncio.gather(
        decide(desk, request.id, Decision.APPROVE),
        decide(desk, request.id, Decision.REJECT, role=Role.OWNER),
        return_exceptions=True,
    )
    assert sum(isinstance(r, approvals.DecisionOutcome) for r in results) == 1, results
    assert sum(isinstance(r, ApprovalNotPending) for r in results) == 1, results


async def test_rejected_call_never_runs_and_cannot_be_decided_again(desk: Desk) -> None:
    request = await ask(desk)
    rejected = await decide(desk, request.id, Decision.REJECT, reason="wrong host")
    assert rejected.request.status is ApprovalStatus.REJECTED
    assert await claim(desk, request.id) is None
    with pytest.raises(ApprovalNotPending) as caught:
        await decide(desk, request.id, Decision.APPROVE)
    assert caught.value.status == 409
    assert caught.value.extra == {"approval_status": "rejected"}


async def test_edit_revalidates_and_rehashes(desk: Desk) -> None:
    request = await ask(desk)
    with pytest.raises(ApprovalArgumentsInvalid) as caught:
        await decide(desk, request.id, Decision.EDIT, edited_arguments={"host": "", "service": "Spooler"})
    assert caught.value.extra["errors"][0]["field"] == "host"
    with pytest.raises(ApprovalArgumentsInvalid, match="not valid JSON"):
        await decide(desk, request.id, Decision.EDIT, edited_arguments='{"host": ')
    with pytest.raises(ApprovalDecisionInvalid):
        await decide(desk, request.id, Decision.EDIT)
    with pytest.raises(ApprovalDecisionInvalid):
        await decide(desk, request.id, Decision.APPROVE, edited_arguments=ARGS)
    assert (await stored(desk, request.id)).status is ApprovalStatus.PENDING

    edited = await decide(desk, request.id, Decision.EDIT, edited_arguments='{"host": "PRN-02", "service": "Spooler"}')
    assert edited.request.status is ApprovalStatus.APPROVED
    assert edited.request.arguments == {"host": "PRN-01", "service": "Spooler", "force": False}  # kept as asked
    assert edited.request.edited_arguments == {"host": "PRN-02", "service": "Spooler", "force": False}
    assert edited.request.arguments_sha256 == approvals.arguments_sha256(edited.request.edited_arguments)
    assert edited.request.arguments_sha256 != request.arguments_sha256
    claimed = await claim(desk, request.id)
    assert claimed is not None
    assert claimed.arguments["host"] == "PRN-02"


async def test_edit_of_a_tool_unknown_here_is_refused(desk: Desk) -> None:
    class Unregistered(BaseModel):
        path: str

    async with desk.db.session(desk.account_id) as session:
        request = await approvals.request_approval(
            session,
            desk.account_id,
            tool=Unregistered,
            tool_name="delete_share",
            tool_call_id="c",
            arguments={"path": r"\\fs\old"},
            source_kind=SourceKind.AGENT,
            source_id=uuid.uuid4(),
        )
        await session.commit()
    with pytest.raises(ApprovalToolUnknown):
        await decide(desk, request.id, Decision.EDIT, edited_arguments={"path": r"\\fs\older"})
    edited = await decide(
        desk, request.id, Decision.EDIT, edited_arguments={"path": r"\\fs\older"}, args_model=Unregistered
    )
    assert edited.request.edited_arguments == {"path": r"\\fs\older"}


async def test_tampered_arguments_are_not_run(desk: Desk) -> None:
    request = await ask(desk)
    await decide(desk, request.id, Decision.APPROVE)
    async with desk.db.session(desk.account_id) as session:
        await session.execute(
            update(ApprovalRequest)
            .where(ApprovalRequest.id == request.id)
            .values(arguments={"host": "DC-01", "service": "NTDS"})
        )
        await session.commit()
    assert await claim(desk, request.id) is None
    failed = await stored(desk, request.id)
    assert failed.status is ApprovalStatus.FAILED
    assert failed.result == "arguments changed after approval; not run"


async def test_record_execution_needs_a_claim_and_stores_failures(desk: Desk) -> None:
    request = await ask(desk)
    await decide(desk, request.id, Decision.APPROVE)
    async with desk.db.session(desk.account_id) as session:
        with pytest.raises(ApprovalNotPending, match="never claimed"):
            await approvals.record_execution(session, desk.account_id, request.id, result="x")
    await claim(desk, request.id)
    async with desk.db.session(desk.account_id) as session:
        failed = await approvals.record_execution(session, desk.account_id, request.id, error="host unreachable")
        await session.commit()
        assert (failed.status, failed.result) == (ApprovalStatus.FAILED, "host unreachable")
        with pytest.raises(ApprovalNotPending):
            await approvals.record_execution(session, desk.account_id, request.id, result="again")


# --- expiry and grants ---------------------------------------------------------------------------------


async def test_expired_request_cannot_be_decided_and_leaves_the_inbox(desk: Desk) -> None:
    request = await ask(desk, ttl=timedelta(minutes=5))
    later = utcnow() + timedelta(minutes=6)
    async with desk.db.session(desk.account_id) as session:
        assert [r.id for r in await approvals.list_pending(session, desk.account_id)] == [request.id]
        assert await approvals.list_pending(session, desk.account_id, now=later) == []
        with pytest.raises(ApprovalExpired) as caught:
            await approvals.decide(
                session, desk.account_id, request.id, Decision.APPROVE, decided_by=actor(desk), now=later
            )
        await session.commit()
    assert caught.value.status == 410
    assert caught.value.code == "approval_expired"
    assert (await stored(desk, request.id)).status is ApprovalStatus.EXPIRED
    assert await claim(desk, request.id) is None
    with pytest.raises(ApprovalExpired):
        await decide(desk, request.id, Decision.REJECT)


async def test_expire_overdue_marks_every_account(desk: Desk) -> None:
    other = await make_tenant(desk.db, "Globex Support")
    overdue = await ask(desk, ttl=timedelta(seconds=30))
    fresh = await ask(desk, call_id="call_fresh", ttl=timedelta(hours=1))
    async with desk.db.session(other.account_id) as session:
        theirs = await approvals.request_approval(
            session,
            other.account_id,
            tool=RESTART,
            tool_call_id="c",
            arguments=ARGS,
            source_kind=SourceKind.AUTOMATION,
            source_id=uuid.uuid4(),
            ttl=timedelta(seconds=30),
        )
        await session.commit()
    async with desk.db.system_session() as session:
        assert await approvals.expire_overdue(session, now=utcnow() + timedelta(minutes=1)) == 2
        await session.commit()
    async with desk.db.system_session() as session:
        assert await approvals.expire_overdue(session, now=utcnow() + timedelta(minutes=1)) == 0
    assert (await stored(desk, overdue.id)).status is ApprovalStatus.EXPIRED
    assert (await stored(desk, fresh.id)).status is ApprovalStatus.PENDING
    async with desk.db.session(other.account_id) as session:
        assert (await approvals.get_request(session, other.account_id, theirs.id)).status is ApprovalStatus.EXPIRED
        events = await audit.list_events(session, action="approval.expire")
        assert [e.resource_id for e in events] == [str(theirs.id)]


async def test_approve_always_grants_the_tool_in_the_session(desk: Desk) -> None:
    request = await ask(desk)
    async with desk.db.session(desk.account_id) as session:
        assert not await approvals.has_grant(session, desk.account_id, desk.session_id, "restart_service")
    outcome = await decide(desk, request.id, Decision.APPROVE_ALWAYS)
    assert outcome.grant_created
    assert outcome.request.status is ApprovalStatus.APPROVED
    second = await ask(desk, call_id="call_2")
    again = await decide(desk, second.id, Decision.APPROVE_ALWAYS)
    assert not again.grant_created  # one grant per session and tool
    async with desk.db.session(desk.account_id) as session:
        assert await approvals.has_grant(session, desk.account_id, desk.session_id, "restart_service")
        assert not await approvals.has_grant(session, desk.account_id, desk.session_id, "disable_user")
        grants = await approvals.list_grants(session, desk.account_id, desk.session_id)
        assert [(g.tool_name, g.granted_by_id) for g in grants] == [("restart_service", desk.user(Role.LEAD))]
    outside = await ask(desk, call_id="call_3", in_session=False)
    with pytest.raises(ApprovalDecisionInvalid, match="session"):
        await decide(desk, outside.id, Decision.APPROVE_ALWAYS)


# --- resume (SS-042) -----------------------------------------------------------------------------------


async def _three_calls(desk: Desk) -> tuple[uuid.UUID, list[ApprovalRequest]]:
    source = uuid.uuid4()
    calls = [
        await ask(desk, source_id=source, call_id="call_a"),
        await ask(desk, source_id=source, call_id="call_b", tool=DISABLE, arguments={"upn": "kim@contoso.example"}),
        await ask(desk, source_id=source, call_id="call_c", arguments={"host": "PRN-02", "service": "Spooler"}),
    ]
    return source, calls


async def test_resume_routes_decisions_and_rejects_calls_without_one(desk: Desk) -> None:
    """SS-042: decisions are routed to their paused call by tool_call_id or request id; a call whose decision
    is missing is rejected, never executed."""
    source, (a, b, c) = await _three_calls(desk)
    outcome = await resume(
        desk,
        source,
        [
            ResumeDecision(tool_call_id="call_a", decision=Decision.APPROVE),
            ResumeDecision(
                request_id=b.id,
                decision=Decision.EDIT,
                edited_arguments={"upn": "kim@contoso.example", "reason": "left the company"},
            ),
        ],
    )
    assert [r.id for r in outcome.requests] == [a.id, b.id, c.id]
    assert [r.id for r in outcome.to_run] == [a.id, b.id]
    assert outcome.rejected_missing == [c.id]
    missing = await stored(desk, c.id)
    assert (missing.status, missing.decision) == (ApprovalStatus.REJECTED, Decision.REJECT)
    assert missing.reason == approvals.MISSING_DECISION_REASON
    assert await claim(desk, c.id) is None
    claimed_b = await claim(desk, b.id)
    assert claimed_b is not None
    assert claimed_b.arguments == {"upn": "kim@contoso.example", "reason": "left the company"}


async def test_resuming_twice_executes_nothing_twice(desk: Desk) -> None:
    """SS-042 / issue #4: the same resume sent twice decides nothing new and hands out no call twice."""
    source, (a, _b, _c) = await _three_calls(desk)
    payload = [
        ResumeDecision(tool_call_id="call_a", decision=Decision.APPROVE),
        ResumeDecision(tool_call_id="call_b", decision=Decision.REJECT, reason="not this one"),
    ]
    first = await resume(desk, source, payload)
    ran = [await claim(desk, r.id) for r in first.to_run]
    assert [c_.request_id for c_ in ran if c_] == [a.id]
    second = await resume(desk, source, payload)
    assert second.to_run == []
    assert second.rejected_missing == []
    assert [await claim(desk, r.id) for r in second.requests] == [None, None, None]
    async with desk.db.session(desk.account_id) as session:
        decided = await audit.list_events(session, resource_type="approval_request")
    assert sorted(e.action for e in decided) == ["approval.approve", "approval.reject", "approval.reject"]


async def test_concurrent_resumes_run_each_call_once(desk: Desk) -> None:
    source, (a, _b, _c) = await _three_calls(desk)
    payload = [ResumeDecision(tool_call_id="call_a", decision=Decision.APPROVE)]

    async def resume_and_run() -> list[uuid.UUID]:
        outcome = await resume(desk, source, payload)  # both succeed: the same payload is the same outcome
        return [c_.request_id for r in outcome.to_run if (c_ := await claim(desk, r.id))]

    results = await asyncio.gather(resume_and_run(), resume_and_run())
    assert [r for ran in results for r in ran] == [a.id]


async def test_resume_refuses_contradictions_and_unknown_calls(desk: Desk) -> None:
    source, (a, _b, _c) = await _three_calls(desk)
    with pytest.raises(ApprovalDecisionInvalid, match="no paused call"):
        await resume(desk, source, [ResumeDecision(tool_call_id="call_z", decision=Decision.APPROVE)])
    with pytest.raises(ApprovalDecisionInvalid, match="two decisions"):
        await resume(
            desk,
            source,
            [
                ResumeDecision(tool_call_id="call_a", decision=Decision.APPROVE),
                ResumeDecision(request_id=a.id, decision=Decision.REJECT),
            ],
        )
    with pytest.raises(ApprovalDecisionInvalid):  # a request id and a call id naming two different calls
        await resume(desk, source, [ResumeDecision(request_id=a.id, tool_call_id="call_b", decision=Decision.APPROVE)])
    with pytest.raises(ApprovalArgumentsInvalid):  # checked before anything is written
        await resume(
            desk,
            source,
            [
                ResumeDecision(tool_call_id="call_a", decision=Decision.APPROVE),
                ResumeDecision(tool_call_id="call_b", decision=Decision.EDIT, edited_arguments={"upn": 5}),
            ],
        )
    assert (await stored(desk, a.id)).status is ApprovalStatus.PENDING
    await resume(desk, source, [ResumeDecision(tool_call_id="call_a", decision=Decision.APPROVE)])
    with pytest.raises(ApprovalNotPending):
        await resume(desk, source, [ResumeDecision(tool_call_id="call_a", decision=Decision.REJECT)])
    with pytest.raises(ApprovalNotFound):
        await resume(desk, uuid.uuid4(), [])
    with pytest.raises(ValueError, match="request_id or tool_call_id"):
        ResumeDecision(decision=Decision.APPROVE)


async def test_resume_reports_expired_calls_and_decisions_made_in_the_inbox(desk: Desk) -> None:
    source = uuid.uuid4()
    late = await ask(desk, source_id=source, call_id="late", ttl=timedelta(seconds=1))
    inbox = await ask(desk, source_id=source, call_id="inbox")
    await decide(desk, inbox.id, Decision.APPROVE)
    async with desk.db.session(desk.account_id) as session:
        outcome = await approvals.decide_batch(
            session,
            desk.account_id,
            source,
            [ResumeDecision(tool_call_id="late", decision=Decision.APPROVE)],
            decided_by=actor(desk),
            now=utcnow() + timedelta(seconds=5),
        )
        await session.commit()
    assert outcome.expired == [late.id]
    assert [r.id for r in outcome.to_run] == [inbox.id]
    assert (await stored(desk, late.id)).status is ApprovalStatus.EXPIRED


# --- side effects, tenancy, interrupt payload ----------------------------------------------------------


async def test_requester_is_notified_when_someone_else_decides(desk: Desk) -> None:
    mine = await ask(desk)
    by_me = await decide(desk, mine.id, Decision.APPROVE, role=Role.ENGINEER)  # the requester decides
    assert by_me.notifications == []
    theirs = await ask(desk, call_id="call_2")
    by_lead = await decide(desk, theirs.id, Decision.REJECT, reason="use the runbook")
    [note] = by_lead.notifications
    assert note.user_id == desk.user(Role.ENGINEER)
    assert note.kind == "approval.decided"
    assert note.title.startswith("lead@acme-it.example rejected restart_service: ")
    assert note.body == "use the runbook"
    assert note.link == f"/chat/{desk.session_id}"
    async with desk.db.session(desk.account_id) as session:
        stored_notes = await notifications.list_notifications(session, desk.user(Role.ENGINEER))
        assert [n.id for n in stored_notes] == [note.id]
        events = await audit.list_events(session, resource_id=str(theirs.id))
    assert [(e.action, e.actor_user_id) for e in events] == [("approval.reject", desk.user(Role.LEAD))]
    assert events[0].details["reason"] == "use the runbook"


async def test_requests_of_another_account_are_not_found(desk: Desk) -> None:
    request = await ask(desk)
    other = await make_tenant(desk.db, "Globex Support")
    async with desk.db.session(other.account_id) as session:
        with pytest.raises(ApprovalNotFound):
            await approvals.get_request(session, other.account_id, request.id)
        with pytest.raises(ApprovalNotFound):
            await approvals.decide(
                session, other.account_id, request.id, Decision.APPROVE, decided_by=Actor(other.users[Role.OWNER], "x")
            )
        assert await approvals.claim_for_execution(session, other.account_id, request.id) is None
        assert await approvals.list_pending(session, other.account_id) == []


async def test_interrupt_payload_lists_pending_calls(desk: Desk) -> None:
    """SS-041: the interrupt frame's payload is {action_requests:[{name,args}], review_configs, interrupt_type}."""
    source, calls = await _three_calls(desk)
    payload = InterruptRequest.of(calls, message="2 actions need approval").model_dump(mode="json")
    assert [(a["name"], a["args"], a["tool_call_id"]) for a in payload["action_requests"]] == [
        ("restart_service", {"host": "PRN-01", "service": "Spooler", "force": False}, "call_a"),
        ("disable_user", {"upn": "kim@contoso.example", "reason": ""}, "call_b"),
        ("restart_service", {"host": "PRN-02", "service": "Spooler", "force": False}, "call_c"),
    ]
    assert payload["review_configs"] == [
        {"action_name": "restart_service", "allowed_decisions": ["approve", "edit", "reject", "approve_always"]},
        {"action_name": "disable_user", "allowed_decisions": ["approve", "edit", "reject", "approve_always"]},
    ]
    assert payload["interrupt_type"] == "approval"
    assert payload["context"] == {"source_kind": "chat", "source_id": str(source)}
    assert payload["message"] == "2 actions need approval"


def test_tool_registry_refuses_two_tools_with_one_name() -> None:
    tools = ApprovalTools()
    tools.register(RESTART)
    tools.register(RESTART)
    assert tools.names() == ["restart_service"]
    assert tools.args_model("restart_service") is RestartArgs
    assert tools.args_model("disable_user") is None

    async def restart_service(host: str) -> str:
        return host

    with pytest.raises(ValueError, match="already needs approval"):
        tools.register(Tool(restart_service))
