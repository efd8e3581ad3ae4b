"""Resolve, abandon, rate and link a ticket (FP-035..FP-037, FP-043, FP-044)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping

import httpx
import pytest
from pydantic import JsonValue

from deskpilot.events import audit
from deskpilot.jobs import JobBackend
from deskpilot.knowledge import service as knowledge
from deskpilot.pilot import service
from deskpilot.pilot.errors import InvalidSessionState
from deskpilot.pilot.schemas import (
    AbandonRequest,
    LinkTicketRequest,
    RateRequest,
    ResolveRequest,
    SessionCreate,
    StepResponse,
)
from deskpilot.psa import service as psa
from tests.pilot.conftest import Desk, action, classification, question, resolution, scripted

OUTLOOK = "Outlook keeps asking for the password"


class RecordingJobs(JobBackend):
    """A job backend that only remembers what was queued."""

    def __init__(self) -> None:
        self.queued: list[tuple[str, dict[str, JsonValue]]] = []

    async def enqueue(
        self, name: str, payload: Mapping[str, JsonValue] | None = None, *, delay_s: float | None = None
    ) -> str:
        self.queued.append((name, dict(payload or {})))
        return str(uuid.uuid4())


class Receiver:
    """Stands in for the customer's webhook receiver: ticket context on GET, notes and time entries on POST."""

    def __init__(self, *, fail_posts: bool = False) -> None:
        self.posts: list[dict[str, object]] = []
        self.fail_posts = fail_posts

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={
                "ticket": {"id": "4711", "summary": "Outlook prompts for password", "priority": "High"},
                "company": {"id": "c1", "name": "Contoso Ltd"},
            })
        self.posts.append(json.loads(request.content))
        if self.fail_posts:
            return httpx.Response(503, text="receiver down")
        return httpx.Response(200, json={"id": f"ext-{len(self.posts)}"})


async def connection(desk: Desk) -> uuid.UUID:
    async with desk.session() as s:
        row = await psa.create_connection(
            s, desk.secrets, account_id=desk.account_id, name="Receiver", kind="webhook",
            settings={"url": "http://psa.test/hook", "context_url": "http://psa.test/tickets/{ticket_id}"},
            credentials={"secret": "whsec-0123456789abcdef"},
        )
        await s.commit()
        return row.id


async def test_fp035_fp036_fp037_resolve_with_flow_outcome_documentation_and_flywheel(desk: Desk) -> None:
    async with desk.session() as s:
        await knowledge.load_starter_library(s, desk.account_id)
        await s.commit()
    llm, _, _ = scripted(classification(), question(), resolution())
    jobs = RecordingJobs()
    deps = desk.deps(llm, jobs=jobs)
    started = await desk.call(service.start_session, deps, desk.engineer, SessionCreate(text=OUTLOOK))
    sid = started.session_id
    turn = await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option="desktop"))
    assert turn.resolution_suggested
    closed = await desk.call(service.resolve, deps, desk.engineer, sid, ResolveRequest(
        resolution_summary="Cleared stale credentials", resolution_action="Credential Manager cleanup", rating=5,
        feedback="Quick"))
    assert closed.status == "resolved"
    assert closed.psa_push_status == "no_psa"
    assert closed.psa_push_error is None
    assert closed.member_mapping_warning is None
    doc = closed.documentation
    assert doc.resolution_summary == "Cleared stale credentials"
    assert [s.engineer_response for s in doc.diagnostic_steps] == ["Desktop only", None]
    assert doc.follow_up_recommendations == ["Watch for 24 hours"]
    assert doc.duration_display is not None
    detail = await desk.call(service.get_session, desk.engineer, sid)
    assert detail.resolved_at is not None
    assert (detail.rating, detail.feedback, detail.analysis_status) == (5, "Quick", "pending")
    assert detail.resolution_action == "Credential Manager cleanup"
    assert jobs.queued == [("pilot.analyse_session", {"account_id": str(desk.account_id), "session_id": str(sid)})]
    assert started.matched_flow_id is not None
    async with desk.session() as s:
        flow = await knowledge.get_flow(s, started.matched_flow_id)
        assert (flow.matched_count, flow.resolved_count, flow.success_rate) == (1, 1, 1.0)
        assert [e.action for e in await audit.list_events(s, resource_id=str(sid))] == ["pilot.session.resolve"]
    with pytest.raises(InvalidSessionState, match="Cannot resolve session in status: resolved"):
        await desk.call(service.resolve, deps, desk.engineer, sid, ResolveRequest(resolution_summary="again"))
    # FP-031: rating is allowed in any status.
    rated = await desk.call(service.rate, desk.engineer, sid, RateRequest(rating=3, feedback="On reflection"))
    assert rated.status == "resolved"


async def test_fp044_resolve_pushes_the_note_and_time_to_the_ticket(desk: Desk) -> None:
    connection_id = await connection(desk)
    receiver = Receiver()
    llm, _, _ = scripted(classification(), question())
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as http:
        deps = desk.deps(llm, psa_http_client=http)
        started = await desk.call(service.start_session, deps, desk.engineer,
                                  SessionCreate(text=OUTLOOK, psa_connection_id=connection_id, psa_ticket_id="4711"))
        closed = await desk.call(service.resolve, deps, desk.engineer, started.session_id,
                                 ResolveRequest(resolution_summary="Reset the token broker"))
    assert closed.psa_push_status == "pushed"
    # Time entries need a member mapping; without one the note goes through and the result says why no time.
    assert closed.member_mapping_warning is not None
    assert "no PSA member is mapped" in closed.member_mapping_warning
    note = receiver.posts[0]
    assert note["event"] == "note"
    assert note["ticket_id"] == "4711"
    assert note["resolution"] is True
    text = str(note["text"])
    assert text.startswith("RESOLVED | ")
    assert "Resolution: Reset the token broker" in text


async def test_fp044_a_failed_push_never_fails_the_resolve(desk: Desk) -> None:
    connection_id = await connection(desk)
    receiver = Receiver(fail_posts=True)
    llm, _, _ = scripted(classification(), question())
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as http:
        deps = desk.deps(llm, psa_http_client=http)
        started = await desk.call(service.start_session, deps, desk.engineer,
                                  SessionCreate(text=OUTLOOK, psa_connection_id=connection_id, psa_ticket_id="4711"))
        closed = await desk.call(service.resolve, deps, desk.engineer, started.session_id,
                                 ResolveRequest(resolution_summary="Reset the token broker"))
    assert closed.status == "resolved"
    assert closed.psa_push_status == "failed"
    assert closed.psa_push_error is not None
    assert "503" in closed.psa_push_error
    assert len(closed.psa_push_error) <= 200


async def test_fp031_abandon_closes_with_the_reason(desk: Desk) -> None:
    llm, _, _ = scripted(classification(), question())
    deps = desk.deps(llm)
    started = await desk.call(service.start_session, deps, desk.engineer, SessionCreate(text=OUTLOOK))
    await desk.call(service.pause, desk.engineer, started.session_id)
    summary = await desk.call(service.abandon, desk.engineer, started.session_id,
                              AbandonRequest(reason="User fixed it themselves"))
    assert summary.status == "abandoned"
    detail = await desk.call(service.get_session, desk.engineer, started.session_id)
    assert detail.resolved_at is not None
    assert detail.resolution_notes == "User fixed it themselves"
    with pytest.raises(InvalidSessionState, match="Cannot close session in status: abandoned"):
        await desk.call(service.abandon, desk.engineer, started.session_id, AbandonRequest())
    with pytest.raises(InvalidSessionState, match="Cannot link ticket to session in status: abandoned"):
        await desk.call(service.link_ticket, deps, desk.engineer, started.session_id,
                        LinkTicketRequest(psa_connection_id=uuid.uuid4(), psa_ticket_id="1"))
    async with desk.session() as s:
        assert [e.action for e in await audit.list_events(s, resource_id=str(started.session_id))] == [
            "pilot.session.abandon"]


async def test_fp043_link_ticket_mid_session_feeds_the_next_steps(desk: Desk) -> None:
    connection_id = await connection(desk)
    llm, model, _ = scripted(classification(), question(), action())
    async with httpx.AsyncClient(transport=httpx.MockTransport(Receiver())) as http:
        deps = desk.deps(llm, psa_http_client=http)
        started = await desk.call(service.start_session, deps, desk.engineer, SessionCreate(text=OUTLOOK))
        detail = await desk.call(service.link_ticket, deps, desk.engineer, started.session_id,
                                 LinkTicketRequest(psa_connection_id=connection_id, psa_ticket_id="4711"))
        assert (detail.psa_ticket_id, detail.psa_context_status) == ("4711", "loaded")
        assert detail.ticket_data is not None
        assert detail.ticket_data["company"]["name"] == "Contoso Ltd"
        await desk.call(service.respond, deps, desk.engineer, started.session_id, StepResponse(selected_option="web"))
    system = model.requests[-1].messages[0].content
    assert "## PSA TICKET CONTEXT (linked mid-session)\nTicket #4711: Outlook prompts for password" in system


async def test_fp046_fp049_documentation_views_and_status_update_steps(desk: Desk) -> None:
    llm, _, _ = scripted(classification(), question())
    started = await desk.call(service.start_session, desk.deps(llm), desk.engineer, SessionCreate(text=OUTLOOK))
    doc = await desk.call(service.get_documentation, desk.engineer, started.session_id)
    assert doc.total_steps == 1
    assert doc.duration_display is None
    view, steps = await desk.call(service.session_views, desk.engineer, started.session_id)
    assert view.engineer_name == "Acme IT Engineer"
    assert steps[0].options[0].label == "Yes, web too"
    update = await desk.call(service.add_status_update, desk.engineer, started.session_id,
                             content={"audience": "ticket_notes", "generated_content": "Working on it"},
                             input_tokens=30, output_tokens=12)
    assert update.step_type == "status_update"
    assert update.step_order == 1
    detail = await desk.call(service.get_session, desk.engineer, started.session_id)
    # FP-001/FP-049: status updates count toward the step budget and the token totals.
    assert detail.step_count == 2
    assert detail.total_output_tokens == 10 + 40 + 12


async def test_fp043_linking_an_unknown_connection_is_refused(desk: Desk) -> None:
    from deskpilot.psa.errors import PSAConnectionNotFound

    llm, _, _ = scripted(classification(), question())
    deps = desk.deps(llm)
    started = await desk.call(service.start_session, deps, desk.engineer, SessionCreate(text=OUTLOOK))
    with pytest.raises(PSAConnectionNotFound) as caught:
        await desk.call(service.link_ticket, deps, desk.engineer, started.session_id,
                        LinkTicketRequest(psa_connection_id=uuid.uuid4(), psa_ticket_id="1"))
    assert caught.value.status == 404
    detail = await desk.call(service.get_session, desk.engineer, started.session_id)
    assert detail.psa_ticket_id is None


def test_fp044_time_entry_hours_are_decimal_and_bounded() -> None:
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal

    start = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    assert service._hours_worked(start, start + timedelta(minutes=15)) == Decimal("0.25")
    assert service._hours_worked(start, start) == Decimal("0.01")
    assert service._hours_worked(start, start + timedelta(days=3)) == Decimal(24)
