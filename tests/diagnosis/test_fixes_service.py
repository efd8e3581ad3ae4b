"""Suggested fixes in the database (UC-019 … UC-021) and a whole turn's events, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from deskpilot.chat.events import FixOutcomeEvent, PromotedFact, PromoteEvent, SuggestFixEvent
from deskpilot.chat.markers import parse_reply
from deskpilot.diagnosis import service
from deskpilot.diagnosis.errors import (
    FixDecisionNotAllowed,
    FixOutcomeIncomplete,
    FixSuperseded,
    FixTransitionNotAllowed,
    NoAIOutcomeProposal,
    ProposalMismatch,
    SuggestedFixNotFound,
)
from deskpilot.diagnosis.fixes import FixStatus, ProposalResolution, UserDecision
from deskpilot.diagnosis.models import SessionSuggestedFix
from deskpilot.diagnosis.schemas import DecisionUpdate, FixResult, OutcomeUpdate, SuggestedFixOut
from deskpilot.knowledge import service as knowledge
from deskpilot.knowledge.models import ScriptLanguage
from deskpilot.knowledge.schemas import TemplateDocument
from deskpilot.pilot.models import PilotSession
from tests.diagnosis.conftest import Desk, actions, questions


def suggestion(title: str = "Re-register the work account", **extra: Any) -> SuggestFixEvent:
    return SuggestFixEvent(title=title, description="Remove and re-add the account", confidence_pct=80, **extra)


async def suggest(desk: Desk, event: SuggestFixEvent | None = None) -> SuggestedFixOut:
    async with desk.session() as s:
        result = await service.persist_suggested_fix(s, **desk.ids, event=event or suggestion())
        await s.commit()
    return result.fix


async def propose(desk: Desk, fix_id: uuid.UUID, outcome: str = "success", reason: str = "") -> FixResult | None:
    async with desk.session() as s:
        event = FixOutcomeEvent.model_validate({"fix_id": fix_id, "outcome": outcome, "reason": reason})
        result = await service.record_ai_outcome_proposal(s, **desk.ids, event=event)
        await s.commit()
    return result


async def outcome(desk: Desk, fix_id: uuid.UUID, **body: Any) -> SuggestedFixOut:
    async with desk.session() as s:
        result = await service.record_outcome(
            s, **desk.ids, fix_id=fix_id, user_id=desk.engineer_id, body=OutcomeUpdate.model_validate(body)
        )
        await s.commit()
    return result.fix


# --- UC-019 ------------------------------------------------------------------------------------------------


async def test_uc019_a_new_suggestion_supersedes_the_active_one_and_bumps_the_version(desk: Desk) -> None:
    before = await desk.version()
    first = await suggest(desk, suggestion("Clear credentials"))
    second = await suggest(desk, suggestion("Re-register the account"))
    assert await desk.version() == before + 2
    async with desk.session() as s:
        listed = await service.list_suggested_fixes(s, **desk.ids)
    assert listed.active is not None
    assert listed.active.id == second.id
    assert listed.active.active
    assert [(f.id, f.active) for f in listed.history] == [(first.id, False)]
    assert listed.history[0].superseded_at is not None
    assert (second.status, second.user_decision, second.confidence_pct) == (FixStatus.PROPOSED, UserDecision.NONE, 80)


async def test_uc019_at_most_one_active_fix_per_session_is_enforced_by_the_database(desk: Desk) -> None:
    await suggest(desk)
    async with desk.session() as s:
        s.add(
            SessionSuggestedFix(
                account_id=desk.account_id,
                session_id=desk.session_id,
                title="second active",
                description="d",
                confidence_pct=1,
            )
        )
        with pytest.raises(IntegrityError):
            await s.flush()
    async with desk.session() as s:
        # Another session has its own active fix.
        await service.persist_suggested_fix(
            s, account_id=desk.account_id, session_id=desk.other_session_id, event=suggestion()
        )
        await s.commit()
        active = await s.scalar(select(func.count()).where(SessionSuggestedFix.superseded_at.is_(None)))
    assert active == 2


async def test_uc019_script_template_slug_resolves_to_the_accounts_active_template(
    desk: Desk, caplog: pytest.LogCaptureFixture
) -> None:
    async with desk.session() as s:
        template = await knowledge.create_template(
            s,
            account_id=desk.account_id,
            document=TemplateDocument(
                slug="reset-outlook",
                name="Reset Outlook",
                language=ScriptLanguage.POWERSHELL,
                body="Remove-Item $env:LOCALAPPDATA\\Microsoft\\Outlook -Recurse",
            ),
        )
        await s.commit()
    found = await suggest(
        desk,
        suggestion(
            script_template_slug="reset-outlook", ai_drafted_parameters={"user": "amy"}, ai_drafted_script="echo hi"
        ),
    )
    assert (found.script_template_id, found.ai_drafted_parameters, found.ai_drafted_script) == (
        template.id,
        {"user": "amy"},
        "echo hi",
    )
    with caplog.at_level(logging.WARNING, logger="deskpilot.diagnosis.service"):
        unknown = await suggest(desk, suggestion(script_template_slug="no-such-template"))
    assert unknown.script_template_id is None
    assert any("no-such-template" in r.getMessage() for r in caplog.records)
    async with desk.session() as s:
        await knowledge.deactivate_template(s, template.id)
        await s.commit()
    inactive = await suggest(desk, suggestion(script_template_slug="reset-outlook"))
    assert inactive.script_template_id is None


# --- UC-020 ------------------------------------------------------------------------------------------------


async def test_uc020_the_ais_outcome_is_stored_as_a_proposal_and_the_status_does_not_change(desk: Desk) -> None:
    fix = await suggest(desk)
    before = await desk.version()
    result = await propose(desk, fix.id, "failure", "Still prompting")
    assert result is not None
    assert result.state_version == before + 1
    assert result.fix.status is FixStatus.PROPOSED
    proposal = result.fix.ai_outcome_proposal
    assert proposal is not None
    assert (proposal.outcome, proposal.reason, proposal.resolution) == (
        "failure",
        "Still prompting",
        ProposalResolution.OPEN,
    )


async def test_uc020_a_proposal_for_another_sessions_fix_or_an_unknown_fix_is_silently_dropped(desk: Desk) -> None:
    async with desk.session() as s:
        other = await service.persist_suggested_fix(
            s, account_id=desk.account_id, session_id=desk.other_session_id, event=suggestion()
        )
        await s.commit()
    before = await desk.version()
    assert await propose(desk, other.fix.id) is None
    assert await propose(desk, uuid.uuid4()) is None
    assert await desk.version() == before
    async with desk.session() as s:
        untouched = await s.get(SessionSuggestedFix, other.fix.id)
        assert untouched is not None
        assert untouched.ai_outcome_proposal is None


async def test_uc020_a_proposal_for_a_fix_whose_outcome_is_final_is_dropped(desk: Desk) -> None:
    fix = await suggest(desk)
    await outcome(desk, fix.id, status="dismissed")
    assert await propose(desk, fix.id, "success") is None


# --- UC-021: the engineer's outcome -------------------------------------------------------------------------


async def test_uc021_pending_then_success_keeps_the_applied_time_and_the_pending_reason(desk: Desk) -> None:
    fix = await suggest(desk)
    pending = await outcome(desk, fix.id, status="applied_pending", pending_reason="Waiting for a reboot")
    assert (pending.status, pending.pending_reason, pending.verified_at) == (
        FixStatus.APPLIED_PENDING,
        "Waiting for a reboot",
        None,
    )
    assert pending.applied_at is not None
    done = await outcome(desk, fix.id, status="applied_success")
    assert (done.status, done.applied_at, done.pending_reason) == (
        FixStatus.APPLIED_SUCCESS,
        pending.applied_at,
        "Waiting for a reboot",
    )
    assert done.verified_at is not None
    with pytest.raises(FixTransitionNotAllowed):
        await outcome(desk, fix.id, status="applied_failure", failure_reason="late news")


async def test_uc021_partial_and_failure_store_their_notes_and_refuse_without(desk: Desk) -> None:
    fix = await suggest(desk)
    with pytest.raises(FixOutcomeIncomplete):
        await outcome(desk, fix.id, status="applied_partial")
    partial = await outcome(desk, fix.id, status="applied_partial", partial_notes="Works on desktop only")
    assert (partial.status, partial.partial_notes) == (FixStatus.APPLIED_PARTIAL, "Works on desktop only")
    other = await suggest(desk, suggestion("Another fix"))
    with pytest.raises(FixOutcomeIncomplete):
        await outcome(desk, other.id, status="applied_failure", failure_reason="  ")
    failed = await outcome(desk, other.id, status="applied_failure", failure_reason="No change")
    assert (failed.status, failed.failure_reason) == (FixStatus.APPLIED_FAILURE, "No change")


async def test_uc021_accepting_the_ais_proposal_applies_it_with_its_reason(desk: Desk) -> None:
    fix = await suggest(desk)
    await propose(desk, fix.id, "partial", "Works on desktop, not on mobile")
    accepted = await outcome(desk, fix.id, ai_proposal="accept")
    assert (accepted.status, accepted.partial_notes) == (FixStatus.APPLIED_PARTIAL, "Works on desktop, not on mobile")
    assert accepted.ai_outcome_proposal is not None
    assert accepted.ai_outcome_proposal.resolution is ProposalResolution.ACCEPTED
    assert accepted.ai_outcome_proposal.resolved_by_id == desk.engineer_id
    with pytest.raises(NoAIOutcomeProposal):  # it is no longer open
        await outcome(desk, fix.id, ai_proposal="reject")


async def test_uc021_rejecting_the_proposal_leaves_the_status_or_records_the_engineers(desk: Desk) -> None:
    fix = await suggest(desk)
    await propose(desk, fix.id, "success")
    rejected = await outcome(desk, fix.id, ai_proposal="reject")
    assert rejected.status is FixStatus.PROPOSED
    assert rejected.ai_outcome_proposal is not None
    assert rejected.ai_outcome_proposal.resolution is ProposalResolution.REJECTED
    await propose(desk, fix.id, "success")
    corrected = await outcome(desk, fix.id, ai_proposal="reject", status="applied_failure", failure_reason="No")
    assert corrected.status is FixStatus.APPLIED_FAILURE
    other = await suggest(desk, suggestion("Other"))
    await propose(desk, other.id, "success")
    with pytest.raises(ProposalMismatch):
        await outcome(desk, other.id, ai_proposal="accept", status="applied_failure", failure_reason="x")


async def test_uc021_a_direct_status_closes_an_open_proposal_as_agreed_or_not(desk: Desk) -> None:
    fix = await suggest(desk)
    await propose(desk, fix.id, "success")
    done = await outcome(desk, fix.id, status="applied_success")
    assert done.ai_outcome_proposal is not None
    assert done.ai_outcome_proposal.resolution is ProposalResolution.ACCEPTED
    other = await suggest(desk, suggestion("Other"))
    await propose(desk, other.id, "success")
    dismissed = await outcome(desk, other.id, status="dismissed")
    assert dismissed.ai_outcome_proposal is not None
    assert dismissed.ai_outcome_proposal.resolution is ProposalResolution.REJECTED


async def test_uc021_accept_or_reject_without_a_proposal_is_409(desk: Desk) -> None:
    fix = await suggest(desk)
    with pytest.raises(NoAIOutcomeProposal) as missing:
        await outcome(desk, fix.id, ai_proposal="accept")
    assert missing.value.status == 409


async def test_uc021_a_superseded_fix_can_still_get_its_outcome_as_history(desk: Desk) -> None:
    old = await suggest(desk, suggestion("Old"))
    await suggest(desk, suggestion("New"))
    failed = await outcome(desk, old.id, status="applied_failure", failure_reason="Did nothing")
    assert (failed.status, failed.active) == (FixStatus.APPLIED_FAILURE, False)


async def test_uc021_outcome_of_another_sessions_fix_is_not_found(desk: Desk) -> None:
    async with desk.session() as s:
        other = await service.persist_suggested_fix(
            s, account_id=desk.account_id, session_id=desk.other_session_id, event=suggestion()
        )
        await s.commit()
    with pytest.raises(SuggestedFixNotFound):
        await outcome(desk, other.fix.id, status="dismissed")


# --- UC-021: decision, resolve and escalate -----------------------------------------------------------------


async def decide(desk: Desk, fix_id: uuid.UUID, decision: str) -> SuggestedFixOut:
    async with desk.session() as s:
        result = await service.record_decision(
            s, **desk.ids, fix_id=fix_id, body=DecisionUpdate.model_validate({"decision": decision})
        )
        await s.commit()
    return result.fix


async def test_uc021_decision_follows_the_paths_the_fix_offers_and_only_on_the_active_fix(desk: Desk) -> None:
    fix = await suggest(desk, suggestion(ai_drafted_script="Remove-Item x"))
    chosen = await decide(desk, fix.id, "use_ai_script")
    assert (chosen.user_decision, chosen.decided_at is not None) == (UserDecision.USE_AI_SCRIPT, True)
    with pytest.raises(FixDecisionNotAllowed):
        await decide(desk, fix.id, "use_template")  # no template resolved
    reset = await decide(desk, fix.id, "none")
    assert (reset.user_decision, reset.decided_at) == (UserDecision.NONE, None)
    await suggest(desk, suggestion("Newer"))
    with pytest.raises(FixSuperseded) as superseded:
        await decide(desk, fix.id, "manual")
    assert (superseded.value.status, superseded.value.code) == (409, "fix_superseded")


async def test_uc021_resolve_marks_a_proposed_or_pending_active_fix_successful(desk: Desk) -> None:
    fix = await suggest(desk)
    await propose(desk, fix.id, "failure", "AI thought not")
    before = await desk.version()
    async with desk.session() as s:
        marked = await service.mark_active_fix_successful_on_resolve(s, **desk.ids)
        await s.commit()
    assert marked is not None
    assert marked.id == fix.id
    assert (marked.status, marked.applied_at is not None, marked.verified_at is not None) == (
        FixStatus.APPLIED_SUCCESS,
        True,
        True,
    )
    assert marked.ai_outcome_proposal is not None
    assert marked.ai_outcome_proposal.resolution is ProposalResolution.REJECTED
    assert await desk.version() == before + 1
    async with desk.session() as s:
        assert await service.mark_active_fix_successful_on_resolve(s, **desk.ids) is None  # already final


async def test_uc021_resolve_keeps_a_recorded_failure_and_does_nothing_without_a_fix(desk: Desk) -> None:
    async with desk.session() as s:
        assert await service.mark_active_fix_successful_on_resolve(s, **desk.ids) is None
    fix = await suggest(desk)
    await outcome(desk, fix.id, status="applied_failure", failure_reason="No change")
    async with desk.session() as s:
        assert await service.mark_active_fix_successful_on_resolve(s, **desk.ids) is None
        kept = await s.get(SessionSuggestedFix, fix.id)
        assert kept is not None
        assert kept.status == "applied_failure"


async def test_uc021_escalate_asks_for_an_outcome_while_the_active_fix_is_proposed_or_pending(desk: Desk) -> None:
    async with desk.session() as s:
        assert await service.fix_needing_outcome(s, **desk.ids) is None
    fix = await suggest(desk)
    async with desk.session() as s:
        needing = await service.fix_needing_outcome(s, **desk.ids)
    assert needing is not None
    assert needing.id == fix.id
    await outcome(desk, fix.id, status="applied_pending", pending_reason="Sync runs hourly")
    async with desk.session() as s:
        assert await service.fix_needing_outcome(s, **desk.ids) is not None
    await outcome(desk, fix.id, status="applied_failure", failure_reason="Sync did not help")
    async with desk.session() as s:
        assert await service.fix_needing_outcome(s, **desk.ids) is None


# --- one turn ----------------------------------------------------------------------------------------------


async def test_uc016_uc020_a_turn_writes_lane_then_facts_then_the_outcome_before_the_new_fix(desk: Desk) -> None:
    old = await suggest(desk, suggestion("Clear credentials"))
    # The lane must exist before [PROMOTE] refs are checked; the proposal must land on the fix it names even
    # though the same reply suggests the next fix.
    async with desk.session() as s:
        lane = (await service.apply_task_lane(s, **desk.ids, questions=questions("Which build?"), actions=None)).lane
        await s.commit()
    assert lane is not None
    question_id = lane.questions[0].id
    reply = (
        "That did not help.\n"
        '[QUESTIONS][{"text": "Which build?"}, {"text": "Is it domain-joined?"}][/QUESTIONS]\n'
        f'[PROMOTE]{{"source_type": "question", "source_ref": "{question_id}", "text": "Build 2408"}}[/PROMOTE]\n'
        f'[FIX_OUTCOME]{{"fix_id": "{old.id}", "outcome": "failure", "reason": "still prompts"}}[/FIX_OUTCOME]\n'
        '[SUGGEST_FIX]{"title": "Re-register the account", "description": "dsregcmd /leave", "confidence": 70}'
        "[/SUGGEST_FIX]"
    )
    events = parse_reply(reply).events
    async with desk.session() as s:
        row = await s.get(PilotSession, desk.session_id)
        assert row is not None
        done = await service.apply_turn(s, **desk.ids, events=events)
        row.status = "active"  # the turn's own update of the session row still commits
        await s.commit()
    assert done.lane.lane is not None
    assert next(q.id for q in done.lane.lane.questions) == question_id
    assert [f.text for f in done.promotions.facts] == ["Build 2408"]
    assert done.outcome is not None
    assert done.outcome.fix.id == old.id
    assert done.outcome.fix.ai_outcome_proposal is not None
    assert done.outcome.fix.ai_outcome_proposal.outcome == "failure"
    assert done.fix is not None
    assert done.fix.fix.title == "Re-register the account"
    async with desk.session() as s:
        listed = await service.list_suggested_fixes(s, **desk.ids)
    assert listed.active is not None
    assert listed.active.title == "Re-register the account"
    assert listed.history[0].ai_outcome_proposal is not None


async def test_a_turn_without_diagnosis_markers_clears_the_lane_and_reports_only_that(desk: Desk) -> None:
    async with desk.session() as s:
        await service.apply_task_lane(s, **desk.ids, questions=None, actions=actions("Reboot"))
        await s.commit()
    async with desk.session() as s:
        done = await service.apply_turn(s, **desk.ids, events=parse_reply("Plain answer.").events)
        await s.commit()
    assert (done.lane.lane, done.promotions.facts, done.outcome, done.fix) == (None, [], None, None)
    assert done.state_version == await desk.version()


async def test_apply_turn_names_a_dropped_outcome_and_skipped_facts(desk: Desk) -> None:
    promote = PromoteEvent(facts=(PromotedFact(source_type="question", source_ref=uuid.uuid4(), text="x"),))
    outcome_event = FixOutcomeEvent(fix_id=uuid.uuid4(), outcome="success")
    async with desk.session() as s:
        done = await service.apply_turn(s, **desk.ids, events=[promote, outcome_event])
    assert len(done.notes) == 2
    assert "dropped" in done.notes[1]
