"""Turns: responding, the step cap, failed generation and its retry, races, flow fallback mid-session."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from sqlalchemy import func, select, update

from deskpilot.errors import Conflict
from deskpilot.llm import LLM, Message, ProviderUnavailable, RequestParams
from deskpilot.llm.testing import FunctionModel, Reply
from deskpilot.pilot import service
from deskpilot.pilot.errors import (
    GenerationPending,
    InvalidResponse,
    NoGenerationPending,
    SessionAccessDenied,
    SessionNotFound,
    StepAlreadyAnswered,
    StepGenerationFailed,
    StepLimitReached,
    UnknownOption,
)
from deskpilot.pilot.models import PilotSession, SessionStep
from deskpilot.pilot.schemas import SessionCreate, StepResponse
from tests.conftest import make_tenant
from tests.pilot.conftest import Desk, action, classification, conversation, question, resolution, scripted

COFFEE = "The coffee machine on floor 3 is broken"


async def start(desk: Desk, llm_items: Sequence[object] = ()) -> tuple[uuid.UUID, service.PilotDeps, object]:
    llm, model, _recorder = scripted(classification("Coffee machine broken", "hardware"), question(), *llm_items)  # type: ignore[arg-type]
    deps = desk.deps(llm)
    started = await desk.call(service.start_session, deps, desk.engineer, SessionCreate(text=COFFEE))
    return started.session_id, deps, model


async def test_fp027_respond_records_the_answer_and_returns_the_next_step(desk: Desk) -> None:
    sid, deps, model = await start(desk, [action(confidence=0.62)])
    detail = await desk.call(service.get_session, desk.engineer, sid)
    first_id = detail.steps[0].step_id
    turn = await desk.call(service.respond, deps, desk.engineer, sid,
                           StepResponse(step_id=first_id, selected_option="desktop", free_text_input="only on PC 12"))
    assert turn.status == "active"
    assert turn.next_step.step_order == 1
    assert turn.next_step.content["type"] == "action"
    assert (turn.confidence_score, turn.confidence_tier) == (0.62, "exploring")  # FP-012
    assert turn.resolution_suggested is False
    assert (turn.step_count, turn.steps_remaining) == (2, 28)
    # FP-026/FP-027: the model sees the whole branch conversation rebuilt from rows, ending with the answer.
    messages = model.requests[-1].messages  # type: ignore[attr-defined]
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[-1].content == "Selected: Desktop only\nonly on PC 12"
    assert '"type":"question"' in messages[2].content
    detail = await desk.call(service.get_session, desk.engineer, sid)
    answered = detail.steps[0]
    # FP-025: the response is recorded on the step.
    assert (answered.selected_option, answered.free_text_input, answered.was_skipped) == ("desktop", "only on PC 12",
                                                                                          False)
    assert answered.responded_at is not None
    assert detail.current_step_id == turn.next_step.step_id


async def test_fp025_free_text_skip_and_action_result_are_recorded(desk: Desk) -> None:
    sid, deps, _ = await start(desk, [action(), resolution()])
    await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(was_skipped=True))
    turn = await desk.call(service.respond, deps, desk.engineer, sid,
                           StepResponse(action_result={"success": False, "details": "still broken"}))
    assert turn.resolution_suggested
    assert turn.resolution_summary == "Stale cached credentials; cleared them"
    steps = (await desk.call(service.get_session, desk.engineer, sid)).steps
    assert steps[0].was_skipped
    assert (steps[1].action_result, steps[1].action_details) == ("failure", "still broken")
    async with desk.session() as s:
        row = await s.scalar(select(SessionStep).where(SessionStep.id == steps[0].step_id))
        assert row is not None
        assert row.was_free_text is False
    texts = [text for _, text in await conversation(desk, sid)]
    assert texts[2] == "I can't check this right now / I don't know."
    assert texts[4] == "Action did not work.\nDetails: still broken"


async def test_fp025_unknown_option_values_are_refused_with_a_stable_code(desk: Desk) -> None:
    sid, deps, model = await start(desk)
    before = len(model.requests)  # type: ignore[attr-defined]
    with pytest.raises(UnknownOption) as caught:
        await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option="maybe"))
    assert caught.value.code == "unknown_option"
    assert caught.value.status == 422
    assert caught.value.extra["options"] == ["web", "desktop"]
    assert len(model.requests) == before  # type: ignore[attr-defined]
    detail = await desk.call(service.get_session, desk.engineer, sid)
    assert detail.steps[0].responded_at is None


async def test_fp001_step_cap(desk: Desk) -> None:
    sid, deps, _ = await start(desk)
    async with desk.session() as s:
        await s.execute(update(PilotSession).where(PilotSession.id == sid).values(step_count=30))
        await s.commit()
    with pytest.raises(StepLimitReached) as caught:
        await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option="web"))
    assert caught.value.detail == "Maximum steps reached for this session"
    assert caught.value.status == 409
    detail = await desk.call(service.get_session, desk.engineer, sid)
    assert detail.steps[0].responded_at is None  # checked before recording


async def test_fp001_the_30th_step_is_the_last(desk: Desk) -> None:
    replies = [question(options=(("Yes", "yes"), ("No", "no"))) for _ in range(29)]
    sid, deps, _ = await start(desk, replies)
    for answer in ["web"] + ["yes"] * 28:
        turn = await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option=answer))
    assert (turn.step_count, turn.steps_remaining) == (30, 0)
    with pytest.raises(StepLimitReached):
        await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option="yes"))


async def test_fp004_malformed_output_keeps_the_response_and_retry_generation_continues(desk: Desk) -> None:
    """FP-004: one corrective retry, then a clear error; the answer stays stored for `retry_generation`."""
    sid, deps, model = await start(desk, ["this is not json", Reply.json({"type": "question", "content": ""})])
    with pytest.raises(StepGenerationFailed) as caught:
        await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option="web"))
    error = caught.value
    assert error.code == "step_generation_failed"
    assert error.extra == {"session_id": str(sid), "cause": "llm_invalid_output"}
    assert "saved" in error.detail
    # The corrective retry happened (two requests), then the turn gave up without losing the answer.
    assert "valid JSON" in model.requests[-1].last_user_text  # type: ignore[attr-defined]
    detail = await desk.call(service.get_session, desk.engineer, sid)
    assert detail.steps[0].selected_option == "web"
    assert detail.awaiting_generation
    assert detail.generation_error == "llm_invalid_output"
    assert detail.current_step_id is None
    with pytest.raises(GenerationPending) as pending:
        await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option="web"))
    assert pending.value.status == 409
    model.add(action("Check the boiler pressure"))  # type: ignore[attr-defined]
    turn = await desk.call(service.retry_generation, deps, desk.engineer, sid)
    assert turn.next_step.content["text"] == "Check the boiler pressure"
    assert turn.next_step.step_order == 1
    assert model.requests[-1].messages[-1].content == "Selected: Yes, web too"  # type: ignore[attr-defined]
    detail = await desk.call(service.get_session, desk.engineer, sid)
    assert not detail.awaiting_generation
    assert detail.generation_error is None
    with pytest.raises(NoGenerationPending):
        await desk.call(service.retry_generation, deps, desk.engineer, sid)


async def test_provider_timeout_after_fallbacks_is_a_clear_error(desk: Desk) -> None:
    sid, deps, _ = await start(desk, [ProviderUnavailable("all down", model="test:scripted")])
    with pytest.raises(StepGenerationFailed) as caught:
        await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option="web"))
    assert caught.value.extra["cause"] == "llm_provider_unavailable"


async def test_fp025_concurrent_responses_to_one_step_one_wins_the_other_gets_409(desk: Desk) -> None:
    sid, deps, _model = await start(desk, [Reply(text=action().text, delay_s=0.05)])
    step_id = (await desk.call(service.get_session, desk.engineer, sid)).steps[0].step_id
    results = await asyncio.gather(
        desk.call(service.respond, deps, desk.engineer, sid, StepResponse(step_id=step_id, selected_option="web")),
        desk.call(service.respond, deps, desk.engineer, sid, StepResponse(step_id=step_id, selected_option="desktop")),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1, results
    assert isinstance(errors[0], StepAlreadyAnswered)
    assert errors[0].status == 409
    assert [role for role, _ in await conversation(desk, sid)].count("user") == 2  # the intake and one answer
    async with desk.session() as s:
        steps = await s.scalar(select(func.count()).where(SessionStep.session_id == sid))
        assert steps == 2


async def test_a_stale_step_id_is_refused(desk: Desk) -> None:
    sid, deps, _ = await start(desk, [action()])
    first = (await desk.call(service.get_session, desk.engineer, sid)).steps[0].step_id
    await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(step_id=first, selected_option="web"))
    with pytest.raises(StepAlreadyAnswered):
        await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(step_id=first, selected_option="web"))


async def test_a_step_generated_while_the_session_was_paused_is_kept(desk: Desk) -> None:
    sid_box: list[uuid.UUID] = []

    async def pause_then_answer() -> str:
        # Another request pauses the session while the model is still thinking.
        await desk.call(service.pause, desk.engineer, sid_box[0])
        return action("Check the water tank").text

    script: list[Reply | Callable[[], Awaitable[str]]] = [classification(), question(), pause_then_answer]

    async def answer(messages: Sequence[Message], params: RequestParams) -> str | Reply:
        item = script.pop(0)
        return item if isinstance(item, Reply) else await item()

    deps = desk.deps(LLM.for_model(FunctionModel(answer)))
    started = await desk.call(service.start_session, deps, desk.engineer, SessionCreate(text=COFFEE))
    sid_box.append(started.session_id)
    turn = await desk.call(service.respond, deps, desk.engineer, started.session_id,
                           StepResponse(selected_option="web"))
    assert turn.status == "paused"
    assert turn.next_step.content["text"] == "Check the water tank"
    detail = await desk.call(service.get_session, desk.engineer, started.session_id)
    assert detail.current_step_id == turn.next_step.step_id
    assert not detail.awaiting_generation


async def test_provider_down_mid_session_switches_to_the_matched_flow(desk: Desk) -> None:
    from deskpilot.knowledge import service as knowledge

    async with desk.session() as s:
        await knowledge.load_starter_library(s, desk.account_id)
        await s.commit()
    llm, model, _ = scripted(classification(), question())
    deps = desk.deps(llm)
    started = await desk.call(service.start_session, deps, desk.engineer,
                              SessionCreate(text="Outlook keeps asking for the password"))
    assert started.mode == "ai"
    model.add(ProviderUnavailable("down", model="test:scripted"))
    turn = await desk.call(service.respond, deps, desk.engineer, started.session_id,
                           StepResponse(selected_option="web"))
    assert turn.mode == "flow"
    assert turn.next_step.content["flow_node_id"] == "scope"
    # Flow mode stays on: the next answer follows the runbook without asking the model.
    requests = len(model.requests)
    turn = await desk.call(service.respond, deps, desk.engineer, started.session_id,
                           StepResponse(selected_option="web-too"))
    assert turn.next_step.content["flow_node_id"] == "account-check"
    assert len(model.requests) == requests
    with pytest.raises(InvalidResponse) as caught:
        await desk.call(service.respond, deps, desk.engineer, started.session_id, StepResponse())
    assert caught.value.code == "action_result_required"


async def test_fp031_paused_sessions_take_no_responses(desk: Desk) -> None:
    sid, deps, _ = await start(desk)
    summary = await desk.call(service.pause, desk.engineer, sid)
    assert summary.status == "paused"
    with pytest.raises(Conflict, match="Session is paused, not active"):
        await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option="web"))
    with pytest.raises(Conflict, match="Cannot pause session in status: paused"):
        await desk.call(service.pause, desk.engineer, sid)
    assert (await desk.call(service.resume, desk.engineer, sid)).status == "active"


async def test_fp034_another_account_cannot_see_the_session_and_a_stranger_may_not_act(desk: Desk) -> None:
    """FP-034 account scoping gives 404; FP-032/FP-033: a visible session the caller may not act on is 403."""
    sid, deps, _ = await start(desk)
    other = await make_tenant(desk.db, "Globex", password=None)  # type: ignore[arg-type]
    from deskpilot.identity.models import Role
    from deskpilot.pilot.access import Caller

    foreign = Caller(other.users[Role.ENGINEER], other.account_id, other.team_id, "Foreign")
    async with desk.db.session(other.account_id) as s:
        with pytest.raises(SessionNotFound) as caught:
            await service.get_session(s, foreign, sid)
    assert caught.value.status == 404
    with pytest.raises(SessionAccessDenied) as denied:
        await desk.call(service.respond, deps, desk.colleague, sid, StepResponse(selected_option="web"))
    assert denied.value.status == 403
    assert denied.value.detail == "Not authorized to access this session"
    # Listing shows only the caller's own sessions.
    assert [s.id for s in await desk.call(service.list_sessions, desk.engineer)] == [sid]
    assert await desk.call(service.list_sessions, desk.colleague) == []


async def test_token_totals_sum_every_call_of_the_session(desk: Desk) -> None:
    """FP-020/FP-027: input and output tokens of every call are summed on the session."""
    sid, deps, _ = await start(desk, [action()])
    await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option="web"))
    detail = await desk.call(service.get_session, desk.engineer, sid)
    assert (detail.total_input_tokens, detail.total_output_tokens) == (50 + 200 + 220, 10 + 40 + 45)


async def test_fp025_the_conditional_update_refuses_the_second_writer(desk: Desk) -> None:
    """Both requests read the step before either writes: the database decides, not the read."""
    from deskpilot.pilot import engine
    from deskpilot.storage import utcnow

    sid, _, _ = await start(desk)
    async with desk.session() as first, desk.session() as second:
        _, step_a = await engine.load_turn(first, desk.engineer, sid)
        _, step_b = await engine.load_turn(second, desk.engineer, sid)
        assert step_a is not None
        assert step_b is not None
        await engine.record_response(first, desk.engineer, step_a, StepResponse(selected_option="web"), utcnow())
        await first.commit()
        with pytest.raises(StepAlreadyAnswered):
            await engine.record_response(second, desk.engineer, step_b, StepResponse(selected_option="desktop"),
                                         utcnow())
    detail = await desk.call(service.get_session, desk.engineer, sid)
    assert detail.steps[0].selected_option == "web"


async def test_fp025_the_answer_unit_refuses_the_second_writer_and_writes_nothing_of_it(desk: Desk) -> None:
    """The answer's unit of work (step CAS with its conversation seq + session CAS) commits whole or not at all."""
    from deskpilot.pilot import engine
    from deskpilot.storage import utcnow

    sid, _, _ = await start(desk)
    async with desk.session() as first, desk.session() as second:
        session_a, step_a = await engine.load_turn(first, desk.engineer, sid)
        session_b, step_b = await engine.load_turn(second, desk.engineer, sid)
        assert step_a is not None
        assert step_b is not None
        await engine.commit_answer(first, desk.engineer, session_a, step_a, StepResponse(selected_option="web"),
                                   "Selected: Web", None, utcnow())
        assert (session_a.awaiting_generation, session_a.current_step_id) == (True, None)
        with pytest.raises(StepAlreadyAnswered):
            await engine.commit_answer(second, desk.engineer, session_b, step_b,
                                       StepResponse(selected_option="desktop"), "Selected: Desktop", None, utcnow())
    users = [text for role, text in await conversation(desk, sid) if role == "user"]
    assert users[-1] == "Selected: Yes, web too"  # the history rebuilds the text from the stored answer
    assert "Selected: Desktop" not in users
    detail = await desk.call(service.get_session, desk.engineer, sid)
    assert detail.steps[0].selected_option == "web"


async def test_a_turn_is_four_thread_round_trips_on_sqlite(desk: Desk, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two reads, the answer's unit of work and the step's: each unit is one trip to aiosqlite's thread."""
    from deskpilot.storage.sqlite import OneHopConnection

    if desk.db.dialect != "sqlite":
        pytest.skip("thread round trips are aiosqlite's")
    sid, deps, _ = await start(desk, [action()])
    trips: list[str] = []
    original = OneHopConnection.run

    async def counting(self: OneHopConnection, fn: Any, *args: Any) -> Any:
        trips.append(fn.__name__)
        return await original(self, fn, *args)

    monkeypatch.setattr(OneHopConnection, "run", counting)
    turn = await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option="web"))
    assert turn.next_step.content["type"] == "action"
    assert trips == ["_statement", "_statement", "_apply", "_apply"]
