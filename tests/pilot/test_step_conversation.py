"""A guided turn is stored once: the step row is the conversation's entries for the step and its answer."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

import pytest
from sqlalchemy import func, select, update

from deskpilot.llm import Message
from deskpilot.llm.testing import Reply, ScriptedModel
from deskpilot.pilot import engine, prompts, service
from deskpilot.pilot.models import PilotSession, SessionMessage, SessionStep
from deskpilot.pilot.schemas import SessionCreate, StepReply, StepResponse, reply_json, step_content
from deskpilot.storage import Database, utcnow
from tests.pilot.conftest import (
    Desk,
    action,
    classification,
    conversation,
    fork,
    make_desk,
    question,
    resolution,
    scripted,
)


@pytest.fixture
async def any_desk(migrated_database_url: str) -> AsyncIterator[Desk]:
    """A desk on a migrated SQLite file, then on a real PostgreSQL."""
    db = Database(migrated_database_url)
    desk = await make_desk(db)
    yield desk
    await desk.pubsub.close()
    await db.dispose()


def raw(reply: Reply) -> str:
    """What the turn stored as the assistant's message before the step row became its entry."""
    return StepReply.model_validate_json(reply.text).model_dump_json(exclude_none=True)


async def start(desk: Desk, deps: service.PilotDeps) -> uuid.UUID:
    started = await desk.call(service.start_session, deps, desk.engineer, SessionCreate(text="Outlook prompts"))
    return started.session_id


def sent(model: ScriptedModel, index: int) -> list[tuple[str, str]]:
    return [(m.role, str(m.content)) for m in model.requests[index].messages]  # type: ignore[attr-defined]


async def counts(desk: Desk, sid: uuid.UUID) -> tuple[int, int]:
    async with desk.session() as s:
        messages = await s.scalar(select(func.count()).where(SessionMessage.session_id == sid))
        steps = await s.scalar(select(func.count()).where(SessionStep.session_id == sid))
    return int(messages or 0), int(steps or 0)


async def test_a_guided_turn_writes_one_step_row_and_no_message(any_desk: Desk) -> None:
    desk = any_desk
    llm, _, _ = scripted(classification(), question(), action())
    deps = desk.deps(llm)
    sid = await start(desk, deps)
    assert await counts(desk, sid) == (1, 1)  # the intake message and the first step
    await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option="desktop"))
    assert await counts(desk, sid) == (1, 2)
    async with desk.session() as s:
        steps = (await s.execute(select(SessionStep.seq, SessionStep.response_seq)
                                 .where(SessionStep.session_id == sid).order_by(SessionStep.step_order))).all()
        session = await s.get(PilotSession, sid)
        assert session is not None
        assert session.message_seq == 4
    assert [tuple(r) for r in steps] == [(2, 3), (4, None)]


async def test_the_main_line_history_is_what_the_model_got_before(any_desk: Desk) -> None:
    desk = any_desk
    replies = [question(), action(), resolution()]
    llm, model, _ = scripted(classification(), *replies)
    deps = desk.deps(llm)
    sid = await start(desk, deps)
    await desk.call(service.respond, deps, desk.engineer, sid,
                    StepResponse(selected_option="desktop", free_text_input="only on PC 12"))
    await desk.call(service.respond, deps, desk.engineer, sid,
                    StepResponse(action_result={"success": False, "details": "still broken"}))
    system, first = sent(model, 1)
    # The conversation as the assistant and user messages used to hold it.
    expected = [
        first, ("assistant", raw(replies[0])), ("user", "Selected: Desktop only\nonly on PC 12"),
        ("assistant", raw(replies[1])), ("user", "Action did not work.\nDetails: still broken"),
    ]
    assert system[0] == "system"
    assert sent(model, 2) == [system, *expected[:3]]
    assert sent(model, 3) == [system, *expected]
    assert await conversation(desk, sid) == [*expected, ("assistant", raw(replies[2]))]


async def test_a_branch_history_after_a_fork_is_what_the_model_got_before(any_desk: Desk) -> None:
    desk = any_desk
    replies = [question(), action(), fork("Token broker", "Outlook profile")]
    llm, model, _ = scripted(classification(), *replies)
    deps = desk.deps(llm)
    sid = await start(desk, deps)
    await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option="desktop"))
    turn = await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(action_result={"success": False}))
    token_id, profile_id = (uuid.UUID(b["branch_id"]) for b in turn.next_step.content["fork_branches"])
    profile_step = question("Does a new Outlook profile connect?", options=(("Yes", "yes"), ("No", "no")))
    model.add(profile_step)
    model.add(action("Re-register the work account"))
    await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option=str(profile_id)))
    await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option="no"))
    first = sent(model, 1)[1]
    trunk = [
        first, ("assistant", raw(replies[0])), ("user", "Selected: Desktop only"),
        ("assistant", raw(replies[1])), ("user", "Action did not work."), ("assistant", raw(replies[2])),
    ]
    profile_intro = ("user", prompts.branch_intro_message("Outlook profile", "Check the outlook profile"))
    assert sent(model, 4)[1:] == [*trunk, profile_intro]
    assert sent(model, 5)[1:] == [*trunk, profile_intro, ("assistant", raw(profile_step)), ("user", "Selected: No")]
    # The sibling sees the trunk up to the fork and its own opening, none of the other branch's entries.
    model.add(question("Is the token broker running?", options=(("Yes", "yes"), ("No", "no"))))
    await desk.call(service.switch_branch, deps, desk.engineer, sid, token_id)
    token_intro = ("user", prompts.branch_intro_message("Token broker", "Check the token broker"))
    assert sent(model, 6)[1:] == [*trunk, token_intro]


async def test_legacy_steps_without_seq_keep_their_messages(desk: Desk) -> None:
    """Steps written before the step row became the entry have no seq; their messages still are the history."""
    llm, model, _ = scripted(classification(), question(), action(), resolution())
    deps = desk.deps(llm)
    sid = await start(desk, deps)
    await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option="desktop"))
    # Rewrite the session as the previous version stored it: every entry a message, steps without seq. The legacy
    # texts differ from what the steps would give, so the history shows which one it read.
    async with desk.session() as s:
        steps = list(await s.scalars(select(SessionStep).where(SessionStep.session_id == sid)))
        for step in steps:
            for seq, role in ((step.seq, "assistant"), (step.response_seq, "user")):
                if seq is not None:
                    s.add(SessionMessage(session_id=sid, seq=seq, role=role, content=f"legacy {role} {seq}"))
        await s.execute(update(SessionStep).where(SessionStep.session_id == sid).values(seq=None, response_seq=None))
        await s.commit()
    first = sent(model, 1)[1]
    legacy = [first, ("assistant", "legacy assistant 2"), ("user", "legacy user 3"),
              ("assistant", "legacy assistant 4")]
    assert await conversation(desk, sid) == legacy
    # The legacy step waiting for an answer takes it as its entry; the next step is an entry of its own.
    await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(action_result={"success": True}))
    assert sent(model, 3)[1:] == [*legacy, ("user", "Action succeeded.")]
    entries = await conversation(desk, sid)
    assert entries[:-1] == [*legacy, ("user", "Action succeeded.")]
    assert entries[-1] == ("assistant", raw(resolution()))
    assert await counts(desk, sid) == (4, 3)
    async with desk.session() as s:
        seqs = (await s.execute(select(SessionStep.seq, SessionStep.response_seq)
                                .where(SessionStep.session_id == sid).order_by(SessionStep.step_order))).all()
    assert [tuple(r) for r in seqs] == [(None, None), (None, 5), (6, None)]


async def test_another_account_reads_no_history_of_a_session(desk: Desk) -> None:
    """The history's UNION of steps and messages is tenant-scoped in both of its parts."""
    llm, _, _ = scripted(classification(), question(), action(), fork("Token broker", "Outlook profile"))
    deps = desk.deps(llm)
    sid = await start(desk, deps)
    await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option="desktop"))
    async with desk.session() as s:
        main_line = await s.get(PilotSession, sid)
        assert main_line is not None
        assert len(await engine.branch_history(s, main_line, None)) == 4
    await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(action_result={"success": False}))
    async with desk.session() as s:
        forked = await s.get(PilotSession, sid)
        assert forked is not None
        branches = await engine.branch_rows(s, forked)
        branch = engine.active_branch(forked, branches)
        assert len(await engine.branch_history(s, forked, branch)) == 7
    other = await make_desk(desk.db, "Other IT")
    async with other.session() as s:
        assert await engine.branch_history(s, main_line, None) == []
        assert await engine.branch_history(s, forked, branch) == []


def _step_row(seq: int | None, response_seq: int | None, branch: uuid.UUID | None) -> tuple[object, ...]:
    content = {"type": "question", "text": "Which client?", "options": [{"label": "Web", "value": "web"}],
               "allow_free_text": True, "allow_skip": True}
    return (seq, response_seq, branch, None, None, content, None, None, 0.5, "web", None, False, None, None)


def test_an_ancestor_step_answered_after_the_fork_gives_only_its_step() -> None:
    parent, child = uuid.uuid4(), uuid.uuid4()
    rows: Sequence[tuple[object, ...]] = [
        _step_row(2, 9, parent),  # asked before the fork (last seq 5), answered after it on the parent
        (1, None, parent, "user", "intake", None, None, None, None, None, None, None, None, None),
        (6, None, child, "user", "branch intro", None, None, None, None, None, None, None, None, None),
        _step_row(7, 8, child),
    ]
    history = engine.history_entries(rows, {parent: 5})
    step = reply_json(_step_row(2, 9, parent)[5], None, None, 0.5)  # type: ignore[arg-type]
    assert history == [
        Message.user("intake"), Message.assistant(step), Message.user("branch intro"), Message.assistant(step),
        Message.user("Selected: Web"),
    ]
    assert [m.content for m in engine.history_entries(rows, {})][-2:] == ["Selected: Web", "Selected: Web"]


def test_reply_json_gives_the_reply_back_when_it_spelled_out_its_fields() -> None:
    for reply in (question(), action(), resolution(), fork("A", "B")):
        parsed = StepReply.model_validate_json(reply.text)
        step = parsed.step
        content = step_content(step)
        confidence = step.confidence if step.confidence is not None else 0.0
        assert reply_json(content, step.reasoning or None, step.context_message or None, confidence) == raw(reply)


async def test_the_answer_text_is_rebuilt_from_the_stored_answer(desk: Desk) -> None:
    llm, _, _ = scripted(classification(), question(), action())
    deps = desk.deps(llm)
    sid = await start(desk, deps)
    async with desk.session() as s:
        session, step = await engine.load_turn(s, desk.engineer, sid)
        assert step is not None
        response = StepResponse(selected_option="web", free_text_input="  and on mobile ")
        text = engine.answer_text(step.content, engine.response_values(desk.engineer, response, utcnow()))
        assert text == "Selected: Yes, web too\nand on mobile"
        await engine.commit_answer(s, desk.engineer, session, step, response, text, None, utcnow())
    assert (await conversation(desk, sid))[-1] == ("user", text)
