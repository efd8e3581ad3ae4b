"""What a chat reply changes: task lane, facts, suggested fix, fork (UC-015…UC-023), and paused tool calls."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from deskpilot.approvals import service as approvals
from deskpilot.approvals.models import ApprovalRequest, Decision, SourceKind
from deskpilot.approvals.schemas import InterruptRequest, ResumeDecision
from deskpilot.chat import prompts
from deskpilot.chat.events import ChatEvent, ForkEvent
from deskpilot.chat.models import ChatTurn
from deskpilot.chat.stream import data_part
from deskpilot.chat.tools import TOOLS_BY_NAME, ToolDeps
from deskpilot.diagnosis import service as diagnosis
from deskpilot.errors import DeskpilotError
from deskpilot.events.audit import Actor
from deskpilot.llm import Message, ToolCall, ToolContext
from deskpilot.pilot import branches as branching
from deskpilot.pilot.access import Caller
from deskpilot.pilot.models import PilotSession, SessionBranch, SessionMessage

logger = logging.getLogger(__name__)


async def session_state(db: AsyncSession, session: PilotSession) -> prompts.SessionFacts:
    """The session's problem, task lane, facts and active fix, as the prompt shows them."""
    state = await diagnosis.prompt_state(
        db, session.id, account_id=session.account_id, known_version=session.state_version
    )
    lines: list[prompts.LaneLine] = []
    if state.lane is not None:
        lines += [prompts.LaneLine("question", q.id, q.text, q.status.value, q.answer) for q in state.lane.questions]
        lines += [prompts.LaneLine("action", a.id, a.label, a.status.value, a.result) for a in state.lane.actions]
    return prompts.SessionFacts(
        problem=session.problem_summary, domain=session.problem_domain, task_lane=lines, facts=state.facts,
        active_fix=state.active_fix,
    )


async def apply(
    db: AsyncSession,
    session: PilotSession,
    events: Sequence[ChatEvent],
    assistant: SessionMessage,
    turn: ChatTurn,
) -> list[dict[str, Any]]:
    """Apply one reply's events and return the data parts announcing them.

    The diagnosis domain orders its writes (UC-016: the lane before the facts that point into it); the fork
    is applied last and on its own savepoint, so a failed fork never loses the rest (UC-023).
    """
    result = await diagnosis.apply_turn(db, account_id=session.account_id, session_id=session.id, events=events)
    lane = result.lane.lane
    parts = [data_part("task-lane", lane.model_dump(mode="json") if lane is not None else None)]
    if result.promotions.facts:
        parts.append(data_part("facts", [f.model_dump(mode="json") for f in result.promotions.facts]))
    if result.outcome is not None:
        parts.append(data_part("fix-outcome-proposal", result.outcome.fix.model_dump(mode="json")))
    if result.fix is not None:
        parts.append(data_part("suggested-fix", result.fix.fix.model_dump(mode="json")))
    fork = next((e for e in events if isinstance(e, ForkEvent)), None)
    if fork is not None:
        try:
            async with db.begin_nested():
                parts.append(data_part("fork", await _fork(db, session, fork, assistant)))
        except Exception:
            logger.exception("chat turn %s: the fork could not be created", turn.id)
    parts.append(data_part("state-version", {"state_version": session.state_version}))
    return parts


async def _fork(db: AsyncSession, session: PilotSession, event: ForkEvent, assistant: SessionMessage) -> dict[str, Any]:
    """UC-023: a fork on the main path adds branches without switching; a fork inside a branch switches."""
    in_branch = session.is_branching and session.active_branch_id is not None
    if in_branch:
        parent = await db.get(SessionBranch, session.active_branch_id)
        if parent is None:
            raise LookupError("active branch missing")
        if parent.parent_branch_id is None:
            in_branch = False  # the root branch is the main path
    else:
        parent = await branching.create_root(db, session)
    fork = branching.create_fork(
        db, session, parent, assistant.id, event.fork_reason or "", event.options, assistant.seq
    )
    point, children = fork.point, fork.branches
    if in_branch:
        parent.status = "untried" if parent.status == "active" else parent.status
        children[0].status = "active"
        session.active_branch_id = children[0].id
    await db.flush()
    return {
        "fork_point_id": str(point.id),
        "fork_reason": point.fork_reason,
        "branches": [{"branch_id": str(b.id), "label": b.label} for b in children],
        "active_branch_id": str(session.active_branch_id),
        "switched": in_branch,
    }


async def on_resolve(db: AsyncSession, session: PilotSession) -> None:
    """UC-021: resolving confirms the active suggested fix worked."""
    await diagnosis.mark_active_fix_successful_on_resolve(db, account_id=session.account_id, session_id=session.id)


# --- tool calls that need a human ---------------------------------------------------------------


async def _request(
    db: AsyncSession, session: PilotSession, caller: Caller, turn_id: uuid.UUID, call: ToolCall
) -> ApprovalRequest:
    """The approval request bound to this call of this turn (arguments validated before it is stored)."""
    return await approvals.request_approval(
        db, session.account_id, tool=TOOLS_BY_NAME[call.name], tool_call_id=call.id, arguments=call.arguments,
        source_kind=SourceKind.CHAT, source_id=turn_id, session_id=session.id, requested_by_id=caller.user_id,
    )


async def request_approvals(
    db: AsyncSession, session: PilotSession, caller: Caller, turn: ChatTurn, calls: Sequence[ToolCall]
) -> tuple[dict[str, Any], bool]:
    """SS-041: store one approval request per call (arguments validated first); the part, and whether to pause.

    A call whose arguments do not fit its tool is never put to a human: it is listed as refused, and a turn
    with nothing left to approve does not pause.
    """
    pending: list[ApprovalRequest] = []
    refused: list[dict[str, str]] = []
    for call in calls:
        try:
            pending.append(await _request(db, session, caller, turn.id, call))
        except DeskpilotError as e:
            refused.append({"name": call.name, "tool_call_id": call.id, "error": str(e)})
    if not pending:
        return data_part("tool-calls-refused", refused), False
    interrupt = InterruptRequest.of(pending, message="The assistant wants to run these; approve, edit or reject")
    interrupt.context.update(chat_turn_id=str(turn.id), refused=refused)
    return data_part("interrupt-request", interrupt.model_dump(mode="json")), True


async def _run_claimed(
    db: AsyncSession, session: PilotSession, claimed: approvals.ClaimedCall, deps: ToolDeps
) -> str:
    """Run one claimed call and record how it ended; the text the model gets back."""
    tool = TOOLS_BY_NAME.get(claimed.tool_name)
    if tool is None:
        await approvals.record_execution(db, session.account_id, claimed.request_id, error="unknown tool")
        await db.commit()
        return "Not run: this tool no longer exists."
    call = ToolCall(claimed.tool_call_id, claimed.tool_name, claimed.arguments_json)
    try:
        text = await tool.run(
            tool.validate(claimed.arguments_json),
            ToolContext(deps=deps, account_id=session.account_id, call=call, step=1),
        )
    except Exception as e:
        logger.warning("approved chat tool %s failed", claimed.tool_name, exc_info=True)
        await approvals.record_execution(db, session.account_id, claimed.request_id, error=str(e)[:500])
        text = f"The tool failed: {type(e).__name__}"
    else:
        await approvals.record_execution(db, session.account_id, claimed.request_id, result=text[:4000])
    await db.commit()
    return text


async def _run_approved(
    db: AsyncSession, session: PilotSession, to_run: Sequence[ApprovalRequest], deps: ToolDeps
) -> dict[str, str]:
    """Claim and run each approved request once (a claim is a conditional UPDATE: never twice)."""
    results: dict[str, str] = {}
    for request in to_run:
        claimed = await approvals.claim_for_execution(db, session.account_id, request.id)
        await db.commit()
        if claimed is not None:
            results[claimed.tool_call_id] = await _run_claimed(db, session, claimed, deps)
    return results


def _continuation(text: str, requests: Sequence[ApprovalRequest], results: dict[str, str]) -> list[Message]:
    """The paused reply with its calls (as they ran: edited arguments included) and one result per call."""
    calls: list[ToolCall] = []
    replies: list[Message] = []
    for request in requests:
        arguments = request.edited_arguments if request.edited_arguments is not None else request.arguments
        call = ToolCall(request.tool_call_id, request.tool_name, approvals.canonical_json(arguments))
        calls.append(call)
        if request.tool_call_id in results:
            replies.append(Message.tool_result(call, results[request.tool_call_id]))
        else:
            why = request.reason or "the engineer did not approve it"
            replies.append(Message.tool_result(call, f"Not run: {why}.", is_error=True))
    return [Message.assistant(text, tuple(calls)), *replies]


async def run_granted(
    db: AsyncSession, session: PilotSession, caller: Caller, turn_id: uuid.UUID, text: str,
    calls: Sequence[ToolCall], deps: ToolDeps,
) -> list[Message] | None:
    """Calls of tools approved for the rest of this chat run at once; None when one of them is not granted.

    Each still goes through an approval request decided by the standing grant, so the inbox and the audit log
    show every run.
    """
    for call in calls:
        if not await approvals.has_grant(db, session.account_id, session.id, call.name):
            return None
    requests: list[ApprovalRequest] = []
    for call in calls:
        try:
            request = await _request(db, session, caller, turn_id, call)
        except DeskpilotError:
            return None  # invalid arguments: the normal path refuses them
        decided = await approvals.decide(
            db, session.account_id, request.id, Decision.APPROVE, decided_by=Actor.system("standing approval"),
            reason="approved for the rest of this chat",
        )
        requests.append(decided.request)
    await db.commit()
    return _continuation(text, requests, await _run_approved(db, session, requests, deps))


async def run_decisions(
    db: AsyncSession,
    session: PilotSession,
    caller: Caller,
    paused: ChatTurn,
    decisions: Sequence[ResumeDecision],
    deps: ToolDeps,
) -> list[Message]:
    """SS-042: route the decisions, run each approved call once, and return the messages that continue the turn.

    A call without a decision is rejected, unless its tool has a standing grant in this chat (approve_always
    earlier): that decision was already given. The model is told which calls were rejected and why.
    """
    decided = {d.request_id for d in decisions} | {d.tool_call_id for d in decisions}
    implicit = [
        ResumeDecision(request_id=r.id, decision=Decision.APPROVE)
        for r in await approvals.list_source(db, session.account_id, paused.id)
        if r.id not in decided and r.tool_call_id not in decided
        and await approvals.has_grant(db, session.account_id, session.id, r.tool_name)
    ]
    # Edited arguments are validated with the argument models `requires_approval` registered for the chat tools.
    outcome = await approvals.decide_batch(
        db, session.account_id, paused.id, [*decisions, *implicit], decided_by=caller.actor
    )
    await db.commit()
    results = await _run_approved(db, session, outcome.to_run, deps)
    return _continuation(paused.content, outcome.requests, results)
