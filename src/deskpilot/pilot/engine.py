"""The turn engine: load and check a session, rebuild a branch's history, produce and store the next step."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import httpx
from sqlalchemy import ColumnElement, CompoundSelect, CursorResult, Row, bindparam, null, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.exc import StaleDataError

from deskpilot.errors import DeskpilotError, NotFound
from deskpilot.events.pubsub import PubSub
from deskpilot.jobs import JobBackend
from deskpilot.knowledge import service as knowledge
from deskpilot.knowledge.schemas import FlowDefinition, FlowMatch
from deskpilot.llm import (
    LLM,
    CallContext,
    DeferredRecords,
    LLMNotConfigured,
    Message,
    ProviderUnavailable,
    Purpose,
)
from deskpilot.pilot import branches as branching
from deskpilot.pilot import escalation, flow_mode, prompts
from deskpilot.pilot.access import Caller, SessionParties, check_access
from deskpilot.pilot.errors import (
    InvalidResponse,
    NoLLMNoFlow,
    SessionChanged,
    SessionNotFound,
    StepAlreadyAnswered,
    StepGenerationFailed,
    UnknownOption,
)
from deskpilot.pilot.lifecycle import SessionStatus
from deskpilot.pilot.models import PilotSession, SessionBranch, SessionMessage, SessionStep
from deskpilot.pilot.schemas import (
    ActionStep,
    AnyStep,
    ForkStep,
    SessionMode,
    SessionSummary,
    StepOption,
    StepOut,
    StepReply,
    StepResponse,
    TurnResult,
    content_flag,
    content_options,
    reply_json,
    step_content,
    step_type_of,
)
from deskpilot.pilot.tiers import ConfidenceTier, confidence_to_tier, initial_confidence, next_confidence
from deskpilot.security.crypto import SecretBox
from deskpilot.storage import scoped, utcnow
from deskpilot.storage.batch import WriteConflict, commit_writes, insert_row, update_row
from deskpilot.storage.versioned_cache import VersionedCache

logger = logging.getLogger(__name__)

MAX_STEPS_PER_SESSION: Final = 30
STEP_MAX_TOKENS: Final = 2048
SUBJECT_TYPE: Final = "pilot_session"
GUIDED: Final = "guided"
NO_LLM_NO_FLOW_MESSAGE: Final = (
    "No LLM provider is configured and no flow matches this problem — configure DESKPILOT_LLM__DEFAULT_MODEL "
    "or add a flow"
)


@dataclass(frozen=True, slots=True)
class PilotDeps:
    """What the Pilot needs besides the database: the LLM, secrets for PSA credentials, live updates, jobs.

    `pubsub` (notifications are stored either way) and `jobs` (the knowledge flywheel) are optional.
    """

    llm: LLM
    secrets: SecretBox
    pubsub: PubSub | None = None
    jobs: JobBackend | None = None
    psa_http_client: httpx.AsyncClient | None = None
    # The conversation each turn leaves behind, for the next turn on this process (`turn_history`).
    conversations: VersionedCache[tuple[Message, ...]] | None = None


def conversation_cache() -> VersionedCache[tuple[Message, ...]]:
    """Branch conversations of recently answered sessions, each valid for one `message_seq` of its session: every
    entry of a conversation (a step, an answer, a message) takes the next `message_seq` in the transaction that
    writes it, so a conversation kept for the session's current `message_seq` is what the database would give."""
    return VersionedCache(_conversation_chars)


def _conversation_chars(history: tuple[Message, ...]) -> int:
    return sum(len(message.content) for message in history)


# --- loading and views ----------------------------------------------------------------------


def session_parties(session: PilotSession | Row[Any]) -> SessionParties:
    """The session fields the FP-033 access rule reads (guided sessions and chats alike), from the loaded session
    or from a row of a read that selected those columns by name."""
    return SessionParties(
        owner_id=session.user_id, team_id=session.team_id, status=session.status,
        escalated_to_id=session.escalated_to_id, picked_up_by_id=session.picked_up_by_id,
    )


async def load_session(
    db: AsyncSession, caller: Caller, session_id: uuid.UUID, *, allow_team_access: bool = False
) -> PilotSession:
    """The session, if the caller may act on it (FP-033); another account's session is simply not found."""
    session = await db.get(PilotSession, session_id)
    if session is None or session.kind != GUIDED:
        raise SessionNotFound(f"session {str(session_id)!r} not found")
    check_access(caller, session_parties(session), allow_team_access=allow_team_access)
    return session


# The two reads of every turn (the session with its step, then the history), built once (building them was about
# 0.13 ms of each turn's CPU) with the tenant criteria: each execution binds the session's account (storage/tenancy.py).
_TURN_READ: Final = scoped(
    select(PilotSession, SessionStep)
    .outerjoin(SessionStep, SessionStep.id == PilotSession.current_step_id)
    .where(PilotSession.id == bindparam("session_id"))
)
# A branch's conversation is its messages and its steps (each step is the assistant's entry at `seq` and the
# answer's at `response_seq`), read in one UNION ALL: the steps' columns first (they type the result), the messages'
# seq, branch, role and text in the same positions. Python merges them by seq.
_STEP_ENTRY: Final = (
    SessionStep.seq, SessionStep.response_seq, SessionStep.branch_id, null().label("role"), null().label("text"),
    SessionStep.content, SessionStep.reasoning, SessionStep.context_message, SessionStep.confidence,
    SessionStep.selected_option, SessionStep.free_text_input, SessionStep.was_skipped, SessionStep.action_result,
    SessionStep.action_details,
)
_MESSAGE_ENTRY: Final = (
    SessionMessage.seq, null(), SessionMessage.branch_id, SessionMessage.role, SessionMessage.content,
    *(null() for _ in range(len(_STEP_ENTRY) - 5)),
)


def _history_read(
    session_id: Any, steps: ColumnElement[bool], messages: ColumnElement[bool]
) -> CompoundSelect[Any]:
    """The entries of a conversation: steps that are entries (legacy steps are not) and messages.

    Rows are read by position, so the result needs no keys for the columns of each new (tenant-scoped) copy of the
    statement: SQLAlchemy's rewrite of them (`_adapt_to_context`, skipped for ORM entity loads by the ORM itself)
    compared 14 annotated columns by SQL `==` on every read, about a fifth of a millisecond.
    """
    in_conversation = or_(SessionStep.seq.is_not(None), SessionStep.response_seq.is_not(None))
    return select(*_STEP_ENTRY).where(SessionStep.session_id == session_id, steps, in_conversation).union_all(
        select(*_MESSAGE_ENTRY).where(SessionMessage.session_id == session_id, messages)
    ).execution_options(_result_disable_adapt_to_context=True)


_MAIN_LINE_HISTORY: Final = scoped(_history_read(
    bindparam("session_id"), SessionStep.branch_id.is_(None), SessionMessage.branch_id.is_(None)
))


async def load_turn(
    db: AsyncSession, caller: Caller, session_id: uuid.UUID
) -> tuple[PilotSession, SessionStep | None]:
    """The session and the step waiting on it, in one query: the read of a turn."""
    row = (await db.execute(_TURN_READ, {"session_id": session_id})).one_or_none()
    if row is None or row[0].kind != GUIDED:
        raise SessionNotFound(f"session {str(session_id)!r} not found")
    session, step = row
    check_access(caller, session_parties(session))
    return session, step


def session_tier(session: PilotSession) -> ConfidenceTier:
    # The tier is a function of the score (FP-010; FP-011 lifts the score, not just the tier).
    return confidence_to_tier(session.confidence_score)


def step_out(step: SessionStep, session: PilotSession) -> StepOut:
    content = step.content
    return StepOut(
        step_id=step.id, step_order=step.step_order, step_type=step.step_type, content=content,
        context_message=step.context_message, options=content_options(content),
        allow_free_text=content_flag(content, "allow_free_text"), allow_skip=content_flag(content, "allow_skip"),
        confidence_tier=session_tier(session), confidence_score=session.confidence_score, branch_id=step.branch_id,
        is_fork_point=step.is_fork_point, selected_option=step.selected_option,
        free_text_input=step.free_text_input, was_skipped=step.was_skipped,
        action_result=escalation.action_result(step.action_result), action_details=step.action_details,
        responded_at=step.responded_at, created_at=step.created_at,
    )


def turn_result(session: PilotSession, step: SessionStep) -> TurnResult:
    suggested = step.content.get("type") == "resolution_suggestion"
    summary = step.content.get("resolution_summary") if suggested else None
    return TurnResult(
        session_id=session.id, status=session.status, mode=mode_of(session.mode), confidence_tier=session_tier(session),
        confidence_score=session.confidence_score, next_step=step_out(step, session),
        resolution_suggested=suggested, resolution_summary=summary if isinstance(summary, str) else None,
        active_branch_id=session.active_branch_id, step_count=session.step_count,
        steps_remaining=max(MAX_STEPS_PER_SESSION - session.step_count, 0),
    )


def mode_of(value: str) -> SessionMode:
    return "flow" if value == "flow" else "ai"


def session_summary(session: PilotSession) -> SessionSummary:
    return SessionSummary.model_validate(session)


async def all_steps(db: AsyncSession, session_id: uuid.UUID) -> list[SessionStep]:
    return list((await db.scalars(
        select(SessionStep).where(SessionStep.session_id == session_id).order_by(SessionStep.step_order)
    )).all())


async def branch_rows(db: AsyncSession, session: PilotSession) -> list[SessionBranch]:
    return await branching.load_branches(db, session.id) if session.is_branching else []


def active_branch(session: PilotSession, branches: Sequence[SessionBranch]) -> SessionBranch | None:
    if not session.is_branching:
        return None
    return next((b for b in branches if b.id == session.active_branch_id), None)


async def branch_history(db: AsyncSession, session: PilotSession, branch: SessionBranch | None) -> list[Message]:
    """The active branch's conversation, rebuilt from the appended rows (no stored snapshot): its messages and its
    steps with their answers, ancestors' entries up to where the branch forked, in seq order."""
    if branch is None:
        # The same WHERE as `history_filter(session.id, None)`, prepared once.
        rows = await db.execute(_MAIN_LINE_HISTORY, {"session_id": session.id})
        return history_entries(rows, {})
    rows = await db.execute(_history_read(
        session.id, branching.step_history_filter(branch), branching.history_filter(session.id, branch)
    ))
    return history_entries(rows, branching.lineage_limits(branch))


async def turn_history(
    db: AsyncSession, deps: PilotDeps, session: PilotSession, branch: SessionBranch | None
) -> list[Message]:
    """The branch's conversation as the previous turn on this process left it, else `branch_history`."""
    if deps.conversations is not None:
        kept = deps.conversations.get(session.id, session.message_seq, branch.id if branch is not None else None)
        if kept is not None:
            return list(kept)
    return await branch_history(db, session, branch)


def keep_conversation(
    deps: PilotDeps, session: PilotSession, history: Sequence[Message], step: SessionStep
) -> None:
    """Keep `history` and the step just committed after it, for the next turn: only when the step is the
    session's newest entry, on the branch the history is of, and opened no fork (which adds branches' messages)."""
    cache = deps.conversations
    if cache is None:
        return
    branch_id = session.active_branch_id if session.is_branching else None
    if step.seq != session.message_seq or step.branch_id != branch_id or step.is_fork_point:
        cache.forget(session.id)
        return
    entry = step_entry(step.content, step.reasoning, step.context_message, step.confidence)
    cache.put(session.id, session.message_seq, branch_id, (*history, entry))


def step_entry(
    content: Mapping[str, Any], reasoning: str | None, context_message: str | None, confidence: float | None
) -> Message:
    """A step as the conversation's assistant entry: its compact `StepReply` JSON (the history and the kept
    conversation both build it here, so they agree)."""
    return Message.assistant(reply_json(content, reasoning, context_message, confidence))


def history_entries(rows: Iterable[Sequence[Any]], limits: Mapping[uuid.UUID | None, int]) -> list[Message]:
    """Merge the rows of `_history_read` into the conversation; `limits` is the last seq an ancestor branch gives.

    A step may sit below its branch's limit while its answer (given after the fork) does not: entries are cut one
    by one, not rows.
    """
    entries: list[tuple[int, Message]] = []
    for (seq, response_seq, branch_id, role, text, content, reasoning, context_message, confidence,
         selected_option, free_text_input, was_skipped, action_result, action_details) in rows:
        if role is not None:
            entries.append((seq, Message.assistant(text) if role == "assistant" else Message.user(text)))
            continue
        limit = limits.get(branch_id)
        if seq is not None and (limit is None or seq <= limit):
            entries.append((seq, step_entry(content, reasoning, context_message, confidence)))
        if response_seq is not None and (limit is None or response_seq <= limit):
            entries.append((response_seq, Message.user(answer_text(content, {
                "selected_option": selected_option, "free_text_input": free_text_input, "was_skipped": was_skipped,
                "action_result": action_result, "action_details": action_details,
            }))))
    entries.sort(key=lambda entry: entry[0])
    return [message for _, message in entries]


def append_message(
    db: AsyncSession, session: PilotSession, branch_id: uuid.UUID | None, role: str, content: str
) -> int:
    session.message_seq += 1
    db.add(SessionMessage(
        id=uuid.uuid4(), account_id=session.account_id, session_id=session.id, branch_id=branch_id,
        seq=session.message_seq, role=role, content=content, created_at=utcnow(),
    ))
    return session.message_seq


async def commit(db: AsyncSession) -> None:
    """Commit; a concurrent change to the same session (version mismatch) is a 409, never a lost update."""
    try:
        await db.commit()
    except (StaleDataError, IntegrityError) as e:
        await db.rollback()
        raise SessionChanged("The session was changed by another request; reload it and try again") from e


async def end_read(db: AsyncSession) -> None:
    """End the open read transaction before a model call, so no pooled connection is held while it thinks.

    A commit of nothing, which (sessions are made with expire_on_commit=False) leaves every loaded object
    usable; a rollback would expire them. A session with pending writes is left alone: those belong to the
    caller's transaction and are never committed early.
    """
    if not db.in_transaction():
        return
    if db.new or db.dirty or db.deleted:
        logger.warning("a model is called while writes are pending; the transaction stays open")
        return
    await db.commit()


def store_records(db: AsyncSession, records: DeferredRecords | None) -> None:
    """Add the turn's `llm_calls` rows to the transaction about to be committed."""
    if records is not None:
        records.add_to(db)


def records_stored(records: DeferredRecords | None) -> None:
    if records is not None:
        records.stored()


def call_context(session: PilotSession) -> CallContext:
    # One llm_calls thread per branch, so each branch's calls are stored as deltas of that branch's last call.
    thread = str(session.active_branch_id) if session.active_branch_id is not None else None
    return CallContext(client_id=session.client_id, subject_type=SUBJECT_TYPE, subject_id=session.id, thread=thread)


# --- producing a step -----------------------------------------------------------------------


@dataclass(slots=True)
class Produced:
    """A step to store: from the LLM or from a runbook node."""

    step: AnyStep
    mode: SessionMode
    input_tokens: int = 0
    output_tokens: int = 0
    flow_node_id: str | None = None
    # Set when this step starts flow mode: the runbook copied onto the session.
    flow_definition: dict[str, Any] | None = None
    # Set when a runbook was found only now (a session that started without any step).
    new_match: FlowMatch | None = None
    extra_content: dict[str, Any] = field(default_factory=dict)


def _system_prompt(session: PilotSession, branches: Sequence[SessionBranch]) -> str:
    branch = active_branch(session, branches)
    if branch is None:
        return session.system_prompt
    summary = branching.sibling_summary(branching.siblings_for(branch, branches))
    return prompts.with_branch_context(session.system_prompt, branch.label, summary)


async def _ai_step(llm: LLM, session: PilotSession, history: Sequence[Message], system_prompt: str) -> Produced:
    result = await llm.structured(
        Purpose.PILOT_STEP, [Message.system(system_prompt), *history], StepReply,
        account_id=session.account_id, context=call_context(session), max_tokens=STEP_MAX_TOKENS,
    )
    reply = result.value
    return Produced(
        step=reply.step, mode="ai",
        input_tokens=result.usage.input_tokens, output_tokens=result.usage.output_tokens,
    )


async def _flow_definition(db: AsyncSession, session: PilotSession) -> FlowDefinition | None:
    """The runbook that can drive this session: its copy, or the matched approved flow (score above 0.5)."""
    if session.flow_definition is not None:
        return FlowDefinition.model_validate(session.flow_definition)
    if session.matched_flow_id is None or (session.match_score or 0.0) <= flow_mode.FLOW_MODE_MIN_SCORE:
        return None
    try:
        return await knowledge.get_flow_definition(db, session.matched_flow_id)
    except NotFound:
        return None


async def _flow_produced(
    db: AsyncSession,
    session: PilotSession,
    definition: FlowDefinition,
    flow_step: flow_mode.FlowStep,
    *,
    entering: bool,
    match: FlowMatch | None = None,
) -> Produced:
    step = flow_step.step
    flow_id = match.flow_id if match is not None else session.matched_flow_id
    extra: dict[str, Any] = {"flow_node_id": flow_step.node_id, "flow_id": str(flow_id)}
    if isinstance(step, ActionStep) and step.template_id:
        # Runbooks name templates by slug; the console renders scripts by template id.
        template = await knowledge.get_template_by_slug(db, session.account_id, step.template_id)
        extra["template_slug"] = step.template_id
        if template is not None:
            step = step.model_copy(update={"template_id": str(template.id)})
    return Produced(
        step=step, mode="flow", flow_node_id=flow_step.node_id,
        flow_definition=definition.model_dump(mode="json", exclude_defaults=True) if entering else None,
        new_match=match, extra_content=extra,
    )


def _flow_name(session: PilotSession) -> str:
    return session.matched_flow_name or "runbook"


async def _rematch(db: AsyncSession, session: PilotSession) -> tuple[FlowMatch, FlowDefinition] | None:
    """Look for a runbook again for a session that never got a step (a flow may have been added since)."""
    text = prompts.intake_text(
        str(session.intake.get("text", "")), str(session.intake.get("log_content", "")), _ticket_summary(session)
    )
    if not text:
        return None
    matches = await knowledge.find_matches(db, session.account_id, text, session.problem_domain, limit=1,
                                           team_id=session.team_id)
    if not matches or matches[0].score <= flow_mode.FLOW_MODE_MIN_SCORE:
        return None
    try:
        return matches[0], await knowledge.get_flow_definition(db, matches[0].flow_id)
    except NotFound:
        return None


def _ticket_summary(session: PilotSession) -> str | None:
    ticket = session.intake.get("ticket_data")
    summary = ticket.get("summary") if isinstance(ticket, dict) else None
    return summary if isinstance(summary, str) else None


def _generation_error(session: PilotSession, error: DeskpilotError, *, flow_exhausted: bool) -> DeskpilotError:
    extra = {"session_id": str(session.id), "cause": "flow_exhausted" if flow_exhausted else error.code}
    if flow_exhausted:
        return StepGenerationFailed(
            "The runbook has no further step and no LLM answered; your response is saved. Resolve or escalate "
            "the session, or retry once an LLM is available.",
            extra=extra,
        )
    if isinstance(error, LLMNotConfigured):
        return NoLLMNoFlow(NO_LLM_NO_FLOW_MESSAGE, extra=extra)
    return StepGenerationFailed(
        f"The next step could not be generated ({error.detail}). What you entered is saved; retry generation.",
        extra=extra,
    )


async def produce(
    db: AsyncSession,
    deps: PilotDeps,
    session: PilotSession,
    history: Sequence[Message],
    branches: Sequence[SessionBranch],
    previous: SessionStep | None,
    *,
    rematch: bool,
) -> Produced:
    """The next step: the runbook's while in flow mode, else the LLM's, falling back to the runbook when no model
    answers (not configured, or down after its fallbacks). Raises the pilot error to show otherwise."""
    flow_exhausted = False
    if session.mode == "flow":
        definition = await _flow_definition(db, session)
        if definition is not None:
            produced = await _next_flow_step(db, session, definition, previous)
            if produced is not None:
                return produced
        flow_exhausted = True
    await end_read(db)
    try:
        return await _ai_step(deps.llm, session, history, _system_prompt(session, branches))
    except (LLMNotConfigured, ProviderUnavailable) as e:
        logger.warning("no LLM step for session %s (%s)", session.id, e.code)
        if not flow_exhausted:
            definition = await _flow_definition(db, session)
            match: FlowMatch | None = None
            if definition is None and rematch:
                found = await _rematch(db, session)
                if found is not None:
                    match, definition = found
            if definition is not None:
                name = match.name if match is not None else _flow_name(session)
                first = flow_mode.first_step(definition, flow_name=name)
                return await _flow_produced(db, session, definition, first, entering=True, match=match)
        raise _generation_error(session, e, flow_exhausted=flow_exhausted) from e
    except DeskpilotError as e:
        logger.warning("LLM step for session %s failed: %s", session.id, e.code)
        raise _generation_error(session, e, flow_exhausted=flow_exhausted) from e


async def _next_flow_step(
    db: AsyncSession, session: PilotSession, definition: FlowDefinition, previous: SessionStep | None
) -> Produced | None:
    node_id = previous.content.get("flow_node_id") if previous is not None else None
    if previous is None or not isinstance(node_id, str):
        first = flow_mode.first_step(definition, flow_name=_flow_name(session))
        return await _flow_produced(db, session, definition, first, entering=False)
    if previous.responded_at is None and definition.node(node_id) is not None:
        # Nobody answered it (the session was escalated on it): ask it again of whoever continues.
        again = flow_mode.step_for_node(definition, node_id, flow_name=_flow_name(session))
        return await _flow_produced(db, session, definition, again, entering=False)
    success = None if previous.action_result is None else previous.action_result == "success"
    target = flow_mode.next_node_id(
        definition, node_id, selected_option=previous.selected_option, action_success=success,
        was_skipped=previous.was_skipped,
    )
    if target is None or definition.node(target) is None:
        return None
    flow_step = flow_mode.step_for_node(definition, target, flow_name=_flow_name(session))
    return await _flow_produced(db, session, definition, flow_step, entering=False)


# --- storing a step -------------------------------------------------------------------------


async def apply_step(
    db: AsyncSession,
    session: PilotSession,
    produced: Produced,
    branches: list[SessionBranch],
    *,
    top_match_score: float | None = None,
    initial: bool = False,
) -> SessionStep:
    """Add the step (the conversation's assistant entry, at the next seq) and the session's new state to the
    transaction (no commit)."""
    step = produced.step
    content = step_content(step)
    content.update(produced.extra_content)
    root: SessionBranch | None = None
    if isinstance(step, ForkStep) and not session.is_branching:
        root = await branching.create_root(db, session)
        branches.append(root)
    parent_id = session.active_branch_id if session.is_branching else None
    session.message_seq += 1
    seq = session.message_seq
    row = SessionStep(
        id=uuid.uuid4(), account_id=session.account_id, session_id=session.id, branch_id=parent_id,
        step_order=session.step_count, step_type=step_type_of(step), context_message=step.context_message or None,
        confidence=step.confidence if step.confidence is not None else session.confidence_score,
        reasoning=step.reasoning or None, input_tokens=produced.input_tokens, output_tokens=produced.output_tokens,
        created_at=utcnow(), seq=seq,
    )
    if isinstance(step, ForkStep):
        parent = root or active_branch(session, branches)
        assert parent is not None
        fork = branching.create_fork(db, session, parent, row.id, step.fork_reason, step.options, seq)
        for child in fork.branches:
            append_message(db, session, child.id, "user", prompts.branch_intro_message(child.label, child.description))
        content["fork_point_id"] = str(fork.point.id)
        content["fork_branches"] = [{"branch_id": str(b.id), "label": b.label} for b in fork.branches]
        # The fork is answered by choosing the branch to start with: each option's value is a branch id.
        content["options"] = [
            {"label": b.label, "value": str(b.id), "description": b.description} for b in fork.branches
        ]
        row.is_fork_point = True
        row.fork_point_id = fork.point.id
        fork.branches[0].status = "active"
        session.active_branch_id = fork.branches[0].id
        branches.extend(fork.branches)
    row.content = content
    db.add(row)
    if initial:
        score, tier = initial_confidence(step.confidence or 0.0, top_match_score)
    else:
        score, tier = next_confidence(step.confidence, session.confidence_score)
    session.confidence_score, session.confidence_tier = score, tier
    session.step_count += 1
    session.total_input_tokens += produced.input_tokens
    session.total_output_tokens += produced.output_tokens
    session.awaiting_generation = False
    session.generation_error = None
    session.current_step_id = row.id
    session.mode = produced.mode
    if produced.flow_definition is not None:
        session.flow_definition = produced.flow_definition
    if produced.new_match is not None:
        match = produced.new_match
        session.matched_flow_id, session.matched_flow_name, session.match_score = match.flow_id, match.name, match.score
        await record_match(db, match.flow_id)
    return row


async def record_match(db: AsyncSession, flow_id: uuid.UUID) -> None:
    """Usage statistics of the matched flow (FP-017); a failure here must not stop the session."""
    try:
        await knowledge.record_match(db, flow_id)
    except NotFound:
        logger.warning("matched flow %s vanished before its match was recorded", flow_id)


async def _reload(db: AsyncSession, session_id: uuid.UUID) -> PilotSession:
    session = await db.get(PilotSession, session_id, populate_existing=True)
    if session is None:
        raise SessionNotFound(f"session {str(session_id)!r} not found")
    return session


async def _store(
    db: AsyncSession,
    session: PilotSession,
    produced: Produced,
    branches: list[SessionBranch],
    records: DeferredRecords | None = None,
) -> tuple[PilotSession, SessionStep]:
    """Store a generated step, with the `llm_calls` rows of its model calls, in one transaction.

    If the session changed while the model was thinking (paused, say), the step is applied again to the fresh
    state as long as that state still waits for a step on the same branch; otherwise the step is dropped (409).
    """
    session_id, branch_id = session.id, session.active_branch_id
    for attempt in (1, 2):
        try:
            if _plain(db, session, produced):
                row = await _store_plain(db, session, produced, records)
            else:
                row = await apply_step(db, session, produced, branches)
                store_records(db, records)
                await db.commit()
            records_stored(records)
            return session, row
        except (StaleDataError, IntegrityError, WriteConflict):
            # The rollback expires every loaded object: nothing of the old state is read after it.
            await db.rollback()
            session = await _reload(db, session_id)
            still_wanted = (
                attempt == 1
                and session.awaiting_generation
                and session.active_branch_id == branch_id
                and session.status in (SessionStatus.ACTIVE, SessionStatus.PAUSED)
            )
            if not still_wanted:
                raise SessionChanged(
                    "The session changed while its next step was being generated; reload it"
                ) from None
            branches = await branch_rows(db, session)
    raise AssertionError("unreachable")


def _plain(db: AsyncSession, session: PilotSession, produced: Produced) -> bool:
    """A model's step that opens no fork and changes nothing but the session: stored by `_store_plain`."""
    return (
        produced.mode == "ai"
        and session.mode == "ai"
        and not isinstance(produced.step, ForkStep)
        and produced.flow_definition is None
        and produced.new_match is None
        and not (db.new or db.dirty or db.deleted)
    )


def _version_condition(session: PilotSession) -> dict[str, Any]:
    return {"id": session.id, "account_id": session.account_id, "state_version": session.state_version}


def _reflect(obj: Any, values: dict[str, Any]) -> None:
    """Make loaded objects show what a unit of work committed, without marking them changed."""
    for key, value in values.items():
        set_committed_value(obj, key, value)


async def _store_plain(
    db: AsyncSession, session: PilotSession, produced: Produced, records: DeferredRecords | None
) -> SessionStep:
    """`apply_step` for a plain model step, as one unit of work (one round trip on SQLite): the step (which is the
    conversation's assistant entry), the session's compare-and-set UPDATE and the `llm_calls` rows. Raises
    WriteConflict when the session changed meanwhile (nothing is written)."""
    step = produced.step
    now = utcnow()
    seq = session.message_seq + 1
    branch_id = session.active_branch_id if session.is_branching else None
    score, tier = next_confidence(step.confidence, session.confidence_score)
    content = step_content(step)
    content.update(produced.extra_content)
    row = SessionStep(
        id=uuid.uuid4(), account_id=session.account_id, session_id=session.id, branch_id=branch_id,
        step_order=session.step_count, step_type=step_type_of(step), content=content,
        context_message=step.context_message or None,
        confidence=step.confidence if step.confidence is not None else session.confidence_score,
        reasoning=step.reasoning or None, input_tokens=produced.input_tokens, output_tokens=produced.output_tokens,
        is_fork_point=False, fork_point_id=None, created_at=now, selected_option=None, free_text_input=None,
        was_free_text=False, was_skipped=False, action_result=None, action_details=None, responded_at=None,
        responded_by_id=None, seq=seq, response_seq=None,
    )
    changes: dict[str, Any] = {
        "confidence_score": score, "confidence_tier": tier, "step_count": session.step_count + 1,
        "total_input_tokens": session.total_input_tokens + produced.input_tokens,
        "total_output_tokens": session.total_output_tokens + produced.output_tokens,
        "awaiting_generation": False, "generation_error": None, "current_step_id": row.id, "mode": produced.mode,
        "message_seq": seq, "state_version": session.state_version + 1, "updated_at": now,
    }
    writes = [
        insert_row(SessionStep, {c.key: getattr(row, c.key) for c in SessionStep.__table__.columns}),
        update_row(PilotSession, _version_condition(session), changes),
    ]
    if records is not None:
        writes += records.writes_for(db)
    await commit_writes(db, writes)
    _reflect(session, changes)
    return row


async def commit_answer(
    db: AsyncSession,
    caller: Caller,
    session: PilotSession,
    step: SessionStep,
    response: StepResponse,
    text: str,
    branch: SessionBranch | None,
    now: datetime,
) -> None:
    """Commit the engineer's answer as one unit of work (one round trip on SQLite), before the model is called.

    The answer goes onto the step only if nobody answered it first (FP-025, `StepAlreadyAnswered`), with its place
    in the conversation (`response_seq`: the history rebuilds `text` from the step's columns, so it is not stored
    again), the branch's finding and the session's compare-and-set UPDATE (`SessionChanged`).
    """
    values = response_values(caller, response, now)
    seq = session.message_seq + 1
    branch_id = branch.id if branch is not None else None
    # The answer is the step's own entry when both are on one branch, as every answer the service commits is; an
    # answer on another branch would need the branch's message.
    on_step = step.branch_id == branch_id
    if on_step:
        values["response_seq"] = seq
    changes: dict[str, Any] = {
        "current_step_id": None, "awaiting_generation": True, "generation_error": None, "message_seq": seq,
        "state_version": session.state_version + 1, "updated_at": now,
    }
    writes = [
        update_row(SessionStep, {"id": step.id, "account_id": session.account_id}, values,
                   null=("responded_at",)),
    ]
    if not on_step:
        writes.append(insert_row(SessionMessage, {
            "id": uuid.uuid4(), "account_id": session.account_id, "session_id": session.id, "branch_id": branch_id,
            "seq": seq, "role": "user", "content": text, "created_at": now,
        }))
    findings: list[str] | None = None
    if branch is not None:
        line = branching.finding_line(str(step.content.get("text", "")), text)
        findings = branching.with_finding(branch.findings, line)
        writes.append(update_row(SessionBranch, {"id": branch.id, "account_id": session.account_id},
                                 {"findings": findings}))
    writes.append(update_row(PilotSession, _version_condition(session), changes))
    step_id = str(step.id)  # a failed unit rolls back, which expires the loaded objects
    try:
        await commit_writes(db, writes)
    except WriteConflict as e:
        if e.index == 0:
            raise StepAlreadyAnswered("This step has already been answered", extra={"step_id": step_id}) from None
        raise SessionChanged("The session was changed by another request; reload it and try again") from None
    except IntegrityError as e:
        raise SessionChanged("The session was changed by another request; reload it and try again") from e
    _reflect(step, values)
    _reflect(session, changes)
    if branch is not None:
        _reflect(branch, {"findings": findings})


async def _record_generation_error(
    db: AsyncSession, session: PilotSession, error: DeskpilotError, records: DeferredRecords | None
) -> None:
    cause = error.extra.get("cause", error.code)
    session.generation_error = str(cause)[:64]
    store_records(db, records)
    try:
        await db.commit()
        records_stored(records)
    except (StaleDataError, IntegrityError):
        # Only a hint for the console; a concurrent change wins.
        await db.rollback()


async def generate(
    db: AsyncSession,
    deps: PilotDeps,
    session: PilotSession,
    history: Sequence[Message],
    branches: list[SessionBranch],
    previous: SessionStep | None,
) -> TurnResult:
    """Produce and store the next step of a session that awaits one (its input is already committed).

    The model's `llm_calls` rows are written in the step's commit, not in transactions of their own.
    """
    async with deps.llm.deferred_recording() as records:
        try:
            # A session that never got a step may find a runbook added since it started.
            produced = await produce(db, deps, session, history, branches, previous, rematch=session.step_count == 0)
        except (NoLLMNoFlow, StepGenerationFailed) as e:
            await _record_generation_error(db, session, e, records)
            raise
        session, row = await _store(db, session, produced, branches, records)
    keep_conversation(deps, session, history, row)
    return turn_result(session, row)


# --- responses ------------------------------------------------------------------------------


def question_options(content: Mapping[str, Any], *, only: str | None = None) -> list[StepOption]:
    """A stored step's options as the response text reads them; `only`: just those with that value."""
    options: list[StepOption] = []
    for raw in content_options(content):
        label, value = raw.get("label"), raw.get("value")
        if only is not None and value != only:
            continue
        if isinstance(label, str) and isinstance(value, str) and label and value:
            options.append(StepOption(label=label, value=value))
    return options


def check_response(session: PilotSession, step: SessionStep, response: StepResponse) -> None:
    """Refuse, before anything is written, a response this step cannot take."""
    content = step.content
    kind = content.get("type")
    if kind == "briefing":
        raise InvalidResponse("The escalation briefing takes no response", code="briefing_takes_no_response")
    if response.was_skipped and not content_flag(content, "allow_skip"):
        raise InvalidResponse("This step cannot be skipped", code="skip_not_allowed")
    values = [str(o.get("value")) for o in content_options(content)]
    if response.selected_option is not None and response.selected_option not in values:
        raise UnknownOption(
            f"Option {response.selected_option!r} is not one of this step's options",
            extra={"options": values},
        )
    if kind == "question" and not content_flag(content, "allow_free_text"):
        if response.free_text_input and response.free_text_input.strip():
            raise InvalidResponse("This step takes one of its options, not free text", code="free_text_not_allowed")
        if response.selected_option is None and not response.was_skipped and values:
            raise InvalidResponse("Choose one of this step's options", code="option_required")
    node_id = content.get("flow_node_id")
    if isinstance(node_id, str) and session.flow_definition is not None:
        flow_mode.check_response(
            FlowDefinition.model_validate(session.flow_definition), node_id,
            selected_option=response.selected_option,
            action_success=None if response.action_result is None else response.action_result.success,
            was_skipped=response.was_skipped,
        )


def answer_text(content: Mapping[str, Any], response: Mapping[str, Any]) -> str:
    """The engineer's answer as the model reads it (FP-026), from the step's content and response columns.

    The one way to write it: the turn sends it, and the history rebuilds it from the stored step.
    """
    result, selected = response["action_result"], response["selected_option"]
    # Only the chosen option's label is written: validating the others is wasted on every history read.
    chosen = question_options(content, only=selected) if selected else []
    return prompts.format_response(
        selected_option=selected, free_text=response["free_text_input"], was_skipped=bool(response["was_skipped"]),
        action_success=None if result is None else result == "success", action_details=response["action_details"],
        options=chosen,
    )


def response_values(caller: Caller, response: StepResponse, now: datetime) -> dict[str, Any]:
    """The step's columns that hold the engineer's response."""
    result = response.action_result
    return {
        "selected_option": response.selected_option,
        "free_text_input": response.free_text_input,
        "was_free_text": bool(response.free_text_input and not response.selected_option),
        "was_skipped": response.was_skipped,
        "action_result": None if result is None else ("success" if result.success else "failure"),
        "action_details": None if result is None else result.details,
        "responded_at": now,
        "responded_by_id": caller.user_id,
    }


async def record_response(
    db: AsyncSession, caller: Caller, step: SessionStep, response: StepResponse, now: datetime
) -> None:
    """Write the response onto the step only if nobody answered it first (FP-025); the loser gets 409."""
    values = response_values(caller, response, now)
    outcome = await db.execute(
        update(SessionStep)
        .where(SessionStep.id == step.id, SessionStep.responded_at.is_(None))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(outcome, CursorResult)
    if outcome.rowcount != 1:
        step_id = str(step.id)  # read before the rollback expires the object
        await db.rollback()
        raise StepAlreadyAnswered("This step has already been answered", extra={"step_id": step_id})
    for key, value in values.items():
        set_committed_value(step, key, value)


def switch_to(
    session: PilotSession, branches: Sequence[SessionBranch], target: SessionBranch, *, at_fork: bool = False
) -> None:
    """Make `target` the active branch.

    `at_fork`: the switch answers a fork that no branch has worked on yet, so the branch the fork opened on
    automatically was never tried and goes back to untried.
    """
    current = active_branch(session, branches)
    if at_fork and current is not None and current.id != target.id and current.status == "active":
        current.status = "untried"
    if target.status == "untried":
        target.status = "active"
    session.active_branch_id = target.id


async def last_step(db: AsyncSession, session: PilotSession) -> SessionStep | None:
    stmt = select(SessionStep).where(SessionStep.session_id == session.id)
    if session.is_branching:
        stmt = stmt.where(SessionStep.branch_id == session.active_branch_id)
    return await db.scalar(stmt.order_by(SessionStep.step_order.desc()).limit(1))


async def current_step_or_none(db: AsyncSession, session: PilotSession) -> SessionStep | None:
    if session.current_step_id is None:
        return None
    return await db.get(SessionStep, session.current_step_id)
