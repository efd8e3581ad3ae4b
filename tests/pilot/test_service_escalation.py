"""Escalation and pickup (FP-038..FP-042) and the access rules around them (FP-033)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from deskpilot.events import audit, notifications
from deskpilot.events.models import Notification
from deskpilot.events.pubsub import user_channel
from deskpilot.identity import service as identity
from deskpilot.llm import ProviderUnavailable
from deskpilot.llm.testing import Reply, ScriptedModel
from deskpilot.pilot import service
from deskpilot.pilot.errors import InvalidSessionState, OwnSessionPickup, SelfEscalation, SessionAccessDenied
from deskpilot.pilot.models import SessionStep
from deskpilot.pilot.schemas import AbandonRequest, EscalateRequest, PickupRequest, SessionCreate, StepResponse
from tests.pilot.conftest import Desk, action, classification, question, scripted

INSIGHTS = Reply.json({
    "remaining_hypotheses": ["Token broker broken", "Conditional Access"],
    "suggested_next_steps": ["Run dsregcmd /status"],
    "steps_ruled_out": ["Wrong password"],
}, input_tokens=100, output_tokens=30)


async def worked_session(desk: Desk, *extra: object) -> tuple[uuid.UUID, service.PilotDeps, ScriptedModel]:
    llm, model, _ = scripted(classification(), question(), action(), *extra)  # type: ignore[arg-type]
    deps = desk.deps(llm)
    started = await desk.call(service.start_session, deps, desk.engineer, SessionCreate(text="Outlook prompts"))
    await desk.call(service.respond, deps, desk.engineer, started.session_id, StepResponse(selected_option="web"))
    return started.session_id, deps, model


async def test_fp038_escalating_to_yourself_is_refused(desk: Desk) -> None:
    sid, deps, _ = await worked_session(desk)
    with pytest.raises(SelfEscalation) as caught:
        await desk.call(service.escalate, deps, desk.engineer, sid,
                        EscalateRequest(reason="stuck", target_user_id=desk.engineer.user_id))
    assert caught.value.status == 409
    assert caught.value.detail == "Cannot escalate a session to yourself. Use pause instead."


async def test_fp039_fp040_escalate_to_the_team(desk: Desk) -> None:
    sid, deps, model = await worked_session(desk, INSIGHTS)
    async with desk.pubsub.subscribe(user_channel(desk.colleague.user_id)) as live:
        result = await desk.call(service.escalate, deps, desk.engineer, sid,
                                 EscalateRequest(reason="Beyond my M365 rights"))
        pushed = await live.get(timeout_s=1)
    assert result.status == "requesting_escalation"
    assert result.escalated_to_id is None
    assert result.psa_push_status == "no_psa"
    package = result.package
    assert package.original_user_id == desk.engineer.user_id
    assert package.escalation_reason == "Beyond my M365 rights"
    assert package.remaining_hypotheses == ["Token broker broken", "Conditional Access"]
    assert package.suggested_next_steps == ["Run dsregcmd /status"]
    assert package.steps_ruled_out == ["Wrong password"]
    assert [t.response for t in package.steps_tried] == ["Yes, web too", None]
    assert package.insights_available
    # The insights come from the quick purpose with what was tried.
    assert "Yes, web too" in model.requests[-1].last_user_text
    assert "Escalation reason: Beyond my M365 rights" in model.requests[-1].last_user_text
    # Everyone active in the team but the escalating engineer is notified; the other team is not.
    async with desk.session() as s:
        team = {u.id for u in await identity.list_users(s, team_id=desk.team_id)}
    assert set(result.notified_user_ids) == team - {desk.engineer.user_id}
    assert {desk.colleague.user_id, desk.teammate.user_id} <= set(result.notified_user_ids)
    assert desk.outsider.user_id not in result.notified_user_ids
    assert pushed["type"] == "notification"
    assert pushed["link"] == f"/pilot/{sid}"
    async with desk.session() as s:
        bell = await notifications.list_notifications(s, desk.teammate.user_id)
        assert [n.kind for n in bell] == ["session.escalated"]
        assert bell[0].title.startswith("Escalated: ")
        events = await audit.list_events(s, resource_id=str(sid))
        assert [e.action for e in events] == ["pilot.session.escalate"]
    detail = await desk.call(service.get_session, desk.engineer, sid)
    assert detail.resolved_at is None  # escalation does not close the session
    assert detail.escalation_reason == "Beyond my M365 rights"
    assert (detail.total_input_tokens, detail.total_output_tokens) == (50 + 200 + 220 + 100, 10 + 40 + 45 + 30)


async def test_fp033_team_members_see_an_escalation_only_while_it_waits(desk: Desk) -> None:
    sid, deps, model = await worked_session(desk, INSIGHTS)
    with pytest.raises(SessionAccessDenied):
        await desk.call(service.get_session, desk.teammate, sid)  # not yet escalated
    await desk.call(service.escalate, deps, desk.engineer, sid, EscalateRequest(reason="help"))
    queue = await desk.call(service.list_escalation_queue, desk.teammate)
    assert [s.id for s in queue] == [sid]
    assert await desk.call(service.list_escalation_queue, desk.outsider) == []
    assert (await desk.call(service.get_session, desk.teammate, sid)).status == "requesting_escalation"
    with pytest.raises(SessionAccessDenied):
        await desk.call(service.get_session, desk.outsider, sid)
    # Team access is for viewing and pickup only, never for acting as the owner.
    with pytest.raises(SessionAccessDenied):
        await desk.call(service.abandon, desk.teammate, sid, AbandonRequest())
    model.add(action("Run dsregcmd /status"))
    result = await desk.call(service.pickup, deps, desk.teammate, sid, PickupRequest())
    assert result.turn.status == "active"
    # Now the picker may act; another team member may not any more.
    await desk.call(service.pause, desk.teammate, sid)
    with pytest.raises(SessionAccessDenied):
        await desk.call(service.get_session, desk.colleague, sid)
    assert (await desk.call(service.get_session, desk.engineer, sid)).picked_up_by_id == desk.teammate.user_id


async def test_fp041_fp042_pickup_continues_with_a_briefing(desk: Desk) -> None:
    sid, deps, model = await worked_session(desk, INSIGHTS)
    await desk.call(service.escalate, deps, desk.engineer, sid, EscalateRequest(reason="Beyond my rights"))
    with pytest.raises(OwnSessionPickup) as own:
        await desk.call(service.pickup, deps, desk.engineer, sid, PickupRequest())
    assert own.value.status == 409
    before = (await desk.call(service.get_session, desk.engineer, sid)).step_count
    model.add(action("Check the sign-in logs"))
    result = await desk.call(service.pickup, deps, desk.colleague, sid, PickupRequest(resume_mode="continue"))
    briefing = result.briefing
    assert briefing.step_type == "action"
    assert briefing.content["type"] == "briefing"
    assert briefing.context_message == "Escalation briefing — here's what was tried before you."
    assert not briefing.allow_free_text
    assert not briefing.allow_skip
    text = briefing.content["text"]
    assert text.startswith("## Escalation Briefing\n**Escalated by:** Erin Engineer\n**Reason:** Beyond my rights")
    assert "**Steps already taken:**\n1. Does the prompt appear in Outlook on the web too?\n   → Yes, web too" in text
    assert "**Remaining hypotheses:**\n- Token broker broken" in text
    assert "**Suggested next steps:**\n- Run dsregcmd /status" in text
    assert result.turn.next_step.content["text"] == "Check the sign-in logs"
    assert result.turn.step_count == before + 2  # FP-042
    assert model.requests[-1].messages[-1].content == (
        "[Picking up escalated session] I've reviewed the briefing above. Please continue the diagnosis based on "
        "everything tried so far."
    )
    detail = await desk.call(service.get_session, desk.colleague, sid)
    assert detail.escalation_package is not None
    assert detail.escalation_package["picked_up_by"] == str(desk.colleague.user_id)
    assert detail.escalation_package["picked_up_at"]
    async with desk.session() as s:
        assert await s.scalar(select(SessionStep.input_tokens).where(SessionStep.id == briefing.step_id)) == 0
        bell = await notifications.list_notifications(s, desk.engineer.user_id)
        assert [n.kind for n in bell] == ["session.picked_up"]
        actions = [e.action for e in await audit.list_events(s, resource_id=str(sid))]
        assert actions == ["pilot.session.pickup", "pilot.session.escalate"]


async def test_fp042_fresh_pickup_uses_the_new_engineers_context(desk: Desk) -> None:
    sid, deps, model = await worked_session(desk, INSIGHTS)
    await desk.call(service.escalate, deps, desk.engineer, sid, EscalateRequest(reason="help"))
    model.add(question("Is MFA registered?", options=(("Yes", "y"), ("No", "n"))))
    await desk.call(service.pickup, deps, desk.teammate, sid,
                    PickupRequest(resume_mode="fresh", additional_context="I reset the password already"))
    assert model.requests[-1].messages[-1].content == "[Picking up escalated session] I reset the password already"


async def test_fp039_insights_failure_does_not_block_the_escalation(desk: Desk) -> None:
    sid, deps, _ = await worked_session(desk, ProviderUnavailable("down", model="test:scripted"))
    result = await desk.call(service.escalate, deps, desk.engineer, sid,
                             EscalateRequest(reason="help", target_user_id=desk.colleague.user_id))
    assert result.package.insights_available is False
    assert result.package.remaining_hypotheses == []
    assert result.escalated_to_id == desk.colleague.user_id
    assert result.notified_user_ids == [desk.colleague.user_id]
    # The target may act on it even without being in the team queue's team.
    queue = await desk.call(service.list_escalation_queue, desk.colleague)
    assert [s.id for s in queue] == [sid]
    async with desk.session() as s:
        count = await s.scalar(select(func.count()).select_from(Notification))
        assert count == 1


async def test_escalating_a_closed_session_is_refused(desk: Desk) -> None:
    sid, deps, _ = await worked_session(desk, INSIGHTS)
    await desk.call(service.escalate, deps, desk.engineer, sid, EscalateRequest(reason="help"))
    with pytest.raises(InvalidSessionState, match="Cannot escalate session in status: requesting_escalation"):
        await desk.call(service.escalate, deps, desk.engineer, sid, EscalateRequest(reason="again"))


async def test_fp042_a_flow_mode_session_picked_up_continues_on_the_same_runbook_step(desk: Desk) -> None:
    from deskpilot.knowledge import service as knowledge
    from deskpilot.llm import LLM
    from deskpilot.settings import LLMSettings

    async with desk.session() as s:
        await knowledge.load_starter_library(s, desk.account_id)
        await s.commit()
    deps = desk.deps(LLM(LLMSettings()))
    started = await desk.call(service.start_session, deps, desk.engineer,
                              SessionCreate(text="Outlook keeps asking for the password"))
    sid = started.session_id
    await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option="desktop-only"))
    result = await desk.call(service.escalate, deps, desk.engineer, sid, EscalateRequest(reason="no time"))
    assert result.package.insights_available is False  # no LLM: the escalation goes on without insights
    picked = await desk.call(service.pickup, deps, desk.colleague, sid, PickupRequest())
    assert picked.turn.mode == "flow"
    assert picked.turn.next_step.content["flow_node_id"] == "recent-change"
    assert picked.turn.step_count == 4  # two runbook steps, the briefing, the step asked again
    turn = await desk.call(service.respond, deps, desk.colleague, sid, StepResponse(selected_option="password"))
    assert turn.next_step.content["flow_node_id"] == "clear-credentials"
