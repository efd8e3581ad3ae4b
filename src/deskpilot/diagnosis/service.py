"""Diagnosis service: the task lane, facts ("What we know") and suggested fixes of a session.

Functions take the caller's AsyncSession and do not commit: the chat turn adds its writes to its own
transaction, and the API commits once per request. Every function takes `account_id` and filters by it, so it
behaves alike in an account session and a system session. Every write bumps `sessions.state_version` in the same
transaction (the console's cache key); a `PilotSession` already loaded in that AsyncSession is kept in step, so
the caller's own version-checked update of the session still succeeds after these writes.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from deskpilot.chat.events import (
    ActionsEvent,
    ChatEvent,
    FixOutcomeEvent,
    PromoteEvent,
    QuestionsEvent,
    SuggestFixEvent,
)
from deskpilot.diagnosis.errors import (
    FactInvalid,
    FactNotEditable,
    FactNotFound,
    FactSourceInvalid,
    FactSynthesisEmpty,
    FixSuperseded,
    NoAIOutcomeProposal,
    ProposalMismatch,
    SuggestedFixNotFound,
    TaskLaneItemNotFound,
)
from deskpilot.diagnosis.fixes import (
    APPLIED,
    NEEDS_OUTCOME,
    OUTCOME_STATUS,
    VERIFIED,
    FixStatus,
    OutcomeNotes,
    ProposalResolution,
    UserDecision,
    check_decision,
    check_outcome_notes,
    check_transition,
)
from deskpilot.diagnosis.lane import ActionState, QuestionState, StoredLane, item_kind, next_lane, with_item_status
from deskpilot.diagnosis.models import FactSourceType, SessionFact, SessionSuggestedFix, SessionTaskLane
from deskpilot.diagnosis.schemas import (
    ITEM_SOURCES,
    AIOutcomeProposal,
    DecisionUpdate,
    FactCreate,
    FactList,
    FactOut,
    FactResult,
    FactSynthesis,
    FactUpdate,
    FixList,
    FixResult,
    LaneItemUpdate,
    OutcomeUpdate,
    PromoteRequest,
    PromotionResult,
    SuggestedFixOut,
    TaskLaneState,
    proposal_dict,
)
from deskpilot.knowledge import service as knowledge
from deskpilot.llm import LLM, CallContext, Message, Purpose
from deskpilot.pilot.access import Caller, check_access
from deskpilot.pilot.engine import SUBJECT_TYPE, end_read, session_parties
from deskpilot.pilot.errors import SessionNotFound

# The one table of another domain used here: `sessions` is shared by guided and chat sessions, and the rules
# (access, state_version) are about that row. Pilot owns it; this module reads it and bumps its version only.
from deskpilot.pilot.models import PilotSession
from deskpilot.storage import utcnow

__all__ = [
    "PromptState",
    "TurnDiagnosis",
    "add_user_note",
    "apply_task_lane",
    "apply_turn",
    "check_session_access",
    "delete_fact",
    "edit_fact",
    "fix_needing_outcome",
    "get_task_lane",
    "list_facts",
    "list_suggested_fixes",
    "mark_active_fix_successful_on_resolve",
    "persist_suggested_fix",
    "promote_item",
    "prompt_state",
    "record_ai_outcome_proposal",
    "record_decision",
    "record_outcome",
    "record_promotions",
    "state_version",
    "update_lane_item",
]

logger = logging.getLogger(__name__)

SYNTHESIS_MAX_TOKENS: Final = 400
SYNTHESIS_PROMPT: Final = (
    'You keep the list "What we know" of an IT troubleshooting session. You are given one item of the '
    "engineer's task lane: a question they answered or a check they ran. State what it established as one short, "
    "factual sentence in `text`: no speculation, no advice, no next steps. Optionally give a label of a few words "
    'in `summary`. If the item established nothing (no answer, no result, or only "don\'t know"), return null '
    "for `text`."
)


# --- the session row: access and state_version ------------------------------------------------------


async def check_session_access(db: AsyncSession, caller: Caller, session_id: uuid.UUID, *, write: bool) -> None:
    """FP-033 on any session kind: 404 `session_not_found` outside the account, 403 `session_access_denied`.

    Reading is also open to the session's team while it requests escalation (as Pilot's detail view is).
    """
    session = await db.get(PilotSession, session_id)
    if session is None or session.account_id != caller.account_id:
        raise SessionNotFound(f"session {str(session_id)!r} not found")
    check_access(caller, session_parties(session), allow_team_access=not write)


async def state_version(db: AsyncSession, *, account_id: uuid.UUID, session_id: uuid.UUID) -> int:
    """The session's current `state_version` (404 `session_not_found` when there is no such session)."""
    version = await db.scalar(
        select(PilotSession.state_version).where(PilotSession.id == session_id, PilotSession.account_id == account_id)
    )
    if version is None:
        raise SessionNotFound(f"session {str(session_id)!r} not found")
    return version


async def _bump(db: AsyncSession, account_id: uuid.UUID, session_id: uuid.UUID) -> int:
    """`state_version = state_version + 1` in the caller's transaction; returns the new version.

    An UPDATE with an expression, not read-then-write, so concurrent writers each add one. The ORM statement
    also updates a PilotSession loaded in `db`, whose next flush then compares against the new version.
    """
    version = await db.scalar(
        update(PilotSession)
        .where(PilotSession.id == session_id, PilotSession.account_id == account_id)
        .values(state_version=PilotSession.state_version + 1)
        .returning(PilotSession.state_version)
    )
    if version is None:
        raise SessionNotFound(f"session {str(session_id)!r} not found")
    return version


# --- task lane (UC-015, UC-016) ---------------------------------------------------------------------


async def _lane_row(db: AsyncSession, account_id: uuid.UUID, session_id: uuid.UUID) -> SessionTaskLane | None:
    return await db.scalar(
        select(SessionTaskLane).where(
            SessionTaskLane.session_id == session_id, SessionTaskLane.account_id == account_id
        )
    )


def _stored(row: SessionTaskLane | None) -> StoredLane | None:
    return StoredLane.model_validate(row.lane) if row is not None else None


async def _lane(db: AsyncSession, account_id: uuid.UUID, session_id: uuid.UUID) -> StoredLane | None:
    return _stored(await _lane_row(db, account_id, session_id))


async def get_task_lane(db: AsyncSession, *, account_id: uuid.UUID, session_id: uuid.UUID) -> TaskLaneState:
    """The session's task lane with each item's status (None when the last turn asked and proposed nothing)."""
    row = await _lane_row(db, account_id, session_id)
    return TaskLaneState(
        state_version=await state_version(db, account_id=account_id, session_id=session_id),
        lane=_stored(row),
        updated_at=row.updated_at if row is not None else None,
    )


async def apply_task_lane(
    db: AsyncSession,
    *,
    account_id: uuid.UUID,
    session_id: uuid.UUID,
    questions: QuestionsEvent | None,
    actions: ActionsEvent | None,
) -> TaskLaneState:
    """Chat turn: store this turn's lane (UC-015/016) before its PROMOTE items are recorded, so their refs resolve.

    No questions and no actions clear the lane. Items keep their ids (and the engineer's status) when a question's
    text or an action's label is unchanged. An unchanged lane writes nothing and keeps the version.
    """
    row = await _lane_row(db, account_id, session_id)
    previous = _stored(row)
    lane = next_lane(previous, questions, actions)
    if lane == previous:
        return TaskLaneState(
            state_version=await state_version(db, account_id=account_id, session_id=session_id),
            lane=lane,
            updated_at=row.updated_at if row is not None else None,
        )
    version = await _bump(db, account_id, session_id)
    if lane is None:
        assert row is not None  # previous was not None, or the lanes would be equal
        await db.delete(row)
        await db.flush()
        return TaskLaneState(state_version=version, lane=None)
    document = lane.model_dump(mode="json")
    if row is None:
        row = SessionTaskLane(account_id=account_id, session_id=session_id, lane=document)
        db.add(row)
    else:
        row.lane = document
    await db.flush()
    return TaskLaneState(state_version=version, lane=lane, updated_at=row.updated_at)


async def update_lane_item(
    db: AsyncSession, *, account_id: uuid.UUID, session_id: uuid.UUID, item_id: uuid.UUID, change: LaneItemUpdate
) -> TaskLaneState:
    """The engineer checks or skips an item (pending|done|skipped), with an optional answer/result note."""
    row = await _lane_row(db, account_id, session_id)
    lane = _stored(row)
    changed = (
        with_item_status(lane, item_id, change.status, note=change.note, set_note="note" in change.model_fields_set)
        if lane is not None
        else None
    )
    if row is None or changed is None:
        raise TaskLaneItemNotFound(f"the task lane has no item {str(item_id)!r}")
    row.lane = changed.model_dump(mode="json")
    version = await _bump(db, account_id, session_id)
    await db.flush()
    return TaskLaneState(state_version=version, lane=changed, updated_at=row.updated_at)


# --- facts (UC-017, UC-018) -------------------------------------------------------------------------


def fact_out(fact: SessionFact) -> FactOut:
    source = FactSourceType(fact.source_type)
    return FactOut(
        id=fact.id,
        session_id=fact.session_id,
        source_type=source,
        source_ref=fact.source_ref,
        text=fact.text,
        summary=fact.summary,
        created_by_id=fact.created_by_id,
        created_at=fact.created_at,
        updated_at=fact.updated_at,
        deleted_at=fact.deleted_at,
        editable=source not in ITEM_SOURCES,
    )


def _new_fact(
    *,
    account_id: uuid.UUID,
    session_id: uuid.UUID,
    lane: StoredLane | None,
    source_type: FactSourceType,
    text: str,
    summary: str | None,
    source_ref: uuid.UUID | None,
    created_by_id: uuid.UUID | None,
) -> SessionFact:
    """A fact row after UC-017's checks; FactInvalid/FactSourceInvalid (ValueErrors) when it cannot be stored.

    `ai_synthesis` drops any `source_ref`; a `user_note` has none; a question/diagnostic_check ref must name a
    question/action of the session's current lane (the parser keeps such facts without a ref when the model
    wrote an unreadable one, so a missing ref is allowed).
    """
    text = text.strip()
    if not text:
        raise FactInvalid("a fact needs non-empty text")
    if source_type is FactSourceType.AI_SYNTHESIS:
        source_ref = None
    elif source_type is FactSourceType.USER_NOTE:
        if source_ref is not None:
            raise FactSourceInvalid("a user note has no source item")
    elif source_ref is not None:
        item = lane.find(source_ref) if lane is not None else None
        wanted = "question" if source_type is FactSourceType.QUESTION else "action"
        if item is None:
            raise FactSourceInvalid(f"source_ref {str(source_ref)!r} is not an item of the session's task lane")
        if item_kind(item) != wanted:
            raise FactSourceInvalid(
                f"a {source_type.value!r} fact must point at a task-lane {wanted}, not a {item_kind(item)}"
            )
    return SessionFact(
        account_id=account_id,
        session_id=session_id,
        source_type=source_type.value,
        source_ref=source_ref,
        text=text,
        summary=(summary or "").strip() or None,
        created_by_id=created_by_id,
    )


async def _active_facts(db: AsyncSession, account_id: uuid.UUID, session_id: uuid.UUID) -> Sequence[SessionFact]:
    return (
        await db.scalars(
            select(SessionFact)
            .where(
                SessionFact.session_id == session_id,
                SessionFact.account_id == account_id,
                SessionFact.deleted_at.is_(None),
            )
            .order_by(SessionFact.created_at, SessionFact.id)
        )
    ).all()


async def list_facts(db: AsyncSession, *, account_id: uuid.UUID, session_id: uuid.UUID) -> FactList:
    """The session's active facts, oldest first (deleted ones are left out)."""
    facts = await _active_facts(db, account_id, session_id)
    return FactList(
        state_version=await state_version(db, account_id=account_id, session_id=session_id),
        facts=[fact_out(f) for f in facts],
    )


async def add_user_note(
    db: AsyncSession, *, account_id: uuid.UUID, session_id: uuid.UUID, user_id: uuid.UUID, body: FactCreate
) -> FactResult:
    """The engineer adds a fact of their own (`user_note`)."""
    version = await _bump(db, account_id, session_id)
    fact = _new_fact(
        account_id=account_id,
        session_id=session_id,
        lane=None,
        source_type=FactSourceType.USER_NOTE,
        text=body.text,
        summary=body.summary,
        source_ref=None,
        created_by_id=user_id,
    )
    db.add(fact)
    await db.flush()
    return FactResult(state_version=version, fact=fact_out(fact))


async def _fact(db: AsyncSession, account_id: uuid.UUID, session_id: uuid.UUID, fact_id: uuid.UUID) -> SessionFact:
    fact = await db.scalar(
        select(SessionFact).where(
            SessionFact.id == fact_id,
            SessionFact.session_id == session_id,
            SessionFact.account_id == account_id,
            SessionFact.deleted_at.is_(None),
        )
    )
    if fact is None:
        raise FactNotFound(f"fact {str(fact_id)!r} not found in this session")
    return fact


async def edit_fact(
    db: AsyncSession, *, account_id: uuid.UUID, session_id: uuid.UUID, fact_id: uuid.UUID, body: FactUpdate
) -> FactResult:
    """Change a fact's text or summary; 403 `fact_not_editable` for question/diagnostic_check facts (UC-018)."""
    fact = await _fact(db, account_id, session_id, fact_id)
    if FactSourceType(fact.source_type) in ITEM_SOURCES:
        raise FactNotEditable(
            f"a {fact.source_type!r} fact restates its task-lane item: edit the source item instead",
            extra={"source_ref": str(fact.source_ref) if fact.source_ref else None},
        )
    if body.text is not None:
        fact.text = body.text
    if "summary" in body.model_fields_set:
        fact.summary = body.summary or None
    version = await _bump(db, account_id, session_id)
    await db.flush()
    return FactResult(state_version=version, fact=fact_out(fact))


async def delete_fact(
    db: AsyncSession, *, account_id: uuid.UUID, session_id: uuid.UUID, fact_id: uuid.UUID
) -> FactResult:
    """Soft-delete a fact of any source: it leaves "What we know" and stays in the table."""
    fact = await _fact(db, account_id, session_id, fact_id)
    fact.deleted_at = utcnow()
    version = await _bump(db, account_id, session_id)
    await db.flush()
    return FactResult(state_version=version, fact=fact_out(fact))


def _synthesis_prompt(item: QuestionState | ActionState, problem: str | None) -> list[Message]:
    lines = [f"Problem: {problem or '(not stated)'}"]
    if isinstance(item, QuestionState):
        lines += [f"Question: {item.text}", f"Why it was asked: {item.context or '-'}"]
        lines += [f"Status: {item.status.value}", f"Answer: {item.answer or '(none given)'}"]
    else:
        lines += [f"Check: {item.label}", f"Description: {item.description or '-'}"]
        if item.command:
            lines.append(f"Command: {item.command}")
        lines += [f"Status: {item.status.value}", f"Result: {item.result or '(none given)'}"]
    return [Message.system(SYNTHESIS_PROMPT), Message.user("\n".join(lines))]


async def promote_item(
    db: AsyncSession,
    llm: LLM,
    *,
    account_id: uuid.UUID,
    session_id: uuid.UUID,
    user_id: uuid.UUID,
    body: PromoteRequest,
) -> FactResult:
    """The engineer promotes a task-lane item to a fact (UC-018): a question becomes a `question` fact, an action
    a `diagnostic_check` fact, pointing at the item.

    With `proposed_text` that text is stored. Without it the model (purpose `quick`) states the item's finding;
    the read transaction is ended before the call, so no connection waits on the model. A null or empty answer
    is 422 `fact_synthesis_empty`; no model configured is 503 `llm_not_configured`.
    """
    lane = await _lane(db, account_id, session_id)
    item = lane.find(body.item_id) if lane is not None else None
    if item is None:
        raise TaskLaneItemNotFound(f"the task lane has no item {str(body.item_id)!r}")
    text, summary = body.proposed_text, body.summary
    if not text:
        session = await db.get(PilotSession, session_id)
        problem = session.problem_summary if session is not None else None
        client_id = session.client_id if session is not None else None
        await end_read(db)
        result = await llm.structured(
            Purpose.QUICK,
            _synthesis_prompt(item, problem),
            FactSynthesis,
            account_id=account_id,
            context=CallContext(client_id=client_id, subject_type=SUBJECT_TYPE, subject_id=session_id),
            max_tokens=SYNTHESIS_MAX_TOKENS,
        )
        text = (result.value.text or "").strip()
        if not text:
            raise FactSynthesisEmpty("the model found nothing this item established; write the fact yourself")
        summary = summary or result.value.summary
        # The lane may have moved on while the model thought: the item must still be there.
        lane = await _lane(db, account_id, session_id)
    source = FactSourceType.QUESTION if item_kind(item) == "question" else FactSourceType.DIAGNOSTIC_CHECK
    fact = _new_fact(
        account_id=account_id,
        session_id=session_id,
        lane=lane,
        source_type=source,
        text=text,
        summary=summary,
        source_ref=item.id,
        created_by_id=user_id,
    )
    version = await _bump(db, account_id, session_id)
    db.add(fact)
    await db.flush()
    return FactResult(state_version=version, fact=fact_out(fact))


def _merged(first: StoredLane | None, second: StoredLane | None) -> StoredLane | None:
    """Both lanes' items (ids are unique per item, so a kept item appears once)."""
    if first is None or second is None:
        return second if first is None else first
    questions = {q.id: q for q in (*first.questions, *second.questions)}
    actions = {a.id: a for a in (*first.actions, *second.actions)}
    return StoredLane(questions=tuple(questions.values()), actions=tuple(actions.values()))


async def record_promotions(
    db: AsyncSession,
    *,
    account_id: uuid.UUID,
    session_id: uuid.UUID,
    event: PromoteEvent | None,
    previous_lane: StoredLane | None = None,
) -> PromotionResult:
    """Chat turn: store the AI's [PROMOTE] facts (UC-011/UC-017); call after `apply_task_lane`.

    An item that fails the checks (a ref outside the lane, of the wrong kind, a `user_note`) is skipped with a
    warning and named in `skipped`; nothing here raises into the turn except a failure of the database itself.
    A fact equal to an active one (same source, ref and text) is skipped too, so a repeated block adds nothing.
    """
    if event is None:
        return PromotionResult(state_version=await state_version(db, account_id=account_id, session_id=session_id))
    # The seed resolved refs against this turn's lane only, so promoting the answer to the question the engineer
    # just answered (the usual case: the reply that promotes it asks nothing new) always failed. Refs resolve
    # against the lane the engineer answered and the lane this turn wrote.
    lane = _merged(previous_lane, await _lane(db, account_id, session_id))
    seen = {(f.source_type, f.source_ref, f.text) for f in await _active_facts(db, account_id, session_id)}
    stored: list[SessionFact] = []
    skipped: list[str] = []
    for promoted in event.facts:
        try:
            source = FactSourceType(promoted.source_type)
            if source is FactSourceType.USER_NOTE:
                raise FactSourceInvalid("user_note facts are the engineer's; the AI cannot promote one")
            fact = _new_fact(
                account_id=account_id,
                session_id=session_id,
                lane=lane,
                source_type=source,
                text=promoted.text,
                summary=promoted.summary,
                source_ref=promoted.source_ref,
                created_by_id=None,
            )
        except ValueError as e:
            logger.warning("session %s: promoted fact %r skipped: %s", session_id, promoted.text[:80], e)
            skipped.append(f"{promoted.text[:80]!r}: {e}")
            continue
        key = (fact.source_type, fact.source_ref, fact.text)
        if key in seen:
            skipped.append(f"{promoted.text[:80]!r}: already in what we know")
            continue
        seen.add(key)
        stored.append(fact)
    if not stored:
        version = await state_version(db, account_id=account_id, session_id=session_id)
        return PromotionResult(state_version=version, skipped=skipped)
    version = await _bump(db, account_id, session_id)
    db.add_all(stored)
    await db.flush()
    return PromotionResult(state_version=version, facts=[fact_out(f) for f in stored], skipped=skipped)


# --- suggested fixes (UC-019 … UC-021) --------------------------------------------------------------


def fix_out(fix: SessionSuggestedFix) -> SuggestedFixOut:
    proposal = AIOutcomeProposal.model_validate(fix.ai_outcome_proposal) if fix.ai_outcome_proposal else None
    return SuggestedFixOut(
        id=fix.id,
        session_id=fix.session_id,
        title=fix.title,
        description=fix.description,
        confidence_pct=fix.confidence_pct,
        script_template_id=fix.script_template_id,
        ai_drafted_script=fix.ai_drafted_script,
        ai_drafted_parameters=fix.ai_drafted_parameters,
        user_decision=UserDecision(fix.user_decision),
        decided_at=fix.decided_at,
        status=FixStatus(fix.status),
        applied_at=fix.applied_at,
        verified_at=fix.verified_at,
        partial_notes=fix.partial_notes,
        failure_reason=fix.failure_reason,
        pending_reason=fix.pending_reason,
        ai_outcome_proposal=proposal,
        superseded_at=fix.superseded_at,
        created_at=fix.created_at,
        updated_at=fix.updated_at,
        active=fix.superseded_at is None,
    )


async def _template_id(db: AsyncSession, account_id: uuid.UUID, slug: str | None) -> uuid.UUID | None:
    """UC-019 (b): the account's active script template with this slug; anything else is no template."""
    if not slug:
        return None
    template = await knowledge.get_template_by_slug(db, account_id, slug)
    if template is None or not template.is_active:
        logger.warning("suggested fix names script template %r, which the account has not (active)", slug)
        return None
    return template.id


async def persist_suggested_fix(
    db: AsyncSession, *, account_id: uuid.UUID, session_id: uuid.UUID, event: SuggestFixEvent
) -> FixResult:
    """Chat turn: the AI's [SUGGEST_FIX] becomes the session's one active fix (UC-019).

    In the caller's transaction: the session's version is bumped first (which also serialises two turns on the
    session row), every active fix is superseded, the new one inserted. A partial unique index backs the
    invariant: at most one fix per session is not superseded.
    """
    version = await _bump(db, account_id, session_id)
    template_id = await _template_id(db, account_id, event.script_template_slug)
    now = utcnow()
    await db.execute(
        update(SessionSuggestedFix)
        .where(
            SessionSuggestedFix.session_id == session_id,
            SessionSuggestedFix.account_id == account_id,
            SessionSuggestedFix.superseded_at.is_(None),
        )
        .values(superseded_at=now, updated_at=now)
    )
    fix = SessionSuggestedFix(
        account_id=account_id,
        session_id=session_id,
        title=event.title,
        description=event.description,
        confidence_pct=event.confidence_pct,
        script_template_id=template_id,
        ai_drafted_script=event.ai_drafted_script,
        ai_drafted_parameters=event.ai_drafted_parameters,
    )
    db.add(fix)
    await db.flush()
    return FixResult(state_version=version, fix=fix_out(fix))


async def _fix(
    db: AsyncSession, account_id: uuid.UUID, session_id: uuid.UUID, fix_id: uuid.UUID
) -> SessionSuggestedFix | None:
    return await db.scalar(
        select(SessionSuggestedFix).where(
            SessionSuggestedFix.id == fix_id,
            SessionSuggestedFix.session_id == session_id,
            SessionSuggestedFix.account_id == account_id,
        )
    )


async def _active_fix(db: AsyncSession, account_id: uuid.UUID, session_id: uuid.UUID) -> SessionSuggestedFix | None:
    return await db.scalar(
        select(SessionSuggestedFix).where(
            SessionSuggestedFix.session_id == session_id,
            SessionSuggestedFix.account_id == account_id,
            SessionSuggestedFix.superseded_at.is_(None),
        )
    )


async def record_ai_outcome_proposal(
    db: AsyncSession, *, account_id: uuid.UUID, session_id: uuid.UUID, event: FixOutcomeEvent
) -> FixResult | None:
    """Chat turn: keep the AI's [FIX_OUTCOME] on the fix as a proposal (UC-020); the status does not change.

    Silently dropped (None) when the fix is not this session's, or its outcome is already final (a proposal could
    only be rejected). A newer proposal replaces an open one.
    """
    fix = await _fix(db, account_id, session_id, event.fix_id)
    if fix is None or FixStatus(fix.status) not in NEEDS_OUTCOME:
        logger.info(
            "session %s: outcome proposal for fix %s dropped (not this session's, or final)", session_id, event.fix_id
        )
        return None
    proposal = AIOutcomeProposal(outcome=event.outcome, reason=event.reason, proposed_at=utcnow())
    fix.ai_outcome_proposal = proposal_dict(proposal)
    version = await _bump(db, account_id, session_id)
    await db.flush()
    return FixResult(state_version=version, fix=fix_out(fix))


async def list_suggested_fixes(db: AsyncSession, *, account_id: uuid.UUID, session_id: uuid.UUID) -> FixList:
    """The active fix and the superseded ones (newest first)."""
    fixes = (
        await db.scalars(
            select(SessionSuggestedFix)
            .where(SessionSuggestedFix.session_id == session_id, SessionSuggestedFix.account_id == account_id)
            .order_by(SessionSuggestedFix.created_at.desc(), SessionSuggestedFix.id)
        )
    ).all()
    active = next((f for f in fixes if f.superseded_at is None), None)
    return FixList(
        state_version=await state_version(db, account_id=account_id, session_id=session_id),
        active=fix_out(active) if active is not None else None,
        history=[fix_out(f) for f in fixes if f is not active],
    )


async def _known_fix(
    db: AsyncSession, account_id: uuid.UUID, session_id: uuid.UUID, fix_id: uuid.UUID
) -> SessionSuggestedFix:
    fix = await _fix(db, account_id, session_id, fix_id)
    if fix is None:
        raise SuggestedFixNotFound(f"suggested fix {str(fix_id)!r} not found in this session")
    return fix


def _apply_status(fix: SessionSuggestedFix, target: FixStatus, notes: OutcomeNotes) -> None:
    check_transition(FixStatus(fix.status), target)
    check_outcome_notes(target, notes)
    now = utcnow()
    fix.status = target.value
    if target in APPLIED and fix.applied_at is None:
        fix.applied_at = now
    if target in VERIFIED:
        fix.verified_at = now
    # Each note belongs to its status; an earlier pending reason stays as history when the result comes in.
    if target is FixStatus.APPLIED_PARTIAL:
        fix.partial_notes = notes.partial_notes
    elif target is FixStatus.APPLIED_FAILURE:
        fix.failure_reason = notes.failure_reason
    elif target is FixStatus.APPLIED_PENDING:
        fix.pending_reason = notes.pending_reason


def _resolve_proposal(
    fix: SessionSuggestedFix, proposal: AIOutcomeProposal, resolution: ProposalResolution, by: uuid.UUID | None
) -> None:
    fix.ai_outcome_proposal = proposal_dict(
        proposal.model_copy(update={"resolution": resolution, "resolved_at": utcnow(), "resolved_by_id": by})
    )


async def record_outcome(
    db: AsyncSession,
    *,
    account_id: uuid.UUID,
    session_id: uuid.UUID,
    fix_id: uuid.UUID,
    user_id: uuid.UUID,
    body: OutcomeUpdate,
) -> FixResult:
    """The engineer records what became of a fix, or confirms/rejects the AI's proposal (UC-020/UC-021).

    Transitions follow `fixes.TRANSITIONS` (409 `fix_transition_not_allowed`); notes per `check_outcome_notes`
    (422 `fix_outcome_incomplete`). A superseded fix may still get its outcome: it is the session's history.
    """
    fix = await _known_fix(db, account_id, session_id, fix_id)
    stored = AIOutcomeProposal.model_validate(fix.ai_outcome_proposal) if fix.ai_outcome_proposal else None
    proposal = stored if stored is not None and stored.resolution is ProposalResolution.OPEN else None
    if body.ai_proposal is not None and proposal is None:
        raise NoAIOutcomeProposal("the AI has proposed no outcome for this fix that is still open")
    target = body.status
    notes = OutcomeNotes(body.partial_notes, body.failure_reason, body.pending_reason)
    resolution: ProposalResolution | None = None
    if body.ai_proposal == "accept":
        assert proposal is not None
        proposed = OUTCOME_STATUS[proposal.outcome]
        if target is not None and target is not proposed:
            raise ProposalMismatch(f"the AI proposed {proposed.value!r}, not {target.value!r}: reject it instead")
        target = proposed
        notes = OutcomeNotes(
            partial_notes=notes.partial_notes or proposal.reason or None,
            failure_reason=notes.failure_reason or proposal.reason or None,
            pending_reason=notes.pending_reason,
        )
        resolution = ProposalResolution.ACCEPTED
    elif body.ai_proposal == "reject":
        resolution = ProposalResolution.REJECTED
    elif proposal is not None and target is not None:
        agrees = target is OUTCOME_STATUS[proposal.outcome]
        resolution = ProposalResolution.ACCEPTED if agrees else ProposalResolution.REJECTED
    if target is not None:
        _apply_status(fix, target, notes)
    if proposal is not None and resolution is not None:
        _resolve_proposal(fix, proposal, resolution, user_id)
    version = await _bump(db, account_id, session_id)
    await db.flush()
    return FixResult(state_version=version, fix=fix_out(fix))


async def record_decision(
    db: AsyncSession, *, account_id: uuid.UUID, session_id: uuid.UUID, fix_id: uuid.UUID, body: DecisionUpdate
) -> FixResult:
    """The engineer's path for the active fix (template, AI script, manual, or none again); 409 when it does not fit."""
    fix = await _known_fix(db, account_id, session_id, fix_id)
    if fix.superseded_at is not None:
        raise FixSuperseded("a newer suggestion replaced this fix; decide on the active one")
    check_decision(
        body.decision,
        status=FixStatus(fix.status),
        has_template=fix.script_template_id is not None,
        has_ai_script=bool(fix.ai_drafted_script),
    )
    fix.user_decision = body.decision.value
    fix.decided_at = None if body.decision is UserDecision.NONE else utcnow()
    version = await _bump(db, account_id, session_id)
    await db.flush()
    return FixResult(state_version=version, fix=fix_out(fix))


async def fix_needing_outcome(
    db: AsyncSession, *, account_id: uuid.UUID, session_id: uuid.UUID
) -> SuggestedFixOut | None:
    """For escalate (UC-021): the active fix when it is still proposed or pending, so the caller asks its outcome."""
    fix = await _active_fix(db, account_id, session_id)
    return fix_out(fix) if fix is not None and FixStatus(fix.status) in NEEDS_OUTCOME else None


async def mark_active_fix_successful_on_resolve(
    db: AsyncSession, *, account_id: uuid.UUID, session_id: uuid.UUID
) -> SuggestedFixOut | None:
    """For resolve (UC-021): a proposed or pending active fix becomes `applied_success`; returns it, else None.

    A fix whose outcome the engineer already recorded keeps it. An open AI proposal is closed: accepted when it
    said success, rejected otherwise.
    """
    fix = await _active_fix(db, account_id, session_id)
    if fix is None or FixStatus(fix.status) not in NEEDS_OUTCOME:
        return None
    _apply_status(fix, FixStatus.APPLIED_SUCCESS, OutcomeNotes())
    stored = AIOutcomeProposal.model_validate(fix.ai_outcome_proposal) if fix.ai_outcome_proposal else None
    if stored is not None and stored.resolution is ProposalResolution.OPEN:
        agrees = stored.outcome == "success"
        _resolve_proposal(fix, stored, ProposalResolution.ACCEPTED if agrees else ProposalResolution.REJECTED, None)
    await _bump(db, account_id, session_id)
    await db.flush()
    return fix_out(fix)


# --- one chat turn ----------------------------------------------------------------------------------


@dataclass(slots=True)
class TurnDiagnosis:
    """What `apply_turn` stored; `state_version` is the session's version after it."""

    state_version: int
    lane: TaskLaneState
    promotions: PromotionResult
    outcome: FixResult | None = None
    fix: FixResult | None = None
    notes: list[str] = field(default_factory=list)


async def apply_turn(
    db: AsyncSession, *, account_id: uuid.UUID, session_id: uuid.UUID, events: Sequence[ChatEvent]
) -> TurnDiagnosis:
    """Chat turn: everything a reply's events change here, in the order the rules need, in the caller's transaction.

    1. the lane from QUESTIONS/ACTIONS (UC-015/016; none of either clears it), 2. PROMOTE facts, whose refs
    need that lane (UC-016/017), 3. FIX_OUTCOME, before 4. SUGGEST_FIX supersedes the fix it is about: "the last
    fix failed, try this" keeps the proposal on the fix it names (UC-019/020). FORK events are not this domain's.
    """
    questions = next((e for e in events if isinstance(e, QuestionsEvent)), None)
    actions = next((e for e in events if isinstance(e, ActionsEvent)), None)
    promote = next((e for e in events if isinstance(e, PromoteEvent)), None)
    outcome_event = next((e for e in events if isinstance(e, FixOutcomeEvent)), None)
    suggestion = next((e for e in events if isinstance(e, SuggestFixEvent)), None)
    previous = await _lane(db, account_id, session_id)
    lane = await apply_task_lane(db, account_id=account_id, session_id=session_id, questions=questions, actions=actions)
    promotions = await record_promotions(
        db, account_id=account_id, session_id=session_id, event=promote, previous_lane=previous
    )
    result = TurnDiagnosis(state_version=promotions.state_version, lane=lane, promotions=promotions)
    result.notes.extend(promotions.skipped)
    if outcome_event is not None:
        result.outcome = await record_ai_outcome_proposal(
            db, account_id=account_id, session_id=session_id, event=outcome_event
        )
        if result.outcome is None:
            result.notes.append(f"fix outcome for {str(outcome_event.fix_id)!r} dropped")
    if suggestion is not None:
        result.fix = await persist_suggested_fix(db, account_id=account_id, session_id=session_id, event=suggestion)
    result.state_version = await state_version(db, account_id=account_id, session_id=session_id)
    return result


# --- what the next prompt says about the session ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class PromptState:
    """The session's lane, active facts and active fix, shaped for the chat system prompt."""

    lane: StoredLane | None
    facts: tuple[str, ...]
    active_fix: dict[str, Any] | None
    state_version: int


async def prompt_state(
    db: AsyncSession, session_id: uuid.UUID, *, account_id: uuid.UUID | None = None, known_version: int | None = None
) -> PromptState:
    """What the next chat prompt shows: the lane (with ids and status), fact texts, the active fix as JSON.

    Without `account_id` it is taken from the session row, found through the AsyncSession's account scope; a
    caller holding the session row passes its `state_version` as `known_version`, which saves reading it again.
    """
    if account_id is None:
        session = await db.get(PilotSession, session_id)
        if session is None:
            raise SessionNotFound(f"session {str(session_id)!r} not found")
        account_id = session.account_id
    lane = await _lane(db, account_id, session_id)
    facts = await _active_facts(db, account_id, session_id)
    fix = await _active_fix(db, account_id, session_id)
    if known_version is None:
        known_version = await state_version(db, account_id=account_id, session_id=session_id)
    return PromptState(
        lane=lane,
        facts=tuple(f.text for f in facts),
        active_fix=fix_out(fix).model_dump(mode="json") if fix is not None else None,
        state_version=known_version,
    )
