"""Pilot service: the operations on guided sessions that the API, console and CLI call."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, Literal

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from deskpilot.errors import DeskpilotError, NotFound, ValidationFailed
from deskpilot.events import audit, notifications
from deskpilot.events.schemas import NotificationOut
from deskpilot.identity import service as identity
from deskpilot.knowledge import service as knowledge
from deskpilot.knowledge.templates import format_templates_for_prompt
from deskpilot.llm import (
    CallContext,
    DeferredRecords,
    Message,
    Purpose,
)
from deskpilot.pilot import branches as branching
from deskpilot.pilot import documentation, escalation, flow_mode, prompts, similar
from deskpilot.pilot.access import Caller
from deskpilot.pilot.engine import (
    GUIDED,
    MAX_STEPS_PER_SESSION,
    SUBJECT_TYPE,
    PilotDeps,
    Produced,
    active_branch,
    all_steps,
    answer_text,
    append_message,
    apply_step,
    branch_rows,
    call_context,
    check_response,
    commit,
    commit_answer,
    current_step_or_none,
    end_read,
    generate,
    keep_conversation,
    last_step,
    load_session,
    load_turn,
    mode_of,
    produce,
    record_match,
    record_response,
    records_stored,
    response_values,
    session_summary,
    session_tier,
    step_out,
    store_records,
    switch_to,
    turn_history,
    turn_result,
)
from deskpilot.pilot.errors import (
    BranchClosed,
    BranchNotFound,
    GenerationPending,
    IntakeEmpty,
    IntakeTooLarge,
    NoGenerationPending,
    NoLLMNoFlow,
    NotBranching,
    StepAlreadyAnswered,
    StepGenerationFailed,
    StepLimitReached,
    UnknownOption,
)
from deskpilot.pilot.lifecycle import (
    CLOSED_STATUSES,
    Action,
    SessionStatus,
    check_escalation_target,
    check_pickup,
    transition,
)
from deskpilot.pilot.models import PilotSession, SessionBranch, SessionStep
from deskpilot.pilot.schemas import (
    AbandonRequest,
    BranchNode,
    EscalateRequest,
    EscalationPackage,
    EscalationResult,
    IntakeClassification,
    LinkTicketRequest,
    MarkBranchRequest,
    PickupRequest,
    PickupResult,
    RateRequest,
    ResolveRequest,
    ReviveBranchRequest,
    SessionClosed,
    SessionCreate,
    SessionDetail,
    SessionStarted,
    SessionSummary,
    StepOut,
    StepResponse,
    TurnResult,
)
from deskpilot.pilot.views import SessionView, StepView
from deskpilot.psa import service as psa
from deskpilot.psa.formatting import format_ticket_context_for_prompt, intake_ticket_data
from deskpilot.psa.schemas import NoteFlags, PushResult, TimeEntryDraft
from deskpilot.storage import utcnow

__all__ = [
    "ANALYSE_JOB",
    "MAX_INTAKE_BYTES",
    "MAX_STEPS_PER_SESSION",
    "Caller",
    "PilotDeps",
    "abandon",
    "add_status_update",
    "escalate",
    "get_branch_tree",
    "get_documentation",
    "get_session",
    "link_ticket",
    "list_escalation_queue",
    "list_sessions",
    "mark_branch",
    "pause",
    "pickup",
    "rate",
    "resolve",
    "respond",
    "resume",
    "retry_generation",
    "revive_branch",
    "session_views",
    "start_session",
    "step_view",
    "switch_branch",
]

# Unlike other domains' services these functions commit, and take the account-scoped AsyncSession of one
# request: a turn commits the engineer's input before the LLM is called and the generated step after it, so a
# slow or failing model never loses what was entered and never holds a write lock while it thinks.

logger = logging.getLogger(__name__)

MAX_INTAKE_BYTES: Final = 100 * 1024
CLASSIFY_MAX_TOKENS: Final = 512
SCRIPTS_IN_PROMPT: Final = 20
ANALYSE_JOB: Final = "pilot.analyse_session"


async def get_session(db: AsyncSession, caller: Caller, session_id: uuid.UUID) -> SessionDetail:
    """The whole session: fields, every step in order and the branch map. Team members may view an escalation.

    While the session is open it also lists up to 3 similar resolved sessions (FP-021), searched now: one
    indexed query, and always current with the sessions resolved since this one started.
    """
    session = await load_session(db, caller, session_id, allow_team_access=True)
    steps = await all_steps(db, session.id)
    tree = branching.build_tree(await branch_rows(db, session), session.active_branch_id)
    alike = [] if session.status in CLOSED_STATUSES else await similar.find_similar(
        db, account_id=session.account_id, session_id=session.id, intake=session.intake,
        problem_summary=session.problem_summary, problem_domain=session.problem_domain,
    )
    base = SessionSummary.model_validate(session).model_dump()
    return SessionDetail(
        **base, intake_type=session.intake_type, intake=session.intake, key_symptoms=list(session.key_symptoms),
        matched_flow_id=session.matched_flow_id, matched_flow_name=session.matched_flow_name,
        match_score=session.match_score, psa_connection_id=session.psa_connection_id,
        psa_ticket_id=session.psa_ticket_id, psa_context_status=session.psa_context_status,
        ticket_data=session.ticket_data, generation_error=session.generation_error,
        current_step_id=session.current_step_id, is_branching=session.is_branching,
        active_branch_id=session.active_branch_id, total_input_tokens=session.total_input_tokens,
        total_output_tokens=session.total_output_tokens, resolved_at=session.resolved_at,
        resolution_summary=session.resolution_summary, resolution_action=session.resolution_action,
        resolution_notes=session.resolution_notes, rating=session.rating, feedback=session.feedback,
        escalation_package=session.escalation_package, analysis_status=session.analysis_status,
        steps=[step_out(s, session) for s in steps], branches=tree, similar_sessions=alike,
    )


async def list_sessions(
    db: AsyncSession, caller: Caller, *, status: SessionStatus | None = None, limit: int = 50
) -> list[SessionSummary]:
    """The caller's guided sessions (owned, picked up, or escalated to them), newest first."""
    stmt = (
        select(PilotSession)
        .where(
            PilotSession.kind == GUIDED,
            PilotSession.involving(caller.user_id),
        )
        .order_by(PilotSession.created_at.desc())
        .limit(limit)
    )
    if status is not None:
        stmt = stmt.where(PilotSession.status == status)
    return [session_summary(s) for s in await db.scalars(stmt)]


async def list_escalation_queue(db: AsyncSession, caller: Caller, *, limit: int = 100) -> list[SessionSummary]:
    """Sessions waiting for pickup by the caller's team or escalated to the caller, oldest escalation first."""
    audience = [PilotSession.escalated_to_id == caller.user_id]
    if caller.team_id is not None:
        audience.append(PilotSession.team_id == caller.team_id)
    stmt = (
        select(PilotSession)
        .where(
            PilotSession.kind == GUIDED,
            PilotSession.status == SessionStatus.REQUESTING_ESCALATION,
            or_(*audience),
        )
        .order_by(PilotSession.escalated_at, PilotSession.created_at)
        .limit(limit)
    )
    return [session_summary(s) for s in await db.scalars(stmt)]


# --- views for documentation and communications --------------------------------------------


def step_view(step: SessionStep) -> StepView:
    """A stored step as the documentation and communications modules read it."""
    return StepView(
        order=step.step_order, step_type=step.step_type, content=step.content,
        selected_option=step.selected_option, free_text_input=step.free_text_input,
        was_skipped=step.was_skipped, action_result=escalation.action_result(step.action_result),
        action_details=step.action_details, responded_at=step.responded_at,
    )


async def _session_view(db: AsyncSession, session: PilotSession) -> SessionView:
    owner = await identity.get_user(db, session.user_id)
    client_name = None
    if session.client_id is not None:
        try:
            client_name = (await identity.get_client(db, session.client_id)).name
        except NotFound:
            client_name = None
    return SessionView(
        id=session.id, kind=session.kind, status=session.status, created_at=session.created_at,
        problem_summary=session.problem_summary, problem_domain=session.problem_domain, intake=session.intake,
        resolved_at=session.resolved_at, resolution_summary=session.resolution_summary,
        escalation_reason=session.escalation_reason, engineer_name=owner.name, ticket_id=session.psa_ticket_id,
        ticket_data=session.ticket_data, client_id=session.client_id, client_name=client_name,
    )


async def session_views(db: AsyncSession, caller: Caller, session_id: uuid.UUID) -> tuple[SessionView, list[StepView]]:
    """The session and its steps as read-only views, for documentation and communications."""
    session = await load_session(db, caller, session_id, allow_team_access=True)
    return await _session_view(db, session), [step_view(s) for s in await all_steps(db, session.id)]


async def get_documentation(
    db: AsyncSession, caller: Caller, session_id: uuid.UUID
) -> documentation.SessionDocumentation:
    """The session's documentation (FP-046), built from its steps now."""
    view, steps = await session_views(db, caller, session_id)
    return documentation.build_documentation(view, steps, utcnow())


async def add_status_update(
    db: AsyncSession,
    caller: Caller,
    session_id: uuid.UUID,
    *,
    content: dict[str, Any],
    input_tokens: int,
    output_tokens: int,
) -> StepOut:
    """Store a generated status update as a step (FP-049): it counts toward the step budget and the token totals."""
    session = await load_session(db, caller, session_id)
    step = SessionStep(
        id=uuid.uuid4(), account_id=session.account_id, session_id=session.id,
        branch_id=session.active_branch_id if session.is_branching else None, step_order=session.step_count,
        step_type="status_update", content={**content, "type": "status_update"}, confidence=1.0,
        input_tokens=input_tokens, output_tokens=output_tokens, created_at=utcnow(),
    )
    db.add(step)
    session.step_count += 1
    session.total_input_tokens += input_tokens
    session.total_output_tokens += output_tokens
    await commit(db)
    return step_out(step, session)


# --- start ----------------------------------------------------------------------------------


async def _classify(deps: PilotDeps, account_id: uuid.UUID, text: str, context: CallContext) -> tuple[
    IntakeClassification, int, int
]:
    """Classify the intake with the fast model (FP-008); any failure gives the fallback classification."""
    try:
        result = await deps.llm.structured(
            Purpose.QUICK, [Message.system(prompts.CLASSIFICATION_PROMPT), Message.user(text)],
            IntakeClassification, account_id=account_id, context=context, max_tokens=CLASSIFY_MAX_TOKENS,
        )
    except DeskpilotError as e:
        logger.info("intake classification unavailable (%s); using the fallback", e.code)
        return IntakeClassification.fallback(text), 0, 0
    return result.value, result.usage.input_tokens, result.usage.output_tokens


def _check_intake(request: SessionCreate) -> None:
    size = len(request.text.encode()) + len(request.log_content.encode())
    if size > MAX_INTAKE_BYTES:
        raise IntakeTooLarge(
            f"The intake is {size / 1024:.0f} KB; at most 100 KB is accepted. Paste only the relevant part of "
            "the log (the lines around the error).",
            extra={"size_bytes": size, "limit_bytes": MAX_INTAKE_BYTES},
        )
    if (request.psa_connection_id is None) != (request.psa_ticket_id is None):
        raise ValidationFailed(
            "a PSA ticket needs both psa_connection_id and psa_ticket_id", code="psa_ticket_incomplete"
        )
    if not request.text.strip() and not request.log_content.strip() and request.psa_ticket_id is None:
        raise IntakeEmpty("Describe the problem, paste log output or link a PSA ticket")


async def start_session(db: AsyncSession, deps: PilotDeps, caller: Caller, request: SessionCreate) -> SessionStarted:
    """Start a guided session: ticket context, classification, flow match, system prompt and the first step.

    One write transaction at the end, which also holds the `llm_calls` rows of the model calls; no read
    transaction stays open while a model thinks. Without a model the matched runbook drives the session (flow
    mode); without either, the session is still stored with its intake (waiting for a first step) and the error
    (`no_llm_no_flow`, or `step_generation_failed`) names it in `extra["session_id"]`.
    """
    _check_intake(request)
    async with deps.llm.deferred_recording() as records:
        return await _start_session(db, deps, caller, request, records)


async def _start_session(
    db: AsyncSession, deps: PilotDeps, caller: Caller, request: SessionCreate, records: DeferredRecords | None
) -> SessionStarted:
    text, log = request.text.strip(), request.log_content.strip()
    client = await identity.get_client(db, request.client_id) if request.client_id is not None else None
    session_id = uuid.uuid4()
    context = CallContext(client_id=request.client_id, subject_type=SUBJECT_TYPE, subject_id=session_id)
    intake: dict[str, Any] = {"text": text, "log_content": log}
    if client is not None:
        intake["client_name"] = client.name
    ticket_block: str | None = None
    ticket_data: dict[str, Any] | None = None
    psa_status: str | None = None
    if request.psa_connection_id is not None and request.psa_ticket_id is not None:
        # An unknown connection is the caller's mistake (404); a PSA that does not answer is not (FP-014).
        await psa.get_connection(db, request.psa_connection_id)
        loaded = await psa.load_ticket_context(
            db, deps.secrets, request.psa_connection_id, request.psa_ticket_id, http_client=deps.psa_http_client
        )
        psa_status = loaded.status
        if loaded.context is not None:
            ticket_block = format_ticket_context_for_prompt(loaded.context)
            ticket_data = loaded.context.model_dump(mode="json")
            intake["ticket_data"] = intake_ticket_data(loaded.context)
    ticket_summary = intake["ticket_data"]["summary"] if "ticket_data" in intake else None
    searchable = prompts.intake_text(text, log, ticket_summary)
    await end_read(db)
    classification, in_tokens, out_tokens = await _classify(
        deps, caller.account_id, f"{ticket_block}\n\n{searchable}" if ticket_block else searchable, context
    )
    matches = await knowledge.find_matches(
        db, caller.account_id, searchable, classification.problem_domain, limit=3, team_id=caller.team_id
    )
    alike = await similar.find_similar(
        db, account_id=caller.account_id, session_id=session_id, intake=intake,
        problem_summary=classification.problem_summary, problem_domain=classification.problem_domain,
    )
    top = matches[0] if matches else None
    relevant = top is not None and top.score > prompts.FLOW_PROMPT_MIN_SCORE
    definition = await knowledge.get_flow_definition(db, top.flow_id) if relevant and top is not None else None
    matched = (
        prompts.MatchedFlow(str(top.flow_id), top.name, top.score, flow_mode.outline(definition) if definition else "")
        if top is not None else None
    )
    scripts = format_templates_for_prompt(
        await knowledge.top_templates_for_prompt(db, caller.team_id, limit=SCRIPTS_IN_PROMPT)
    )
    system_prompt = prompts.build_system_prompt(ticket_block=ticket_block, scripts_block=scripts, matched_flow=matched)
    first_message = prompts.first_user_message(text, log, classification)

    session = PilotSession(
        id=session_id, account_id=caller.account_id, kind=GUIDED, user_id=caller.user_id, team_id=caller.team_id,
        client_id=request.client_id, status=SessionStatus.ACTIVE, mode="ai",
        intake_type="psa_ticket" if request.psa_ticket_id else "free_text", intake=intake,
        problem_summary=classification.problem_summary, problem_domain=classification.problem_domain,
        urgency=classification.urgency, key_symptoms=list(classification.key_symptoms), confidence_score=0.0,
        confidence_tier="discovery", matched_flow_id=top.flow_id if top else None,
        matched_flow_name=top.name if top else None, match_score=top.score if top else None,
        psa_connection_id=request.psa_connection_id, psa_ticket_id=request.psa_ticket_id,
        psa_context_status=psa_status, ticket_data=ticket_data, system_prompt=system_prompt, step_count=0,
        message_seq=0, awaiting_generation=True, total_input_tokens=in_tokens, total_output_tokens=out_tokens,
    )
    history = [Message.user(first_message)]
    try:
        produced: Produced | None = await produce(db, deps, session, history, [], None, rematch=False)
        failure: DeskpilotError | None = None
    except (NoLLMNoFlow, StepGenerationFailed) as e:
        produced, failure = None, e
    db.add(session)
    append_message(db, session, None, "user", first_message)
    if relevant and top is not None:
        await record_match(db, top.flow_id)
    if produced is None:
        assert failure is not None
        session.generation_error = str(failure.extra.get("cause", failure.code))[:64]
        store_records(db, records)
        await commit(db)
        records_stored(records)
        raise failure
    row = await apply_step(db, session, produced, [], top_match_score=top.score if top else None, initial=True)
    store_records(db, records)
    await commit(db)
    records_stored(records)
    keep_conversation(deps, session, history, row)
    return SessionStarted(
        session_id=session.id, status=session.status, mode=mode_of(session.mode), confidence_tier=session_tier(session),
        confidence_score=session.confidence_score, problem_summary=session.problem_summary,
        problem_domain=session.problem_domain, urgency=session.urgency, matched_flow_id=session.matched_flow_id,
        matched_flow_name=session.matched_flow_name, match_score=session.match_score,
        first_step=step_out(row, session), psa_context_status=_psa_status(psa_status), similar_sessions=alike,
    )


def _psa_status(value: str | None) -> Literal["loaded", "unavailable"] | None:
    match value:
        case "loaded" | "unavailable":
            return value
        case _:
            return None


# --- turns ----------------------------------------------------------------------------------


async def respond(
    db: AsyncSession, deps: PilotDeps, caller: Caller, session_id: uuid.UUID, response: StepResponse
) -> TurnResult:
    """Record the engineer's answer to the current step and generate the next step (FP-025..FP-027).

    The answer is committed before the LLM is called. Two answers to the same step: one wins, the other gets
    `StepAlreadyAnswered` (409). If no step can be generated, the answer stays stored, the session waits for
    `retry_generation`, and `StepGenerationFailed` / `NoLLMNoFlow` says why.
    """
    session, step = await load_turn(db, caller, session_id)
    transition(session.status, Action.RESPOND)
    if session.step_count >= MAX_STEPS_PER_SESSION:
        raise StepLimitReached("Maximum steps reached for this session", extra={"limit": MAX_STEPS_PER_SESSION})
    if session.awaiting_generation or step is None:
        if response.step_id is not None:
            # The step the engineer saw is no longer waiting: someone answered it first.
            raise StepAlreadyAnswered("This step has already been answered", extra={"step_id": str(response.step_id)})
        raise GenerationPending(
            "The next step has not been generated yet; retry generation", extra={"session_id": str(session.id)}
        )
    if response.step_id is not None and response.step_id != step.id:
        raise StepAlreadyAnswered(
            "That step is no longer the current one; reload the session", extra={"current_step_id": str(step.id)}
        )
    check_response(session, step, response)
    branches = await branch_rows(db, session)
    is_fork = step.content.get("type") == "fork"
    if is_fork and response.selected_option is not None:
        target = next((b for b in branches if str(b.id) == response.selected_option), None)
        if target is None:
            raise UnknownOption(f"Branch {response.selected_option!r} is not one of this fork's branches")
        switch_to(session, branches, target, at_fork=True)
    active = active_branch(session, branches)
    history = await turn_history(db, deps, session, active)
    now = utcnow()
    if is_fork:
        # A fork is answered by the choice of branch; the branch's opening message already says which.
        await record_response(db, caller, step, response, now)
        session.current_step_id = None
        session.awaiting_generation = True
        session.generation_error = None
        await commit(db)
    else:
        # The text the history rebuilds from the stored answer, by the same function.
        text = answer_text(step.content, response_values(caller, response, now))
        await commit_answer(db, caller, session, step, response, text, active, now)
        history.append(Message.user(text))
    return await generate(db, deps, session, history, branches, step)


async def retry_generation(db: AsyncSession, deps: PilotDeps, caller: Caller, session_id: uuid.UUID) -> TurnResult:
    """Generate the step a session waits for: after a failed generation, a branch switch or a flow added later."""
    session = await load_session(db, caller, session_id)
    transition(session.status, Action.GENERATE)
    if not session.awaiting_generation:
        raise NoGenerationPending("This session is not waiting for a step", extra={"session_id": str(session.id)})
    if session.step_count >= MAX_STEPS_PER_SESSION:
        raise StepLimitReached("Maximum steps reached for this session", extra={"limit": MAX_STEPS_PER_SESSION})
    branches = await branch_rows(db, session)
    history = await turn_history(db, deps, session, active_branch(session, branches))
    previous = await last_step(db, session)
    return await generate(db, deps, session, history, branches, previous)


# --- lifecycle ------------------------------------------------------------------------------


async def pause(db: AsyncSession, caller: Caller, session_id: uuid.UUID) -> SessionSummary:
    """Pause an active session (FP-031); its owner resumes it later."""
    session = await load_session(db, caller, session_id)
    session.status = transition(session.status, Action.PAUSE)
    await commit(db)
    return session_summary(session)


async def resume(db: AsyncSession, caller: Caller, session_id: uuid.UUID) -> SessionSummary:
    """Resume a paused session (FP-031)."""
    session = await load_session(db, caller, session_id)
    session.status = transition(session.status, Action.RESUME)
    await commit(db)
    return session_summary(session)


async def rate(db: AsyncSession, caller: Caller, session_id: uuid.UUID, request: RateRequest) -> SessionSummary:
    """Rate a session in any status (FP-031)."""
    session = await load_session(db, caller, session_id)
    transition(session.status, Action.RATE)
    session.rating = request.rating
    session.feedback = request.feedback
    await commit(db)
    return session_summary(session)


async def _record_outcome(db: AsyncSession, session: PilotSession, *, resolved: bool) -> None:
    """The matched flow's success rate (FP-036); only flows that were relevant enough to guide count."""
    if session.matched_flow_id is None or (session.match_score or 0.0) <= prompts.FLOW_PROMPT_MIN_SCORE:
        return
    try:
        await knowledge.record_outcome(db, session.matched_flow_id, resolved)
    except NotFound:
        logger.warning("matched flow %s of session %s no longer exists", session.matched_flow_id, session.id)


async def abandon(
    db: AsyncSession, caller: Caller, session_id: uuid.UUID, request: AbandonRequest
) -> SessionSummary:
    """Close a session without resolving or escalating it (FP-031): `resolved_at` set, the reason kept."""
    session = await load_session(db, caller, session_id)
    session.status = transition(session.status, Action.ABANDON)
    session.resolved_at = utcnow()
    session.awaiting_generation = False
    if request.reason:
        session.resolution_notes = request.reason
    await _record_outcome(db, session, resolved=False)
    audit.record(db, account_id=session.account_id, actor=caller.actor, action="pilot.session.abandon",
                 resource_type=SUBJECT_TYPE, resource_id=session.id, details={"reason": request.reason})
    await commit(db)
    return session_summary(session)


async def link_ticket(
    db: AsyncSession, deps: PilotDeps, caller: Caller, session_id: uuid.UUID, request: LinkTicketRequest
) -> SessionDetail:
    """Link a PSA ticket mid-session (FP-043): its context joins the system prompt for the next steps."""
    session = await load_session(db, caller, session_id)
    transition(session.status, Action.LINK_TICKET)
    await psa.get_connection(db, request.psa_connection_id)
    loaded = await psa.load_ticket_context(
        db, deps.secrets, request.psa_connection_id, request.psa_ticket_id, http_client=deps.psa_http_client
    )
    session.psa_connection_id = request.psa_connection_id
    session.psa_ticket_id = request.psa_ticket_id
    session.psa_context_status = loaded.status
    if loaded.context is not None:
        session.ticket_data = loaded.context.model_dump(mode="json")
        session.system_prompt = prompts.with_linked_ticket(
            session.system_prompt, format_ticket_context_for_prompt(loaded.context)
        )
    await commit(db)
    return await get_session(db, caller, session.id)


async def _push_note(
    db: AsyncSession,
    deps: PilotDeps,
    session: PilotSession,
    note: str,
    flags: NoteFlags,
    time_entry: TimeEntryDraft | None = None,
) -> PushResult:
    """Post a note to the linked ticket (FP-044); `record_and_push` never raises for PSA failures."""
    result = await psa.record_and_push(
        db, deps.secrets, connection_id=session.psa_connection_id, ticket_id=session.psa_ticket_id,
        subject_type=SUBJECT_TYPE, subject_id=session.id, note_text=note, flags=flags, time_entry=time_entry,
        http_client=deps.psa_http_client,
    )
    if result.push_ids:
        await db.commit()
    return result


async def _documentation(db: AsyncSession, session: PilotSession) -> documentation.SessionDocumentation:
    view = await _session_view(db, session)
    return documentation.build_documentation(view, [step_view(s) for s in await all_steps(db, session.id)], utcnow())


def _hours_worked(started: datetime, ended: datetime) -> Decimal:
    """Decimal hours for the PSA time entry: at least 0.01, at most the 24 one entry may hold."""
    hours = Decimal(max((ended - started).total_seconds(), 0.0) / 3600).quantize(Decimal("0.01"))
    return min(max(hours, Decimal("0.01")), Decimal(24))


def _template_ids(steps: Sequence[SessionStep]) -> set[uuid.UUID]:
    """Script templates the engineer actually used: answered script_generation steps."""
    used: set[uuid.UUID] = set()
    for step in steps:
        template_id = step.content.get("template_id")
        if step.responded_at is None or step.was_skipped or not isinstance(template_id, str):
            continue
        try:
            used.add(uuid.UUID(template_id))
        except ValueError:
            continue
    return used


async def resolve(
    db: AsyncSession, deps: PilotDeps, caller: Caller, session_id: uuid.UUID, request: ResolveRequest
) -> SessionClosed:
    """Resolve a session (FP-035..FP-037, FP-044).

    Commits the resolution, the flow's success rate and template usage first; then builds the documentation,
    pushes it to the linked ticket (with the time spent) and queues the knowledge-flywheel analysis. A PSA
    failure is reported in the result, never raised.
    """
    session = await load_session(db, caller, session_id)
    session.status = transition(session.status, Action.RESOLVE)
    now = utcnow()
    session.resolved_at = now
    session.resolution_summary = request.resolution_summary
    session.resolution_action = request.resolution_action
    if request.rating is not None:
        session.rating = request.rating
    if request.feedback is not None:
        session.feedback = request.feedback
    session.awaiting_generation = False
    session.analysis_status = "pending"
    steps = await all_steps(db, session.id)
    await _record_outcome(db, session, resolved=True)
    for template_id in _template_ids(steps):
        try:
            await knowledge.record_template_use(db, template_id)
        except NotFound:
            logger.info("template %s used in session %s no longer exists", template_id, session.id)
    await similar.index_resolved(db, session)  # searchable for later sessions from now on (FP-021)
    audit.record(db, account_id=session.account_id, actor=caller.actor, action="pilot.session.resolve",
                 resource_type=SUBJECT_TYPE, resource_id=session.id,
                 details={"matched_flow_id": str(session.matched_flow_id) if session.matched_flow_id else None})
    await commit(db)
    view = await _session_view(db, session)
    doc = documentation.build_documentation(view, [step_view(s) for s in steps], now)
    hours = _hours_worked(session.created_at, now)
    pushed = await _push_note(
        db, deps, session, documentation.psa_note_text(doc, context="resolution"),
        NoteFlags(resolution=True, detail=True),
        TimeEntryDraft(user_id=caller.user_id, hours=hours, notes=f"Resolved: {request.resolution_summary}"[:4000],
                       started_at=session.created_at),
    )
    await _enqueue_analysis(deps, session)
    return SessionClosed(
        session_id=session.id, status=session.status, documentation=doc, psa_push_status=pushed.status,
        psa_push_error=pushed.error, member_mapping_warning=pushed.member_mapping_warning,
    )


async def _enqueue_analysis(deps: PilotDeps, session: PilotSession) -> None:
    """Queue the knowledge-flywheel analysis (FP-035); without a job backend it stays `pending`."""
    if deps.jobs is None:
        return
    try:
        await deps.jobs.enqueue(ANALYSE_JOB, {"account_id": str(session.account_id), "session_id": str(session.id)})
    except DeskpilotError as e:
        logger.warning("flywheel analysis of session %s not queued: %s", session.id, e.code)


# --- escalation and pickup ------------------------------------------------------------------


async def escalate(
    db: AsyncSession, deps: PilotDeps, caller: Caller, session_id: uuid.UUID, request: EscalateRequest
) -> EscalationResult:
    """Ask another engineer, or the whole team, to take the session over (FP-038..FP-040).

    The package carries what was tried and, when the fast model answers, the remaining hypotheses. The target
    (or every active member of the session's team but the caller) is notified; the escalation note goes to the
    linked ticket.
    """
    session = await load_session(db, caller, session_id)
    new_status = transition(session.status, Action.ESCALATE)
    check_escalation_target(caller.user_id, request.target_user_id)
    if request.target_user_id is not None:
        target = await identity.get_user(db, request.target_user_id)
        if not target.is_active:
            raise ValidationFailed(f"user {target.name!r} is not active", code="escalation_target_inactive")
    steps = await all_steps(db, session.id)
    tried = escalation.steps_tried(steps)
    await end_read(db)
    insights = await escalation.gather_insights(
        deps.llm, account_id=session.account_id, context=call_context(session), problem_summary=session.problem_summary,
        problem_domain=session.problem_domain, tried=tried, reason=request.reason,
    )
    package = escalation.build_package(
        original_user_id=caller.user_id, escalated_by_name=caller.name, problem_summary=session.problem_summary,
        problem_domain=session.problem_domain, intake=session.intake, confidence=session.confidence_score,
        tried=tried, reason=request.reason, insights=insights.value,
    )
    session.escalation_package = package.model_dump(mode="json")
    session.total_input_tokens += insights.input_tokens
    session.total_output_tokens += insights.output_tokens
    recipients, sent = await escalation.hand_over(
        db, session, caller, request, new_status,
        title=f"Escalated: {session.problem_summary or 'troubleshooting session'}", link=f"/pilot/{session.id}",
    )
    audit.record(db, account_id=session.account_id, actor=caller.actor, action="pilot.session.escalate",
                 resource_type=SUBJECT_TYPE, resource_id=session.id,
                 details={"target_user_id": str(request.target_user_id) if request.target_user_id else None,
                          "notified": len(sent)})
    await commit(db)
    await _publish(deps, sent)
    doc = await _documentation(db, session)
    pushed = await _push_note(
        db, deps, session, documentation.psa_note_text(doc, context="escalation"),
        NoteFlags(internal=True, detail=False),
    )
    return EscalationResult(
        session_id=session.id, status=session.status, documentation=doc, psa_push_status=pushed.status,
        psa_push_error=pushed.error, member_mapping_warning=pushed.member_mapping_warning,
        escalated_to_id=session.escalated_to_id, notified_user_ids=recipients, package=package,
    )


async def _publish(deps: PilotDeps, sent: Sequence[NotificationOut]) -> None:
    if deps.pubsub is None:
        return
    for notification in sent:
        await notifications.publish_notification(deps.pubsub, notification)


async def pickup(
    db: AsyncSession, deps: PilotDeps, caller: Caller, session_id: uuid.UUID, request: PickupRequest
) -> PickupResult:
    """Take over an escalated session (FP-041, FP-042): a briefing step, then the next step in the chosen mode.

    Any member of the session's team may pick it up, except the engineer who escalated it. Briefing and next
    step each count one step.
    """
    session = await load_session(db, caller, session_id, allow_team_access=True)
    new_status = transition(session.status, Action.PICKUP)
    package = _package(session)
    check_pickup(caller.user_id, package.original_user_id if package else session.user_id)
    # A runbook continues from its last step; a fresh start, or the LLM, continues from the briefing.
    continue_flow = session.mode == "flow" and request.resume_mode == "continue"
    flow_previous = await last_step(db, session) if continue_flow else None
    branches = await branch_rows(db, session)
    active = active_branch(session, branches)
    history = await turn_history(db, deps, session, active)
    now = utcnow()
    if package is None:
        package = escalation.build_package(
            original_user_id=session.user_id, escalated_by_name="", problem_summary=session.problem_summary,
            problem_domain=session.problem_domain, intake=session.intake, confidence=session.confidence_score,
            tried=[], reason=session.escalation_reason or "", insights=None,
        )
    package.picked_up_by = caller.user_id
    package.picked_up_at = now
    session.escalation_package = package.model_dump(mode="json")
    session.picked_up_by_id = caller.user_id
    session.picked_up_at = now
    session.status = new_status
    briefing = SessionStep(
        id=uuid.uuid4(), account_id=session.account_id, session_id=session.id,
        branch_id=active.id if active else None, step_order=session.step_count, step_type="action",
        content=escalation.briefing_content(escalation.briefing_markdown(package)),
        context_message=escalation.BRIEFING_CONTEXT_MESSAGE, confidence=session.confidence_score,
        reasoning="Hand-over briefing for the engineer picking the session up", created_at=now,
    )
    db.add(briefing)
    session.step_count += 1
    message = prompts.pickup_message(request.additional_context, fresh=request.resume_mode == "fresh")
    append_message(db, session, active.id if active else None, "user", message)
    history.append(Message.user(message))
    session.current_step_id = None
    session.awaiting_generation = True
    sent = [notifications.add_notification(
        db, account_id=session.account_id, user_id=package.original_user_id, kind="session.picked_up",
        title=f"{caller.name} picked up: {session.problem_summary or 'troubleshooting session'}",
        link=f"/pilot/{session.id}",
    )]
    audit.record(db, account_id=session.account_id, actor=caller.actor, action="pilot.session.pickup",
                 resource_type=SUBJECT_TYPE, resource_id=session.id, details={"resume_mode": request.resume_mode})
    await commit(db)
    await _publish(deps, sent)
    briefing_out = step_out(briefing, session)
    turn = await generate(db, deps, session, history, branches, flow_previous or briefing)
    return PickupResult(briefing=briefing_out, turn=turn)


def _package(session: PilotSession) -> EscalationPackage | None:
    if not session.escalation_package:
        return None
    return EscalationPackage.model_validate(session.escalation_package)


# --- branches -------------------------------------------------------------------------------


async def get_branch_tree(db: AsyncSession, caller: Caller, session_id: uuid.UUID) -> list[BranchNode]:
    session = await load_session(db, caller, session_id, allow_team_access=True)
    return branching.build_tree(await branch_rows(db, session), session.active_branch_id)


async def _branching_session(
    db: AsyncSession, caller: Caller, session_id: uuid.UUID, action: Action, branch_id: uuid.UUID
) -> tuple[PilotSession, list[SessionBranch], SessionBranch]:
    session = await load_session(db, caller, session_id)
    transition(session.status, action)
    if not session.is_branching:
        raise NotBranching("This session has not forked into branches")
    branches = await branch_rows(db, session)
    target = next((b for b in branches if b.id == branch_id), None)
    if target is None:
        raise BranchNotFound(f"branch {str(branch_id)!r} not found in this session")
    return session, branches, target


async def _activate(
    db: AsyncSession, caller: Caller, session: PilotSession, branches: Sequence[SessionBranch], target: SessionBranch
) -> SessionStep | None:
    """Switch to `target` and find the step waiting on it; None means the branch needs a step generated."""
    current = await current_step_or_none(db, session)
    at_fork = (
        current is not None
        and current.is_fork_point
        and current.fork_point_id == target.fork_point_id
        and current.responded_at is None
    )
    if at_fork and current is not None:
        # Switching to one of a pending fork's branches is the fork's answer.
        await record_response(db, caller, current, StepResponse(selected_option=str(target.id)), utcnow())
    switch_to(session, branches, target, at_fork=at_fork)
    latest = await db.scalar(
        select(SessionStep).where(SessionStep.session_id == session.id, SessionStep.branch_id == target.id)
        .order_by(SessionStep.step_order.desc()).limit(1)
    )
    waiting = latest if latest is not None and latest.responded_at is None else None
    session.current_step_id = waiting.id if waiting is not None else None
    session.awaiting_generation = waiting is None
    return waiting


async def switch_branch(
    db: AsyncSession, deps: PilotDeps, caller: Caller, session_id: uuid.UUID, branch_id: uuid.UUID
) -> TurnResult:
    """Continue on another branch (FP-029): its waiting step, or a first step generated now."""
    session, branches, target = await _branching_session(db, caller, session_id, Action.SWITCH_BRANCH, branch_id)
    if target.status in branching.CLOSED_STATUSES:
        raise BranchClosed(
            f"Branch {target.label!r} is marked {target.status.replace('_', ' ')}; revive it with new evidence first"
        )
    if target.id != session.active_branch_id or not session.awaiting_generation:
        waiting = await _activate(db, caller, session, branches, target)
        await commit(db)
        if waiting is not None:
            return turn_result(session, waiting)
    history = await turn_history(db, deps, session, target)
    return await generate(db, deps, session, history, branches, await last_step(db, session))


async def mark_branch(
    db: AsyncSession, caller: Caller, session_id: uuid.UUID, branch_id: uuid.UUID, request: MarkBranchRequest
) -> list[BranchNode]:
    """Mark a branch a dead end or solved (FP-029); leaving the active branch moves to an open sibling or the parent.

    No step is generated here: when the branch moved to needs one, the session says `awaiting_generation`.
    """
    session, branches, target = await _branching_session(db, caller, session_id, Action.MARK_BRANCH, branch_id)
    if target.parent_branch_id is None:
        raise BranchClosed("The main line cannot be marked; mark one of its branches")
    target.status = request.status
    if target.id == session.active_branch_id:
        move_to = branching.branch_after_closing(target, branches)
        if move_to is not None:
            await _activate(db, caller, session, branches, move_to)
    await commit(db)
    return branching.build_tree(branches, session.active_branch_id)


async def revive_branch(
    db: AsyncSession,
    deps: PilotDeps,
    caller: Caller,
    session_id: uuid.UUID,
    branch_id: uuid.UUID,
    request: ReviveBranchRequest,
) -> TurnResult:
    """Reopen a dead-end branch with new evidence and continue on it with a newly generated step (FP-029)."""
    session, branches, target = await _branching_session(db, caller, session_id, Action.REVIVE_BRANCH, branch_id)
    if target.status != "dead_end":
        raise BranchClosed(f"Only a dead-end branch can be revived; {target.label!r} is {target.status}")
    history = await turn_history(db, deps, session, target)
    await _activate(db, caller, session, branches, target)
    target.status = "revived"
    evidence = prompts.revive_message(request.evidence)
    target.findings = branching.with_finding(target.findings, f"New evidence: {request.evidence.strip()}"[:300])
    append_message(db, session, target.id, "user", evidence)
    history.append(Message.user(evidence))
    session.current_step_id = None
    session.awaiting_generation = True
    await commit(db)
    return await generate(db, deps, session, history, branches, await last_step(db, session))
