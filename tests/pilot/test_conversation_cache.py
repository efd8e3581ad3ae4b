"""The conversation a turn leaves behind, kept for the next turn on this process: always what the rows rebuild."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from deskpilot.llm import Message, ProviderUnavailable
from deskpilot.llm.testing import ScriptedModel
from deskpilot.pilot import engine, service
from deskpilot.pilot.errors import StepGenerationFailed
from deskpilot.pilot.models import PilotSession
from deskpilot.pilot.schemas import MarkBranchRequest, ReviveBranchRequest, SessionCreate, StepResponse
from tests.pilot.conftest import Desk, action, classification, fork, question, scripted

OUTLOOK = "Outlook keeps asking for the password"


async def kept_and_rebuilt(
    desk: Desk, deps: service.PilotDeps, sid: uuid.UUID
) -> tuple[list[Message] | None, list[Message]]:
    """What the cache holds for the session's current state, and what the database rebuilds for it."""
    assert deps.conversations is not None
    async with desk.session() as s:
        session = await s.get(PilotSession, sid)
        assert session is not None
        active = engine.active_branch(session, await engine.branch_rows(s, session))
        rebuilt = await engine.branch_history(s, session, active)
    kept = deps.conversations.get(sid, session.message_seq, active.id if active is not None else None)
    return (list(kept) if kept is not None else None), rebuilt


@contextmanager
def history_reads(desk: Desk) -> Iterator[list[str]]:
    """The conversation reads (the UNION ALL of steps and messages) run meanwhile."""
    reads: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "UNION ALL" in statement:
            reads.append(statement)

    event.listen(desk.db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        yield reads
    finally:
        event.remove(desk.db.engine.sync_engine, "before_cursor_execute", seen)


async def started(desk: Desk, *items: Any) -> tuple[uuid.UUID, service.PilotDeps, ScriptedModel]:
    llm, model, _ = scripted(classification(), question(), *items)
    deps = desk.deps(llm, conversations=engine.conversation_cache())
    first = await desk.call(service.start_session, deps, desk.engineer, SessionCreate(text=OUTLOOK))
    return first.session_id, deps, model


async def test_fp026_each_answer_is_kept_exactly_as_the_rows_rebuild_it_and_the_next_turn_reads_nothing(
    desk: Desk,
) -> None:
    sid, deps, model = await started(desk, action(), question("Which Office build?"), action("Repair Office"),
                                     question("Still prompting?"))
    kept, rebuilt = await kept_and_rebuilt(desk, deps, sid)
    assert kept == rebuilt
    assert len(rebuilt) == 2  # the intake and the first step, kept by the start
    answers = [
        StepResponse(selected_option="desktop", free_text_input="only on PC 12"),
        StepResponse(action_result={"success": False, "details": "Still prompts after clearing"}),
        StepResponse(was_skipped=True),
        StepResponse(action_result={"success": True}),
    ]
    for answer in answers:
        with history_reads(desk) as reads:
            await desk.call(service.respond, deps, desk.engineer, sid, answer)
        assert reads == []
        kept, rebuilt = await kept_and_rebuilt(desk, deps, sid)
        assert kept == rebuilt
    # FP-026: what the model was sent is the same rebuilt conversation, the answer last.
    assert list(model.requests[-1].messages[1:]) == rebuilt[:-1]


async def test_forks_branch_switches_and_revivals_keep_the_branch_conversation_or_read_it(desk: Desk) -> None:
    sid, deps, model = await started(desk, action(), fork("Token broker", "Outlook profile"))
    await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option="desktop"))
    turn = await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(action_result={"success": False}))
    token_id, profile_id = (uuid.UUID(b["branch_id"]) for b in turn.next_step.content["fork_branches"])
    # A fork adds the branches' opening messages: nothing is kept for it.
    assert (await kept_and_rebuilt(desk, deps, sid))[0] is None

    model.add(question("Does a new Outlook profile connect?", options=(("Yes", "yes"), ("No", "no"))))
    await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option=str(profile_id)))
    kept, rebuilt = await kept_and_rebuilt(desk, deps, sid)
    assert kept == rebuilt
    assert any(m.content.startswith("[Branch: Outlook profile]") for m in rebuilt)

    model.add(action("Re-register the work account"))
    await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option="no"))
    kept, rebuilt = await kept_and_rebuilt(desk, deps, sid)
    assert kept == rebuilt

    # Dead end: the session moves to the sibling; its conversation is another one, read from the rows.
    await desk.call(service.mark_branch, desk.engineer, sid, profile_id, MarkBranchRequest(status="dead_end"))
    model.add(question("Is the token broker service running?"))
    with history_reads(desk) as reads:
        await desk.call(service.retry_generation, deps, desk.engineer, sid)
    assert len(reads) == 1
    sent = [m.content for m in model.requests[-1].messages]
    assert any(t.startswith("[Branch: Token broker]") for t in sent)
    assert not any(t.startswith("[Branch: Outlook profile]") for t in sent)
    kept, rebuilt = await kept_and_rebuilt(desk, deps, sid)
    assert kept == rebuilt

    # Revive the dead end with new evidence: its own conversation plus the evidence, never the sibling's.
    model.add(question("Does the prompt appear with the old profile only?"))
    await desk.call(service.revive_branch, deps, desk.engineer, sid, profile_id,
                    ReviveBranchRequest(evidence="Only with the old profile"))
    sent = [m.content for m in model.requests[-1].messages]
    assert sent[-1].startswith("[Branch reopened] New evidence:")
    assert "Re-register the work account" in "".join(sent)
    assert not any(t.startswith("[Branch: Token broker]") for t in sent)
    kept, rebuilt = await kept_and_rebuilt(desk, deps, sid)
    assert kept == rebuilt
    assert token_id != profile_id


async def test_an_answer_given_through_another_process_is_read_from_the_rows(desk: Desk) -> None:
    sid, deps, model = await started(desk, action(), question("Which Office build?"), action("Repair Office"))
    await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option="desktop"))
    # Another server process (its own cache) answers the next step: this process's entry is now behind.
    elsewhere = desk.deps(deps.llm, conversations=engine.conversation_cache())
    await desk.call(service.respond, elsewhere, desk.engineer, sid,
                    StepResponse(action_result={"success": False, "details": "Answered elsewhere"}))
    with history_reads(desk) as reads:
        await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(free_text_input="Build 2409"))
    assert len(reads) == 1
    sent = [m.content for m in model.requests[-1].messages]
    assert any("Answered elsewhere" in text for text in sent)
    assert sent[-1] == "Build 2409"
    kept, rebuilt = await kept_and_rebuilt(desk, deps, sid)
    assert kept == rebuilt


async def test_a_failed_generation_keeps_nothing_and_the_retry_sends_the_answer_once(desk: Desk) -> None:
    sid, deps, model = await started(desk, ProviderUnavailable("down"), action())
    try:
        await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option="desktop"))
    except StepGenerationFailed:
        pass
    else:
        raise AssertionError("the generation should have failed")
    assert (await kept_and_rebuilt(desk, deps, sid))[0] is None
    await desk.call(service.retry_generation, deps, desk.engineer, sid)
    sent = [m.content for m in model.requests[-1].messages]
    assert sent.count("Selected: Desktop only") == 1
    kept, rebuilt = await kept_and_rebuilt(desk, deps, sid)
    assert kept == rebuilt


def test_the_cache_is_bounded_by_the_characters_it_holds() -> None:
    cache = engine.conversation_cache()
    one = uuid.uuid4()
    cache.put(one, 3, None, (Message.user("x" * 1000), Message.assistant("y" * 500)))
    assert cache.weight == 1500
    assert cache.get(one, 3, None) is not None
    assert cache.get(one, 4, None) is None
    assert cache.get(one, 3, uuid.uuid4()) is None
