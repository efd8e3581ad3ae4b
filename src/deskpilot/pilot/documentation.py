"""Session documentation: built from a session's steps, rendered as markdown for the console and as PSA note text."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeAlias, assert_never

from pydantic import BaseModel, ConfigDict

from deskpilot.pilot.views import SessionView, StepView

NoteContext: TypeAlias = Literal["resolution", "escalation"]

INTAKE_SUMMARY_CHARS = 500
NO_SUMMARY = "No summary available"
# Generated artefacts, not diagnostic work: status updates are communications, and a briefing restates the
# steps already listed (it would duplicate them in the documentation).
NON_DIAGNOSTIC_TYPES = frozenset({"status_update", "briefing"})

_WHITESPACE = re.compile(r"\s+")


class DocumentationStep(BaseModel):
    """One step of the documentation (FP-046)."""

    model_config = ConfigDict(frozen=True)

    step_number: int
    step_type: str
    description: str
    engineer_response: str | None
    outcome: str | None


class SessionDocumentation(BaseModel):
    """A session's documentation (FP-046).

    `duration_display` is set only once the session is closed (resolved or abandoned); `time_spent_display`
    is always set (up to `generated_at` for open sessions) and is what PSA notes show. Both are decimal hours.
    """

    model_config = ConfigDict(frozen=True)

    problem_summary: str
    problem_domain: str | None
    intake_summary: str
    diagnostic_steps: list[DocumentationStep]
    resolution_summary: str | None
    escalation_reason: str | None
    follow_up_recommendations: list[str]
    total_steps: int
    duration_display: str | None
    time_spent_display: str
    generated_at: datetime


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; the application stores UTC, so naive means UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def hours_display(elapsed: timedelta) -> str:
    """Elapsed time in decimal hours with two decimals, e.g. "0.25 hrs"; negative spans (clock skew) read 0."""
    hours = max(elapsed.total_seconds(), 0.0) / 3600
    return f"{hours:.2f} hrs"


def elapsed(session: SessionView, now: datetime) -> timedelta:
    """Time worked on the session: up to `resolved_at` when closed, else up to `now`."""
    end = session.resolved_at if session.resolved_at is not None else now
    return _aware(end) - _aware(session.created_at)


def engineer_response(step: StepView) -> str | None:
    """What the engineer answered (FP-046): "Skipped", the selected option's label, free text, or None.

    When the engineer both picked an option and typed text, both are kept ("Label — text"), so notes do not
    lose what was typed.
    """
    if step.was_skipped:
        return "Skipped"
    typed = (step.free_text_input or "").strip()
    if step.selected_option:
        label = step.option_label(step.selected_option)
        return f"{label} — {typed}" if typed else label
    return typed or None


def outcome_word(step: StepView) -> str | None:
    """The outcome word of a reported action result: "Succeeded" / "Did not resolve"; None when not reported."""
    match step.action_result:
        case None:
            return None
        case "success":
            return "Succeeded"
        case "failure":
            return "Did not resolve"
        case unreachable:
            assert_never(unreachable)


def action_outcome(step: StepView) -> str | None:
    """The outcome line (FP-046): "Succeeded" / "Did not resolve", plus " — details" when given."""
    word = outcome_word(step)
    if word is None:
        return None
    details = (step.action_details or "").strip()
    return f"{word} — {details}" if details else word


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def intake_summary(intake: Mapping[str, object]) -> str:
    """The intake's text, at most 500 characters.

    Without text, the ticket summary and log output stand in; the intake's raw dict is never shown, since
    its Python repr means nothing to a reader.
    """
    text = _text(intake.get("text"))
    if not text:
        parts: list[str] = []
        ticket = intake.get("ticket_data")
        if isinstance(ticket, Mapping) and (summary := _text(ticket.get("summary"))):
            parts.append(f"Ticket: {summary}")
        if log := _text(intake.get("log_content")):
            parts.append(f"Log output:\n{log}")
        text = "\n\n".join(parts)
    return text[:INTAKE_SUMMARY_CHARS]


def diagnostic_steps(steps: Iterable[StepView]) -> list[StepView]:
    """The steps that documentation covers, in session order: all but status updates and briefings."""
    return sorted((s for s in steps if s.content_type not in NON_DIAGNOSTIC_TYPES), key=lambda s: s.order)


def build_documentation(session: SessionView, steps: Sequence[StepView], now: datetime) -> SessionDocumentation:
    """Build a session's documentation (FP-046).

    Args:
        session: The session.
        steps: All its steps, in any order; status updates and briefings are left out.
        now: The generation time (`generated_at`, and the end of `time_spent_display` for open sessions).

    Returns:
        The documentation. `step_number` is `order + 1`; `step_type` is the content type (so a resolution
        suggestion reads as such, not as the "action" it is stored as); follow-up recommendations come from
        resolution suggestions, without repeats; `total_steps` counts the documented steps. Durations are
        decimal hours ("0.25 hrs"), the unit used by every note deskpilot writes.
    """
    documented: list[DocumentationStep] = []
    recommendations: list[str] = []
    for step in diagnostic_steps(steps):
        documented.append(
            DocumentationStep(
                step_number=step.order + 1,
                step_type=step.content_type,
                description=step.text,
                engineer_response=engineer_response(step),
                outcome=action_outcome(step),
            )
        )
        if step.content_type == "resolution_suggestion":
            recommendations.extend(r for r in step.follow_up_recommendations if r not in recommendations)
    spent = elapsed(session, now)
    return SessionDocumentation(
        problem_summary=(session.problem_summary or "").strip() or NO_SUMMARY,
        problem_domain=session.problem_domain,
        intake_summary=intake_summary(session.intake),
        diagnostic_steps=documented,
        resolution_summary=session.resolution_summary,
        escalation_reason=session.escalation_reason,
        follow_up_recommendations=recommendations,
        total_steps=len(documented),
        duration_display=hours_display(spent) if session.resolved_at is not None else None,
        time_spent_display=hours_display(spent),
        generated_at=now,
    )


_STEP_TITLES: Mapping[str, str] = {
    "question": "Question",
    "action": "Action",
    "resolution_suggestion": "Suggested resolution",
    "fork": "Fork",
}


def _step_title(step_type: str) -> str:
    return _STEP_TITLES.get(step_type, step_type.replace("_", " ").capitalize())


def render_markdown(doc: SessionDocumentation) -> str:
    """The documentation as markdown, for the console's documentation view."""
    lines = [f"# {doc.problem_summary}", ""]
    if doc.problem_domain:
        lines.append(f"- **Domain:** {doc.problem_domain}")
    if doc.duration_display is not None:
        lines.append(f"- **Duration:** {doc.duration_display}")
    else:
        lines.append(f"- **Time spent so far:** {doc.time_spent_display}")
    lines.append(f"- **Steps:** {doc.total_steps}")
    lines.append(f"- **Generated:** {doc.generated_at.strftime('%Y-%m-%d %H:%M %Z').strip()}")
    if doc.intake_summary:
        lines += ["", "## Reported issue", "", doc.intake_summary]
    lines += ["", "## Diagnostic steps"]
    if not doc.diagnostic_steps:
        lines += ["", "No steps recorded."]
    for step in doc.diagnostic_steps:
        lines += ["", f"### Step {step.step_number}: {_step_title(step.step_type)}", ""]
        lines.append(step.description or "(no description)")
        details = []
        if step.engineer_response is not None:
            details.append(f"- **Engineer response:** {step.engineer_response}")
        if step.outcome is not None:
            details.append(f"- **Outcome:** {step.outcome}")
        if details:
            lines += ["", *details]
    if doc.resolution_summary:
        lines += ["", "## Resolution", "", doc.resolution_summary]
    if doc.escalation_reason:
        lines += ["", "## Escalation reason", "", doc.escalation_reason]
    if doc.follow_up_recommendations:
        lines += ["", "## Follow-up recommendations", ""]
        lines += [f"- {item}" for item in doc.follow_up_recommendations]
    return "\n".join(lines) + "\n"


def _one_line(text: str) -> str:
    # PSA notes are raw text: markdown emphasis would show as literal asterisks.
    return _WHITESPACE.sub(" ", text.replace("**", "")).strip()


def psa_note_text(doc: SessionDocumentation, *, context: NoteContext) -> str:
    """The note posted to the PSA ticket on resolution or escalation (FP-044), as plain text.

    One header line (outcome, problem, domain, time in decimal hours, step count), the reported issue, the
    steps with the engineer's responses and outcomes inline (one line each), the resolution or escalation
    reason, and follow-up recommendations. Time appears once, in the header; no AI confidence is shown.
    """
    match context:
        case "resolution":
            label = "RESOLVED"
            closing = f"Resolution: {_one_line(doc.resolution_summary or '') or 'Not recorded'}"
        case "escalation":
            label = "ESCALATED"
            closing = f"Escalation reason: {_one_line(doc.escalation_reason or '') or 'Not given'}"
        case unreachable:
            assert_never(unreachable)
    header = [label, _one_line(doc.problem_summary)]
    if doc.problem_domain:
        header.append(f"Domain: {doc.problem_domain}")
    header += [f"Time: {doc.time_spent_display}", f"Steps: {doc.total_steps}"]
    lines = [" | ".join(header), ""]
    if doc.intake_summary:
        lines += [f"Reported: {doc.intake_summary.strip()}", ""]
    if doc.diagnostic_steps:
        lines.append("Steps taken:")
        for number, step in enumerate(doc.diagnostic_steps, start=1):
            prefix = "Suggested fix: " if step.step_type == "resolution_suggestion" else ""
            entry = f"{number}. {prefix}{_one_line(step.description) or '(no description)'}"
            if step.engineer_response is not None:
                entry += f" — Engineer: {_one_line(step.engineer_response)}"
            if step.outcome is not None:
                entry += f" [{_one_line(step.outcome)}]"
            lines.append(entry)
    else:
        lines.append("Steps taken: none recorded")
    lines += ["", closing]
    if doc.follow_up_recommendations:
        lines += ["", "Follow-up recommendations:"]
        lines += [f"- {_one_line(item)}" for item in doc.follow_up_recommendations]
    return "\n".join(lines)
