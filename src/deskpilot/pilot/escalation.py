"""Escalation package (FP-039), LLM insights for the next engineer, and the pickup briefing (FP-041)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from deskpilot.errors import DeskpilotError
from deskpilot.events import notifications
from deskpilot.events.schemas import NotificationOut
from deskpilot.identity import service as identity
from deskpilot.llm import LLM, CallContext, Message, Purpose
from deskpilot.pilot import prompts
from deskpilot.pilot.access import Caller
from deskpilot.pilot.models import PilotSession, SessionStep
from deskpilot.pilot.schemas import (
    EscalateRequest,
    EscalationInsights,
    EscalationPackage,
    StepTried,
    content_options,
)
from deskpilot.storage import utcnow

logger = logging.getLogger(__name__)

INSIGHTS_MAX_TOKENS: Final = 1024
BRIEFING_CONTEXT_MESSAGE: Final = "Escalation briefing — here's what was tried before you."
# Generated steps that are not diagnostic work: a second escalation must not nest the first briefing.
NOT_TRIED_TYPES: Final = frozenset({"briefing", "status_update"})


def _response_text(step: SessionStep) -> str | None:
    if step.was_skipped:
        return "Skipped"
    parts: list[str] = []
    if step.selected_option:
        options = content_options(step.content)
        parts.append(next((str(o.get("label")) for o in options if o.get("value") == step.selected_option),
                          step.selected_option))
    if step.free_text_input and step.free_text_input.strip():
        parts.append(step.free_text_input.strip())
    return " — ".join(parts) or None


def action_result(value: str | None) -> Literal["success", "failure"] | None:
    match value:
        case "success" | "failure":
            return value
        case _:
            return None


def steps_tried(steps: Sequence[SessionStep]) -> list[StepTried]:
    """What was tried (FP-039): each diagnostic step with the engineer's answer (option labels, not values)."""
    tried: list[StepTried] = []
    for step in sorted(steps, key=lambda s: s.step_order):
        kind = step.content.get("type", step.step_type)
        if kind in NOT_TRIED_TYPES:
            continue
        tried.append(StepTried(
            step_type=str(kind),
            description=str(step.content.get("text", "")),
            response=_response_text(step),
            action_result=action_result(step.action_result),
            action_details=step.action_details,
        ))
    return tried


def tried_lines(tried: Sequence[StepTried]) -> list[str]:
    lines: list[str] = []
    for item in tried:
        line = f"{item.description} → {item.response or 'no response'}"
        if item.action_result is not None:
            line += " (worked)" if item.action_result == "success" else " (did not work)"
        if item.action_details:
            line += f": {item.action_details}"
        lines.append(line)
    return lines


@dataclass(frozen=True, slots=True)
class Insights:
    value: EscalationInsights | None
    input_tokens: int = 0
    output_tokens: int = 0


async def gather_insights(
    llm: LLM,
    *,
    account_id: uuid.UUID,
    context: CallContext,
    problem_summary: str | None,
    problem_domain: str | None,
    tried: Sequence[StepTried],
    reason: str,
) -> Insights:
    """Remaining hypotheses, next steps and ruled-out causes from the fast model; any failure gives none (FP-039)."""
    messages = [
        Message.system(prompts.INSIGHTS_PROMPT),
        Message.user(prompts.insights_request(problem_summary, problem_domain, tried_lines(tried), reason)),
    ]
    try:
        result = await llm.structured(
            Purpose.QUICK, messages, EscalationInsights, account_id=account_id, context=context,
            max_tokens=INSIGHTS_MAX_TOKENS,
        )
    except DeskpilotError as e:
        # The escalation matters more than its extras: go on without insights.
        logger.warning("escalation insights unavailable for session %s: %s", context.subject_id, e.code)
        return Insights(None)
    return Insights(result.value, result.usage.input_tokens, result.usage.output_tokens)


def build_package(
    *,
    original_user_id: uuid.UUID,
    escalated_by_name: str,
    problem_summary: str | None,
    problem_domain: str | None,
    intake: dict[str, object],
    confidence: float,
    tried: list[StepTried],
    reason: str,
    insights: EscalationInsights | None,
) -> EscalationPackage:
    package = EscalationPackage(
        original_user_id=original_user_id, escalated_by_name=escalated_by_name, problem_summary=problem_summary,
        problem_domain=problem_domain,
        intake=dict(intake), confidence_at_escalation=confidence, steps_tried=tried, escalation_reason=reason,
    )
    if insights is not None:
        package.remaining_hypotheses = list(insights.remaining_hypotheses)
        package.suggested_next_steps = list(insights.suggested_next_steps)
        package.steps_ruled_out = list(insights.steps_ruled_out)
        package.insights_available = True
    return package


def briefing_markdown(package: EscalationPackage) -> str:
    """The briefing shown to the engineer who picks the session up (FP-041)."""
    lines = [
        "## Escalation Briefing",
        f"**Escalated by:** {package.escalated_by_name or 'the previous engineer'}",
        f"**Reason:** {package.escalation_reason or 'Not specified'}",
        "",
        f"**Problem:** {package.problem_summary or 'Unknown'}",
    ]
    if package.steps_tried:
        lines += ["", "**Steps already taken:**"]
        for number, item in enumerate(package.steps_tried, start=1):
            lines.append(f"{number}. {item.description}")
            answer = item.response or ""
            if item.action_result is not None:
                outcome = "worked" if item.action_result == "success" else "did not work"
                answer = f"{answer} ({outcome})" if answer else outcome.capitalize()
            if item.action_details:
                answer = f"{answer}: {item.action_details}" if answer else item.action_details
            if answer:
                lines.append(f"   → {answer}")
    if package.remaining_hypotheses:
        lines += ["", "**Remaining hypotheses:**", *(f"- {h}" for h in package.remaining_hypotheses)]
    if package.suggested_next_steps:
        lines += ["", "**Suggested next steps:**", *(f"- {s}" for s in package.suggested_next_steps)]
    if package.steps_ruled_out:
        lines += ["", "**Ruled out:**", *(f"- {s}" for s in package.steps_ruled_out)]
    return "\n".join(lines)


def briefing_content(markdown: str) -> dict[str, object]:
    """Stored content of the briefing step: an action-typed step the engineer reads, never answers (FP-041)."""
    return {"type": "briefing", "text": markdown, "allow_free_text": False, "allow_skip": False}


async def hand_over(
    db: AsyncSession,
    session: PilotSession,
    caller: Caller,
    request: EscalateRequest,
    new_status: str,
    *,
    title: str,
    link: str,
) -> tuple[list[uuid.UUID], list[NotificationOut]]:
    """Mark the session escalated (FP-038) and notify the target, or every active member of its team but the
    caller, in the caller's transaction; the recipients and the notifications to publish after the commit."""
    session.status = new_status
    session.escalation_reason = request.reason
    session.escalated_to_id = request.target_user_id
    session.escalated_at = utcnow()
    if request.target_user_id is not None:
        recipients = [request.target_user_id]
    elif session.team_id is not None:
        recipients = await identity.active_team_member_ids(
            db, account_id=session.account_id, team_id=session.team_id, exclude=[caller.user_id]
        )
    else:
        recipients = []
    sent = [
        notifications.add_notification(
            db, account_id=session.account_id, user_id=uid, kind="session.escalated", title=title,
            body=f"{caller.name}: {request.reason}", link=link,
        )
        for uid in recipients
    ]
    return recipients, sent

