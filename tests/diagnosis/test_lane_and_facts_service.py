"""Task lane and facts in the database (UC-015 … UC-018), on SQLite and PostgreSQL, with state_version bumps."""

from __future__ import annotations

import logging
import uuid

import pytest
from sqlalchemy import select

from deskpilot.chat.events import PromotedFact, PromoteEvent
from deskpilot.diagnosis import service
from deskpilot.diagnosis.errors import FactNotEditable, FactNotFound, FactSynthesisEmpty, TaskLaneItemNotFound
from deskpilot.diagnosis.lane import ItemStatus, StoredLane
from deskpilot.diagnosis.models import SessionFact, SessionTaskLane
from deskpilot.diagnosis.schemas import (
    FactCreate,
    FactSynthesis,
    FactUpdate,
    LaneItemUpdate,
    PromoteRequest,
    PromotionResult,
)
from deskpilot.llm import LLM
from deskpilot.llm.testing import Reply, ScriptedModel
from deskpilot.pilot.errors import SessionNotFound
from deskpilot.pilot.models import PilotSession
from tests.diagnosis.conftest import Desk, actions, questions


async def set_lane(desk: Desk, *qs: str, acts: tuple[str, ...] = ()) -> StoredLane:
    async with desk.session() as s:
        state = await service.apply_task_lane(
            s, **desk.ids, questions=questions(*qs) if qs else None, actions=actions(*acts) if acts else None
        )
        await s.commit()
    assert state.lane is not None
    return state.lane


def promoted(source_type: str, text: str, ref: uuid.UUID | None = None) -> PromotedFact:
    return PromotedFact.model_validate({"source_type": source_type, "text": text, "source_ref": ref})


async def promote(desk: Desk, *facts: PromotedFact) -> PromotionResult:
    async with desk.session() as s:
        result = await service.record_promotions(s, **desk.ids, event=PromoteEvent(facts=facts))
        await s.commit()
    return result


async def facts(desk: Desk) -> list[tuple[str, str]]:
    async with desk.session() as s:
        listed = await service.list_facts(s, **desk.ids)
    return [(f.source_type.value, f.text) for f in listed.facts]


# --- task lane --------------------------------------------------------------------------------------


async def test_uc015_uc016_the_lane_is_stored_with_stable_ids_and_cleared_by_a_turn_without_items(desk: Desk) -> None:
    v0 = await desk.version()
    first = await set_lane(desk, "Is MFA on?", acts=("Clear credentials",))
    assert await desk.version() == v0 + 1
    second = await set_lane(desk, "Is MFA on?", "Since when?")
    assert second.questions[0].id == first.questions[0].id
    assert second.actions == ()
    async with desk.session() as s:
        cleared = await service.apply_task_lane(s, **desk.ids, questions=None, actions=None)
        await s.commit()
        assert cleared.lane is None
    async with desk.session() as s:
        assert (await service.get_task_lane(s, **desk.ids)).lane is None
        assert await s.scalar(select(SessionTaskLane).where(SessionTaskLane.session_id == desk.session_id)) is None
    assert await desk.version() == v0 + 3


async def test_uc015_an_unchanged_lane_writes_nothing_and_keeps_the_version(desk: Desk) -> None:
    await set_lane(desk, "Is MFA on?")
    before = await desk.version()
    await set_lane(desk, "Is MFA on?")
    async with desk.session() as s:
        state = await service.apply_task_lane(s, **desk.ids, questions=None, actions=None)
        state = await service.apply_task_lane(s, **desk.ids, questions=None, actions=None)
        await s.commit()
    assert (state.lane, state.state_version) == (None, before + 1)  # one clear, then nothing to do


async def test_engineer_checks_and_skips_lane_items_and_each_change_bumps_the_version(desk: Desk) -> None:
    lane = await set_lane(desk, "Is MFA on?", acts=("Clear credentials",))
    before = await desk.version()
    async with desk.session() as s:
        answered = await service.update_lane_item(
            s,
            **desk.ids,
            item_id=lane.questions[0].id,
            change=LaneItemUpdate(status=ItemStatus.DONE, note="Yes, per-user MFA"),
        )
        skipped = await service.update_lane_item(
            s, **desk.ids, item_id=lane.actions[0].id, change=LaneItemUpdate(status=ItemStatus.SKIPPED)
        )
        await s.commit()
    assert answered.state_version == before + 1
    assert skipped.state_version == before + 2
    async with desk.session() as s:
        stored = (await service.get_task_lane(s, **desk.ids)).lane
    assert stored is not None
    assert (stored.questions[0].status, stored.questions[0].answer) == (ItemStatus.DONE, "Yes, per-user MFA")
    assert (stored.actions[0].status, stored.actions[0].result) == (ItemStatus.SKIPPED, None)
    async with desk.session() as s:
        with pytest.raises(TaskLaneItemNotFound):
            await service.update_lane_item(
                s, **desk.ids, item_id=uuid.uuid4(), change=LaneItemUpdate(status=ItemStatus.DONE)
            )


# --- facts from the AI --------------------------------------------------------------------------------


async def test_uc017_promoted_facts_are_stored_without_author_and_bump_the_version_once(desk: Desk) -> None:
    lane = await set_lane(desk, "Is MFA on?", acts=("Clear credentials",))
    before = await desk.version()
    result = await promote(
        desk,
        promoted("question", "MFA is enforced per user", lane.questions[0].id),
        promoted("diagnostic_check", "Cached credentials were stale", lane.actions[0].id),
        promoted("ai_synthesis", "The token broker is the likely cause"),
    )
    assert result.skipped == []
    assert result.state_version == before + 1 == await desk.version()
    assert [(f.source_type.value, f.source_ref, f.created_by_id) for f in result.facts] == [
        ("question", lane.questions[0].id, None),
        ("diagnostic_check", lane.actions[0].id, None),
        ("ai_synthesis", None, None),
    ]
    assert [f.editable for f in result.facts] == [False, False, True]


async def test_uc017_invalid_promotions_are_skipped_with_a_warning_and_never_raise(
    desk: Desk, caplog: pytest.LogCaptureFixture
) -> None:
    lane = await set_lane(desk, "Is MFA on?", acts=("Clear credentials",))
    before = await desk.version()
    # The event type cannot hold a user_note; built unchecked (as a buggy decoder might) to prove the service refuses.
    user_note = PromotedFact.model_construct(
        source_type="user_note",  # type: ignore[arg-type]
        source_ref=None,
        text="AI poses as engineer",
        summary=None,
    )
    with caplog.at_level(logging.WARNING, logger="deskpilot.diagnosis.service"):
        result = await promote(
            desk,
            promoted("question", "Ref outside the lane", uuid.uuid4()),
            promoted("question", "Ref of the wrong kind", lane.actions[0].id),
            promoted("diagnostic_check", "Also the wrong kind", lane.questions[0].id),
            user_note,
        )
    assert result.facts == []
    assert len(result.skipped) == 4
    assert "user_note" in result.skipped[3]
    assert sum("promoted fact" in r.getMessage() for r in caplog.records) == 4
    assert await desk.version() == before  # nothing stored, nothing bumped
    assert await facts(desk) == []


async def test_uc011_ai_synthesis_forces_source_ref_none_and_a_refless_question_fact_is_kept(desk: Desk) -> None:
    lane = await set_lane(desk, "Is MFA on?")
    result = await promote(
        desk,
        promoted("ai_synthesis", "Synthesis with a ref", lane.questions[0].id),
        promoted("question", "The parser dropped an unreadable ref"),
    )
    assert [(f.source_type.value, f.source_ref) for f in result.facts] == [("ai_synthesis", None), ("question", None)]


async def test_uc017_a_fact_repeated_by_a_later_turn_is_not_stored_twice(desk: Desk) -> None:
    lane = await set_lane(desk, "Is MFA on?")
    await promote(desk, promoted("question", "MFA is enforced", lane.questions[0].id))
    again = await promote(desk, promoted("question", "MFA is enforced", lane.questions[0].id))
    assert again.facts == []
    assert again.skipped == ["'MFA is enforced': already in what we know"]
    assert await facts(desk) == [("question", "MFA is enforced")]


async def test_uc016_promotion_refs_resolve_against_the_lane_written_earlier_in_the_same_turn(desk: Desk) -> None:
    async with desk.session() as s:
        lane = (await service.apply_task_lane(s, **desk.ids, questions=questions("Is MFA on?"), actions=None)).lane
        assert lane is not None
        result = await service.record_promotions(
            s, **desk.ids, event=PromoteEvent(facts=(promoted("question", "MFA on", lane.questions[0].id),))
        )
        await s.commit()
    assert [f.source_ref for f in result.facts] == [lane.questions[0].id]


async def test_no_promote_event_stores_nothing_and_reports_the_current_version(desk: Desk) -> None:
    before = await desk.version()
    async with desk.session() as s:
        result = await service.record_promotions(s, **desk.ids, event=None)
    assert (result.state_version, result.facts) == (before, [])


async def test_version_bumps_keep_a_loaded_session_in_step_so_its_own_update_still_commits(desk: Desk) -> None:
    """The chat turn holds the session row; our UPDATEs must not make its version-checked flush fail."""
    async with desk.session() as s:
        row = await s.get(PilotSession, desk.session_id)
        assert row is not None
        start = row.state_version
        await service.record_promotions(
            s, **desk.ids, event=PromoteEvent(facts=(promoted("ai_synthesis", "Token broker"),))
        )
        assert row.state_version == start + 1
        row.status = "paused"
        await s.commit()
    assert await desk.version() == start + 2


# --- facts from the engineer ----------------------------------------------------------------------------


async def test_uc018_add_edit_and_soft_delete_a_note_each_bumping_the_version(desk: Desk) -> None:
    v0 = await desk.version()
    async with desk.session() as s:
        added = await service.add_user_note(
            s, **desk.ids, user_id=desk.engineer_id, body=FactCreate(text="Client rebooted at 9:00", summary="reboot")
        )
        await s.commit()
    assert (added.state_version, added.fact.source_type.value, added.fact.created_by_id) == (
        v0 + 1,
        "user_note",
        desk.engineer_id,
    )
    async with desk.session() as s:
        edited = await service.edit_fact(
            s, **desk.ids, fact_id=added.fact.id, body=FactUpdate(text="Client rebooted at 9:30", summary=None)
        )
        await s.commit()
    assert (edited.state_version, edited.fact.text, edited.fact.summary) == (v0 + 2, "Client rebooted at 9:30", None)
    async with desk.session() as s:
        deleted = await service.delete_fact(s, **desk.ids, fact_id=added.fact.id)
        await s.commit()
    assert deleted.state_version == v0 + 3
    assert deleted.fact.deleted_at is not None
    assert await facts(desk) == []
    async with desk.session() as s:
        kept = await s.get(SessionFact, added.fact.id)
        assert kept is not None
        assert kept.deleted_at is not None
        with pytest.raises(FactNotFound):
            await service.edit_fact(s, **desk.ids, fact_id=added.fact.id, body=FactUpdate(text="again"))
        with pytest.raises(FactNotFound):
            await service.delete_fact(s, **desk.ids, fact_id=added.fact.id)


async def test_uc018_question_and_check_facts_are_not_edited_but_can_be_deleted(desk: Desk) -> None:
    lane = await set_lane(desk, "Is MFA on?", acts=("Clear credentials",))
    result = await promote(
        desk,
        promoted("question", "MFA on", lane.questions[0].id),
        promoted("diagnostic_check", "Creds stale", lane.actions[0].id),
        promoted("ai_synthesis", "Token broker"),
    )
    question_fact, check_fact, synthesis = result.facts
    async with desk.session() as s:
        for fact in (question_fact, check_fact):
            with pytest.raises(FactNotEditable) as refused:
                await service.edit_fact(s, **desk.ids, fact_id=fact.id, body=FactUpdate(text="changed"))
            assert (refused.value.status, refused.value.code) == (403, "fact_not_editable")
            assert "edit the source item instead" in refused.value.detail
        edited = await service.edit_fact(s, **desk.ids, fact_id=synthesis.id, body=FactUpdate(summary="broker"))
        await service.delete_fact(s, **desk.ids, fact_id=question_fact.id)
        await s.commit()
    assert (edited.fact.text, edited.fact.summary) == ("Token broker", "broker")
    assert await facts(desk) == [("diagnostic_check", "Creds stale"), ("ai_synthesis", "Token broker")]


async def test_facts_are_per_session_and_a_missing_session_is_not_found(desk: Desk) -> None:
    async with desk.session() as s:
        await service.add_user_note(s, **desk.ids, user_id=desk.engineer_id, body=FactCreate(text="here"))
        await s.commit()
        other = await service.list_facts(s, account_id=desk.account_id, session_id=desk.other_session_id)
        assert other.facts == []
        with pytest.raises(SessionNotFound):
            await service.add_user_note(
                s,
                account_id=desk.account_id,
                session_id=uuid.uuid4(),
                user_id=desk.engineer_id,
                body=FactCreate(text="nowhere"),
            )


# --- promoting a lane item ------------------------------------------------------------------------------


def scripted(*replies: str | Reply) -> tuple[LLM, ScriptedModel]:
    model = ScriptedModel(replies)
    return LLM.for_model(model), model


async def test_uc018_promote_with_proposed_text_needs_no_model(desk: Desk) -> None:
    lane = await set_lane(desk, "Is MFA on?", acts=("Clear credentials",))
    llm, model = scripted()
    async with desk.session() as s:
        result = await service.promote_item(
            s,
            llm,
            **desk.ids,
            user_id=desk.engineer_id,
            body=PromoteRequest(item_id=lane.actions[0].id, proposed_text="Three stale entries removed"),
        )
        await s.commit()
    assert (result.fact.source_type.value, result.fact.source_ref, result.fact.created_by_id) == (
        "diagnostic_check",
        lane.actions[0].id,
        desk.engineer_id,
    )
    assert model.requests == []


async def test_uc018_promote_without_text_asks_the_quick_model_with_the_items_answer(desk: Desk) -> None:
    lane = await set_lane(desk, "Is MFA on?")
    async with desk.session() as s:
        await service.update_lane_item(
            s,
            **desk.ids,
            item_id=lane.questions[0].id,
            change=LaneItemUpdate(status=ItemStatus.DONE, note="yes, per-user"),
        )
        await s.commit()
    llm, model = scripted(Reply.json(FactSynthesis(text="MFA is enforced per user.", summary="MFA per user")))
    before = await desk.version()
    async with desk.session() as s:
        result = await service.promote_item(
            s, llm, **desk.ids, user_id=desk.engineer_id, body=PromoteRequest(item_id=lane.questions[0].id)
        )
        await s.commit()
    assert (result.fact.text, result.fact.summary, result.fact.source_type.value) == (
        "MFA is enforced per user.",
        "MFA per user",
        "question",
    )
    assert result.state_version == before + 1
    prompt = model.requests[0].messages[-1].content
    assert "Question: Is MFA on?" in prompt
    assert "Answer: yes, per-user" in prompt
    assert "Problem: Outlook keeps asking for the password" in prompt


@pytest.mark.parametrize("answer", [FactSynthesis(text=None), FactSynthesis(text="   ")])
async def test_uc018_a_null_or_empty_synthesis_is_422_and_stores_nothing(desk: Desk, answer: FactSynthesis) -> None:
    lane = await set_lane(desk, "Is MFA on?")
    llm, _ = scripted(Reply.json(answer))
    before = await desk.version()
    async with desk.session() as s:
        with pytest.raises(FactSynthesisEmpty) as empty:
            await service.promote_item(
                s, llm, **desk.ids, user_id=desk.engineer_id, body=PromoteRequest(item_id=lane.questions[0].id)
            )
    assert (empty.value.status, empty.value.code) == (422, "fact_synthesis_empty")
    assert await desk.version() == before
    assert await facts(desk) == []


async def test_promoting_an_item_not_in_the_lane_is_404(desk: Desk) -> None:
    await set_lane(desk, "Is MFA on?")
    llm, model = scripted()
    async with desk.session() as s:
        with pytest.raises(TaskLaneItemNotFound):
            await service.promote_item(
                s,
                llm,
                **desk.ids,
                user_id=desk.engineer_id,
                body=PromoteRequest(item_id=uuid.uuid4(), proposed_text="x"),
            )
    assert model.requests == []


async def test_prompt_state_shows_lane_ids_statuses_fact_texts_and_the_active_fix(desk: Desk) -> None:
    lane = await set_lane(desk, "Is MFA on?", acts=("Clear credentials",))
    await promote(desk, promoted("ai_synthesis", "Token broker"))
    async with desk.session() as s:
        state = await service.prompt_state(s, desk.session_id)
    assert state.lane is not None
    assert [(q.id, q.text, q.status) for q in state.lane.questions] == [(lane.questions[0].id, "Is MFA on?", "pending")]
    assert [(a.id, a.label, a.status) for a in state.lane.actions] == [
        (lane.actions[0].id, "Clear credentials", "pending")]
    assert (state.facts, state.active_fix, state.state_version) == (("Token broker",), None, await desk.version())
