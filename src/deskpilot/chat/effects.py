"""What a chat reply changes: task lane, facts, suggested fix, fork (UC-015…UC-023), and paused tool calls."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from deskpilot.approvals import service as approvals
from deskpilot.approvals.models import SourceKind
from deskpilot.approvals.schemas import ResumeDecision
from deskpilot.chat import prompts
from deskpilot.chat.events import ChatEvent, ForkEvent
from deskpilot.chat.models import ChatTurn
from deskpilot.chat.stream import data_part
from deskpilot.chat.tools import TOOLS_BY_NAME, ToolDeps
from deskpilot.diagnosis import service as diagnosis
from deskpilot.errors import DeskpilotError
from deskpilot.llm import Message, ToolCall, ToolContext
from deskpilot.pilot import branches as branching
from deskpilot.pilot.access import Caller
from deskpilot.pilot.models import ForkPoint, PilotSession, SessionBranch, SessionMessage
from deskpilot.storage import utcnow

logger = logging.getLogger(__name__)


async def session_state(db: AsyncSession, session: PilotSession) -> prompts.SessionFacts:
    """The session's problem, task lane, facts and active fix, as the prompt shows them."""
    state = await diagnosis.prompt_state(db, session.id, account_id=session.account_id)
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


async def _fork(db: AsyncSession, session: PilotSession, fork: ForkEvent, assistant: SessionMessage) -> dict[str, Any]:
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
    point = ForkPoint(
        id=uuid.uuid4(), account_id=session.account_id, session_id=session.id, parent_branch_id=parent.id,
        trigger_step_id=assistant.id, fork_reason=fork.fork_reason or "",
        options=[o.model_dump() for o in fork.options], created_at=utcnow(),
    )
    lineage = branching.child_lineage(parent.lineage, parent.id, assistant.seq)
    now = utcnow()
    children = [
        SessionBranch(
            id=uuid.uuid4(), account_id=session.account_id, session_id=session.id, parent_branch_id=parent.id,
            fork_point_id=point.id, label=option.label, description=option.description, status="untried",
            position=i, lineage=lineage, findings=[], created_at=now,
        )
        for i, option in enumerate(fork.options)
    ]
    db.add(point)
    db.add_all(children)
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


async def request_approvals(
    db: AsyncSession, session: PilotSession, caller: Caller, turn: ChatTurn, calls: Sequence[ToolCall]
) -> tuple[dict[str, Any], bool]:
    """SS-041: store one approval request per call (arguments validated first); the part, and whether to pause.

    A call whose arguments do not fit its tool is never put to a human: it is listed as refused, and a turn
    with nothing left to approve does not pause.
    """
    actions: list[dict[str, Any]] = []
    refused: list[dict[str, str]] = []
    for call in calls:
        tool = TOOLS_BY_NAME[call.name]
        try:
            request = await approvals.request_approval(
                db, session.account_id, tool=tool, tool_call_id=call.id, arguments=call.arguments,
                source_kind=SourceKind.CHAT, source_id=turn.id, session_id=session.id,
                requested_by_id=caller.user_id,
            )
        except DeskpilotError as e:
            refused.append({"name": call.name, "tool_call_id": call.id, "error": str(e)})
            continue
        actions.append({
            "name": call.name, "args": request.arguments, "approval_id": str(request.id),
            "tool_call_id": call.id, "summary": request.summary, "expires_at": request.expires_at.isoformat(),
        })
    if not actions:
        return data_part("tool-calls-refused", refused), False
    return data_part("interrupt-request", {
        "action_requests": actions,
        "review_configs": [
            {"action_name": name, "allowed_decisions": ["approve", "edit", "reject", "approve_always"]}
            for name in sorted({a["name"] for a in actions})
        ],
        "interrupt_type": "approval",
        "context": {"chat_turn_id": str(turn.id), "refused": refused},
    }), True


async def run_decisions(
    db: AsyncSession,
    session: PilotSession,
    caller: Caller,
    paused: ChatTurn,
    decisions: Sequence[ResumeDecision],
    deps: ToolDeps,
) -> list[Message]:
    """SS-042: route the decisions, run each approved call once, and return the messages that continue the turn.

    Calls without a decision are rejected by the approvals service and never run; the model is told which
    calls were rejected so it can carry on without them.
    """
    outcome = await approvals.decide_batch(
        db, session.account_id, paused.id, decisions, decided_by=caller.actor,
        args_models={name: tool.args_model for name, tool in TOOLS_BY_NAME.items()},
    )
    await db.commit()
    results: dict[str, str] = {}
    for request in outcome.to_run:
        claimed = await approvals.claim_for_execution(db, session.account_id, request.id)
        await db.commit()
        if claimed is None:
            continue
        tool = TOOLS_BY_NAME.get(claimed.tool_name)
        if tool is None:
            await approvals.record_execution(db, session.account_id, claimed.request_id, error="unknown tool")
            await db.commit()
            continue
        call = ToolCall(claimed.tool_call_id, claimed.tool_name, claimed.arguments_json)
        try:
            text = await tool.run(tool.validate(claimed.arguments_json), ToolContext(
                deps=deps, account_id=session.account_id, call=call, step=1))
        except Exception as e:
            logger.warning("approved chat tool %s failed", claimed.tool_name, exc_info=True)
            await approvals.record_execution(db, session.account_id, claimed.request_id, error=str(e)[:500])
            results[claimed.tool_call_id] = f"The tool failed: {type(e).__name__}"
        else:
            await approvals.record_execution(db, session.account_id, claimed.request_id, result=text[:4000])
            results[claimed.tool_call_id] = text
        await db.commit()
    calls: list[ToolCall] = []
    replies: list[Message] = []
    for request in outcome.requests:
        # The model sees the call as it ran: with the engineer's edits, if any.
        arguments = request.edited_arguments if request.edited_arguments is not None else request.arguments
        call = ToolCall(request.tool_call_id, request.tool_name, approvals.canonical_json(arguments))
        calls.append(call)
        if request.tool_call_id in results:
            replies.append(Message.tool_result(call, results[request.tool_call_id]))
        else:
            why = request.reason or "the engineer did not approve it"
            replies.append(Message.tool_result(call, f"Not run: {why}.", is_error=True))
    return [Message.assistant(paused.content, tuple(calls)), *replies]

