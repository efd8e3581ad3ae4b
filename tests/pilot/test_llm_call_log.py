"""The compact llm_calls log of a Pilot session rebuilds exactly what the model received, across forks and switches."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from deskpilot.llm import LLM, SqlRecorder, reconstruct_messages
from deskpilot.llm.models import LLMCall, LLMPrompt
from deskpilot.llm.testing import ScriptedModel
from deskpilot.pilot import service
from deskpilot.pilot.schemas import SessionCreate, StepResponse
from tests.pilot.conftest import Desk, action, classification, fork, question


async def _rows(desk: Desk) -> list[LLMCall]:
    async with desk.session() as s:
        return list((await s.scalars(select(LLMCall).order_by(LLMCall.created_at))).all())


async def _check_log(desk: Desk, model: ScriptedModel) -> list[LLMCall]:
    """Every request the model got is rebuilt, in order, from its row."""
    rows = await _rows(desk)
    assert len(rows) == len(model.requests)
    async with desk.session() as s:
        for row, request in zip(rows, model.requests, strict=True):
            assert await reconstruct_messages(s, row.id) == [m.to_dict() for m in request.messages]
    return rows


async def test_a_pilot_session_is_logged_as_deltas_and_rebuilt_exactly(desk: Desk) -> None:
    model = ScriptedModel([
        classification(), question(), "not json",  # a corrective retry inside the second turn
        question("Does it happen on another PC?", options=(("Yes", "yes"), ("No", "no"))),
        action(), fork("Token broker", "Outlook profile"),
        question("Profile question?", options=(("Yes", "yes"), ("No", "no"))),
        action("Token broker action"),
        action("Another profile action"),
    ])
    llm = LLM.for_model(model, recorder=SqlRecorder(desk.db))
    deps = desk.deps(llm)
    started = await desk.call(service.start_session, deps, desk.engineer, SessionCreate(text="Outlook prompts"))
    sid = started.session_id
    await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option="desktop"))
    await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option="no"))
    turn = await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(action_result={"success": False}))
    token_id, profile_id = (uuid.UUID(b["branch_id"]) for b in turn.next_step.content["fork_branches"])
    # Switch to the second branch, back to the first (its first step), back to the second and go on there.
    await desk.call(service.switch_branch, deps, desk.engineer, sid, profile_id)
    await desk.call(service.switch_branch, deps, desk.engineer, sid, token_id)
    await desk.call(service.switch_branch, deps, desk.engineer, sid, profile_id)
    await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option="no"))

    rows = await _check_log(desk, model)
    deltas = [r for r in rows if r.prefix_call_id is not None]
    assert len(deltas) >= 3
    # The corrective retry stores only what it added to its failed exchange: the bad reply and the correction.
    failed = next(r for r in rows if r.raw_output == "not json")
    retry = next(r for r in rows if r.prefix_call_id == failed.id)
    assert [m["role"] for m in retry.messages] == ["assistant", "user"]
    # The next turn does not hold the bad reply: it extends the turn's first attempt.
    assert rows[rows.index(retry) + 1].prefix_call_id == failed.id
    by_id = {r.id: r for r in rows}
    for row in deltas:
        assert row.prefix_call_id in by_id
        assert by_id[row.prefix_call_id].created_at <= row.created_at
    # The system prompts are stored once each, not with every call.
    async with desk.session() as s:
        prompts = await s.scalar(select(func.count()).select_from(LLMPrompt))
    assert prompts == len({r.prompt_sha256 for r in rows if r.prompt_sha256 is not None})
    assert prompts is not None
    assert prompts < len(rows)
    assert all(r.messages == [] or r.messages[0]["role"] != "system" for r in rows if r.prompt_sha256)

    # A fresh recorder (a restart, another worker) knows no previous call: it stores in full, still exact.
    model.add(action("After the restart"))
    deps = desk.deps(LLM.for_model(model, recorder=SqlRecorder(desk.db)))
    await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(action_result={"success": False}))
    rows = await _check_log(desk, model)
    assert rows[-1].prefix_call_id is None
