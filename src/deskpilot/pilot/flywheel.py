"""Knowledge flywheel (FP-035): draft a new or improved runbook from a resolved session, for a lead to approve."""

from __future__ import annotations

import logging
import uuid
from typing import Final, Literal, TypeAlias

from pydantic import BaseModel, Field
from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from deskpilot.errors import NotFound
from deskpilot.knowledge import service as knowledge
from deskpilot.knowledge.errors import FlowInvalid, FlowSlugTaken
from deskpilot.knowledge.models import FlowSource, FlowStatus
from deskpilot.knowledge.schemas import FlowDefinition, parse_flow_document, slugify
from deskpilot.llm import LLM, CallContext, Message, Purpose
from deskpilot.pilot import escalation, flow_mode
from deskpilot.pilot.models import PilotSession, SessionStep
from deskpilot.pilot.schemas import ProblemDomain

logger = logging.getLogger(__name__)

AnalysisOutcome: TypeAlias = Literal["drafted", "skipped", "failed", "already_done"]
DRAFT_MAX_TOKENS: Final = 4096

DRAFTER_PROMPT: Final = """\
You turn a resolved IT troubleshooting session into a reusable runbook for the service desk, so the next \
engineer with the same problem is guided straight to the fix.

A runbook is a decision tree: {"start": "<node id>", "nodes": [...]}. Node kinds:
- question: {"id", "type": "question", "text", "why", "options": [{"value", "label", "next"}]}
- action: {"id", "type": "action", "text", "why", "expected_outcome", "on_success": "<node id>", \
"on_failure": "<node id>"}
- resolution: {"id", "type": "resolution", "text", "outcome": "resolved" or "escalate", "follow_up": [...]}
Node ids are short words (letters, digits, - and _). Every node must be reachable from start, every next / \
on_success / on_failure must name a node, and the tree needs at least one resolution.

Keep what worked in the session, turn dead ends into early checks that rule causes out, and be specific \
(exact consoles, menus, commands). Do not invent steps the session gives no reason for. Give the runbook a \
name that describes the symptom, a one-paragraph description, tags and the symptoms an engineer would report."""


class FlowDraft(BaseModel):
    """A runbook drafted from a resolved session."""

    name: str = Field(min_length=3, max_length=200)
    description: str = Field(default="", max_length=10_000)
    problem_domain: ProblemDomain = "other"
    tags: list[str] = Field(default_factory=list, max_length=30)
    symptoms: list[str] = Field(default_factory=list, max_length=30)
    definition: FlowDefinition


def _session_brief(session: PilotSession, steps: list[SessionStep]) -> str:
    lines = [
        f"Problem: {session.problem_summary or 'unknown'}",
        f"Domain: {session.problem_domain or 'other'}",
        f"Reported: {str(session.intake.get('text', ''))[:2000]}",
        "",
        "Steps taken:",
    ]
    lines += [f"- {line}" for line in escalation.tried_lines(escalation.steps_tried(steps))] or ["- none"]
    lines += ["", f"Resolution: {session.resolution_summary or 'not recorded'}"]
    if session.resolution_action:
        lines.append(f"What fixed it: {session.resolution_action}")
    return "\n".join(lines)


async def _set_status(db: AsyncSession, session_id: uuid.UUID, status: str) -> bool:
    """Move the analysis from pending to `status`; False when another run got there first (at-least-once jobs)."""
    result = await db.execute(
        update(PilotSession)
        .where(PilotSession.id == session_id, PilotSession.analysis_status == "pending")
        .values(analysis_status=status)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount == 1


async def analyse_session(db: AsyncSession, llm: LLM, session_id: uuid.UUID) -> AnalysisOutcome:
    """Draft a runbook from a resolved session and store it as a draft flow (source flywheel). Commits.

    Idempotent: only a session whose analysis is `pending` is analysed, and the status moves on in the same
    transaction that stores the draft. Without an LLM the analysis is `skipped`; a draft that is not a valid
    runbook is `failed`. Provider failures propagate, so the job is retried.
    """
    session = await db.get(PilotSession, session_id)
    if session is None:
        raise NotFound(f"session {str(session_id)!r} not found")
    if session.analysis_status != "pending":
        return "already_done"
    if not llm.configured:
        await _set_status(db, session.id, "skipped")
        await db.commit()
        return "skipped"
    steps = list((await db.scalars(
        select(SessionStep).where(SessionStep.session_id == session.id).order_by(SessionStep.step_order)
    )).all())
    messages = [Message.system(DRAFTER_PROMPT)]
    brief = _session_brief(session, steps)
    if session.matched_flow_id is not None and session.flow_definition is None:
        try:
            current = await knowledge.get_flow_definition(db, session.matched_flow_id)
            brief += (f'\n\nThe session matched the runbook "{session.matched_flow_name}". Improve it with what '
                      f"this session learned:\n{flow_mode.outline(current, max_nodes=60)}")
        except NotFound:
            pass
    messages.append(Message.user(brief))
    context = CallContext(client_id=session.client_id, subject_type="pilot_session", subject_id=session.id)
    result = await llm.structured(Purpose.DRAFTER, messages, FlowDraft, account_id=session.account_id,
                                  context=context, max_tokens=DRAFT_MAX_TOKENS)
    draft = result.value
    base = slugify(draft.name)[:80].strip("-") or "flow"
    try:
        document = parse_flow_document({
            "slug": f"{base}-{session.id.hex[:8]}", "name": draft.name, "description": draft.description,
            "problem_domain": draft.problem_domain, "tags": draft.tags, "symptoms": draft.symptoms,
            "definition": draft.definition.model_dump(mode="json", exclude_defaults=True),
        })
        if not await _set_status(db, session.id, "done"):
            await db.rollback()
            return "already_done"
        await knowledge.create_flow(
            db, account_id=session.account_id, document=document, team_id=session.team_id,
            source=FlowSource.FLYWHEEL, status=FlowStatus.DRAFT,
        )
    except (FlowInvalid, FlowSlugTaken) as e:
        await db.rollback()
        logger.warning("flywheel draft for session %s rejected: %s", session_id, e.detail)
        await _set_status(db, session_id, "failed")
        await db.commit()
        return "failed"
    await db.commit()
    logger.info("flywheel drafted a flow from session %s", session_id)
    return "drafted"
