"""Forks and branches (FP-028, FP-029): fork, choose, switch, dead end, revive, per-branch history."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from deskpilot.llm.testing import ScriptedModel
from deskpilot.pilot import service
from deskpilot.pilot.errors import BranchClosed, NotBranching, UnknownOption
from deskpilot.pilot.models import ForkPoint, SessionMessage, SessionStep
from deskpilot.pilot.schemas import MarkBranchRequest, ReviveBranchRequest, SessionCreate, StepResponse, TurnResult
from tests.pilot.conftest import Desk, action, classification, fork, question, scripted


async def forked(desk: Desk) -> tuple[uuid.UUID, service.PilotDeps, ScriptedModel, TurnResult]:
    llm, model, _ = scripted(classification(), question(), action(), fork("Token broker", "Outlook profile"))
    deps = desk.deps(llm)
    started = await desk.call(service.start_session, deps, desk.engineer, SessionCreate(text="Outlook prompts"))
    sid = started.session_id
    await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option="desktop"))
    turn = await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(action_result={"success": False}))
    return sid, deps, model, turn


async def test_fp028_a_fork_creates_root_and_branches_and_switches_to_the_first(desk: Desk) -> None:
    sid, _, _, turn = await forked(desk)
    step = turn.next_step
    assert step.step_type == "fork"
    assert step.is_fork_point
    branches = step.content["fork_branches"]
    assert [b["label"] for b in branches] == ["Token broker", "Outlook profile"]
    # The fork is answered by choosing a branch: its options carry the branch ids.
    assert [o["value"] for o in step.options] == [b["branch_id"] for b in branches]
    assert turn.active_branch_id == uuid.UUID(branches[0]["branch_id"])
    tree = await desk.call(service.get_branch_tree, desk.engineer, sid)
    assert len(tree) == 1
    assert tree[0].label == "Main line"
    assert [(c.label, c.status, c.is_active) for c in tree[0].children] == [
        ("Token broker", "active", True), ("Outlook profile", "untried", False)]
    detail = await desk.call(service.get_session, desk.engineer, sid)
    root_id = tree[0].id
    # Everything before the fork now belongs to the root branch, the fork step too.
    assert {s.branch_id for s in detail.steps} == {root_id}
    async with desk.session() as s:
        point = await s.scalar(select(ForkPoint).where(ForkPoint.session_id == sid))
        assert point is not None
        assert point.trigger_step_id == step.step_id
        assert point.parent_branch_id == root_id
        assert [o["label"] for o in point.options] == ["Token broker", "Outlook profile"]


async def test_fp029_each_branch_has_its_own_history_and_sees_its_siblings(desk: Desk) -> None:
    sid, deps, model, turn = await forked(desk)
    token_id, profile_id = (uuid.UUID(b["branch_id"]) for b in turn.next_step.content["fork_branches"])
    with pytest.raises(UnknownOption):
        await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option=str(uuid.uuid4())))
    # Choose the second hypothesis at the fork.
    model.add(question("Does a new Outlook profile connect?", options=(("Yes", "yes"), ("No", "no"))))
    turn = await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option=str(profile_id)))
    assert turn.active_branch_id == profile_id
    assert turn.next_step.branch_id == profile_id
    request = model.requests[-1]
    texts = [m.content for m in request.messages]
    assert any(t.startswith("[Branch: Outlook profile]") for t in texts)
    assert not any(t.startswith("[Branch: Token broker]") for t in texts)
    assert '"type":"fork"' in texts[-2]  # the parent's history up to the fork, then the branch's own
    system = request.messages[0].content
    assert '## CURRENT BRANCH\nYou are investigating the branch "Outlook profile".' in system
    assert '"Token broker" (untried)' in system
    # Findings of this branch travel to its sibling's prompt.
    model.add(action("Re-register the work account"))
    await desk.call(service.respond, deps, desk.engineer, sid, StepResponse(selected_option="no"))
    tree = await desk.call(service.mark_branch, desk.engineer, sid, profile_id, MarkBranchRequest(status="dead_end"))
    children = {c.label: c for c in tree[0].children}
    assert children["Outlook profile"].status == "dead_end"
    assert children["Outlook profile"].findings == ["Does a new Outlook profile connect? → Selected: No"]
    # The dead end was active: the session moved to the open sibling, which still needs its first step.
    assert children["Token broker"].is_active
    assert children["Token broker"].status == "active"
    detail = await desk.call(service.get_session, desk.engineer, sid)
    assert detail.awaiting_generation
    assert detail.active_branch_id == token_id
    model.add(action("Run dsregcmd /status"))
    turn = await desk.call(service.retry_generation, deps, desk.engineer, sid)
    assert turn.next_step.branch_id == token_id
    system = model.requests[-1].messages[0].content
    assert '"Outlook profile" (dead end)' in system
    assert "Does a new Outlook profile connect? → Selected: No" in system
    history = [m.content for m in model.requests[-1].messages]
    assert not any("Does a new Outlook profile connect" in t for t in history[1:])


async def test_fp029_switch_dead_end_and_revive(desk: Desk) -> None:
    sid, deps, model, turn = await forked(desk)
    token_id, profile_id = (uuid.UUID(b["branch_id"]) for b in turn.next_step.content["fork_branches"])
    # Switching to the other branch answers the pending fork and generates that branch's first step.
    model.add(question("Profile question?", options=(("Yes", "yes"), ("No", "no"))))
    turn = await desk.call(service.switch_branch, deps, desk.engineer, sid, profile_id)
    assert (turn.active_branch_id, turn.next_step.branch_id) == (profile_id, profile_id)
    profile_step = turn.next_step.step_id
    detail = await desk.call(service.get_session, desk.engineer, sid)
    fork_step = next(s for s in detail.steps if s.is_fork_point)
    assert fork_step.selected_option == str(profile_id)
    # Back to the first branch: it has no step yet, so one is generated.
    model.add(action("Token broker action"))
    turn = await desk.call(service.switch_branch, deps, desk.engineer, sid, token_id)
    token_step = turn.next_step.step_id
    # And back again: the profile branch's waiting step is returned without asking the model.
    requests = len(model.requests)
    turn = await desk.call(service.switch_branch, deps, desk.engineer, sid, profile_id)
    assert turn.next_step.step_id == profile_step
    assert len(model.requests) == requests
    await desk.call(service.mark_branch, desk.engineer, sid, profile_id, MarkBranchRequest(status="dead_end"))
    detail = await desk.call(service.get_session, desk.engineer, sid)
    assert detail.active_branch_id == token_id
    assert detail.current_step_id == token_step
    with pytest.raises(BranchClosed) as closed:
        await desk.call(service.switch_branch, deps, desk.engineer, sid, profile_id)
    assert closed.value.status == 409
    model.add(question("With that evidence, does the profile open offline?", options=(("Yes", "y"), ("No", "n"))))
    turn = await desk.call(service.revive_branch, deps, desk.engineer, sid, profile_id,
                           ReviveBranchRequest(evidence="The prompt only appears with the old profile"))
    assert turn.active_branch_id == profile_id
    assert model.requests[-1].messages[-1].content.startswith(
        "[Branch reopened] New evidence: The prompt only appears with the old profile")
    tree = await desk.call(service.get_branch_tree, desk.engineer, sid)
    assert {c.label: c.status for c in tree[0].children} == {"Token broker": "active", "Outlook profile": "revived"}
    await desk.call(service.mark_branch, desk.engineer, sid, profile_id, MarkBranchRequest(status="solved"))
    with pytest.raises(BranchClosed):
        await desk.call(service.revive_branch, deps, desk.engineer, sid, profile_id,
                        ReviveBranchRequest(evidence="again"))
    with pytest.raises(BranchClosed):
        await desk.call(service.mark_branch, desk.engineer, sid, tree[0].id, MarkBranchRequest(status="dead_end"))


async def test_branch_actions_need_a_forked_session(desk: Desk) -> None:
    llm, _, _ = scripted(classification(), question())
    started = await desk.call(service.start_session, desk.deps(llm), desk.engineer, SessionCreate(text="x"))
    with pytest.raises(NotBranching):
        await desk.call(service.switch_branch, desk.deps(llm), desk.engineer, started.session_id, uuid.uuid4())


async def test_fp029_messages_are_appended_rows_per_branch(desk: Desk) -> None:
    sid, _deps, _model, turn = await forked(desk)
    async with desk.session() as s:
        rows = (await s.execute(select(SessionMessage.seq, SessionMessage.branch_id, SessionMessage.role)
                                .where(SessionMessage.session_id == sid).order_by(SessionMessage.seq))).all()
        steps = (await s.execute(select(SessionStep.seq, SessionStep.response_seq, SessionStep.branch_id)
                                 .where(SessionStep.session_id == sid).order_by(SessionStep.step_order))).all()
    # Messages and steps (each step and its answer) share one numbering, without gaps.
    entries = sorted([(r.seq, r.branch_id, r.role) for r in rows]
                     + [(st.seq, st.branch_id, "assistant") for st in steps]
                     + [(st.response_seq, st.branch_id, "user") for st in steps if st.response_seq is not None])
    assert [e[0] for e in entries] == list(range(1, len(entries) + 1))
    root_id = steps[0].branch_id
    assert root_id is not None
    roles = ["user", *["assistant", "user"] * 2, "assistant"]  # intake, two answered steps, the fork
    assert [e[1:] for e in entries[:-2]] == [(root_id, role) for role in roles]
    branch_ids = [uuid.UUID(b["branch_id"]) for b in turn.next_step.content["fork_branches"]]
    # One opening message per new branch, after the fork.
    assert [e[1:] for e in entries[-2:]] == [(branch_ids[0], "user"), (branch_ids[1], "user")]
