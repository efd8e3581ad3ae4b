"""Session documentation (FP-046), its markdown view and the PSA note text (FP-044)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from deskpilot.pilot.documentation import (
    NO_SUMMARY,
    SessionDocumentation,
    build_documentation,
    engineer_response,
    hours_display,
    psa_note_text,
    render_markdown,
)
from deskpilot.pilot.views import SessionView, StepView

START = datetime(2026, 4, 5, 9, 0, tzinfo=UTC)
NOW = START + timedelta(minutes=45)


def session(**changes: object) -> SessionView:
    values: dict[str, object] = {
        "id": uuid.UUID(int=1),
        "kind": "guided",
        "status": "active",
        "created_at": START,
        "problem_summary": "Outlook keeps asking for the password",
        "problem_domain": "m365",
        "intake": {"text": "User says Outlook prompts for credentials every few minutes."},
    }
    values.update(changes)
    return SessionView(**values)  # type: ignore[arg-type]


def question(order: int, **changes: object) -> StepView:
    values: dict[str, object] = {
        "order": order,
        "step_type": "question",
        "content": {
            "type": "question",
            "text": "Which Outlook client is affected?",
            "options": [
                {"label": "Classic Outlook for Windows", "value": "classic"},
                {"label": "New Outlook", "value": "new"},
            ],
        },
        "selected_option": "classic",
    }
    values.update(changes)
    return StepView(**values)  # type: ignore[arg-type]


def action(order: int, **changes: object) -> StepView:
    values: dict[str, object] = {
        "order": order,
        "step_type": "action",
        "content": {
            "type": "action",
            "text": "Clear the cached credentials in Credential Manager",
            "action_type": "instruction",
        },
        "action_result": "success",
    }
    values.update(changes)
    return StepView(**values)  # type: ignore[arg-type]


def suggestion(order: int, recommendations: list[str]) -> StepView:
    return StepView(
        order=order,
        step_type="action",
        content={
            "type": "resolution_suggestion",
            "text": "Re-create the Outlook profile",
            "resolution_summary": "Stale token in the profile",
            "follow_up_recommendations": recommendations,
        },
    )


# ---- FP-046: documentation ---------------------------------------------------------------------------------


def test_fp046_engineer_response_uses_option_label() -> None:
    doc = build_documentation(session(), [question(0)], NOW)
    assert doc.diagnostic_steps[0].engineer_response == "Classic Outlook for Windows"


def test_fp046_engineer_response_unknown_value_falls_back_to_the_value() -> None:
    assert engineer_response(question(0, selected_option="web")) == "web"


def test_fp046_engineer_response_skipped_wins() -> None:
    step = question(0, was_skipped=True, free_text_input="ignored")
    assert engineer_response(step) == "Skipped"


def test_fp046_engineer_response_free_text() -> None:
    step = question(0, selected_option=None, free_text_input="  Both clients, since Monday  ")
    assert engineer_response(step) == "Both clients, since Monday"


def test_fp046_engineer_response_keeps_typed_text_next_to_the_option() -> None:
    step = question(0, free_text_input="only on the RDS host")
    assert engineer_response(step) == "Classic Outlook for Windows — only on the RDS host"


def test_fp046_engineer_response_none_when_unanswered() -> None:
    assert engineer_response(question(0, selected_option=None)) is None


def test_fp046_outcome_succeeded_and_did_not_resolve_with_details() -> None:
    doc = build_documentation(
        session(),
        [action(0), action(1, action_result="failure", action_details="prompt came back after 5 minutes")],
        NOW,
    )
    assert [s.outcome for s in doc.diagnostic_steps] == [
        "Succeeded",
        "Did not resolve — prompt came back after 5 minutes",
    ]
    assert build_documentation(session(), [action(0, action_result=None)], NOW).diagnostic_steps[0].outcome is None


def test_fp046_steps_numbered_order_plus_one_in_session_order() -> None:
    doc = build_documentation(session(), [action(2), question(0), question(1)], NOW)
    assert [s.step_number for s in doc.diagnostic_steps] == [1, 2, 3]
    assert [s.step_type for s in doc.diagnostic_steps] == ["question", "question", "action"]
    assert doc.diagnostic_steps[2].description == "Clear the cached credentials in Credential Manager"


def test_fp046_follow_up_recommendations_collected_from_resolution_suggestions() -> None:
    other = action(0, content={"type": "action", "text": "x", "follow_up_recommendations": ["not from actions"]})
    steps = [other, suggestion(1, ["Enable modern auth", "Check MFA"]), suggestion(2, ["Check MFA", "  ", "Audit"])]
    doc = build_documentation(session(), steps, NOW)
    assert doc.follow_up_recommendations == ["Enable modern auth", "Check MFA", "Audit"]
    assert doc.diagnostic_steps[1].step_type == "resolution_suggestion"


def test_fp046_problem_summary_default_and_domain() -> None:
    doc = build_documentation(session(problem_summary=None, problem_domain=None), [], NOW)
    assert doc.problem_summary == NO_SUMMARY == "No summary available"
    assert doc.problem_domain is None


def test_fp046_intake_summary_is_text_cut_to_500() -> None:
    doc = build_documentation(session(intake={"text": "x" * 800, "log_content": "ignored"}), [], NOW)
    assert doc.intake_summary == "x" * 500


def test_fp046_intake_summary_without_text_never_shows_a_dict_repr() -> None:
    intake = {"log_content": "Event 4625", "ticket_data": {"summary": "Password prompts", "company": {"name": "Acme"}}}
    doc = build_documentation(session(intake=intake), [], NOW)
    assert doc.intake_summary == "Ticket: Password prompts\n\nLog output:\nEvent 4625"
    assert build_documentation(session(intake={"client_name": "Acme"}), [], NOW).intake_summary == ""


def test_fp046_duration_in_decimal_hours_only_when_resolved() -> None:
    resolved = session(status="resolved", resolved_at=START + timedelta(minutes=15))
    doc = build_documentation(resolved, [], NOW)
    assert doc.duration_display == "0.25 hrs"
    assert doc.time_spent_display == "0.25 hrs"
    open_doc = build_documentation(session(), [], NOW)
    assert open_doc.duration_display is None
    assert open_doc.time_spent_display == "0.75 hrs"


def test_fp046_decimal_hours_format() -> None:
    assert hours_display(timedelta(hours=1)) == "1.00 hrs"
    assert hours_display(timedelta(minutes=90)) == "1.50 hrs"
    assert hours_display(timedelta(minutes=-5)) == "0.00 hrs"


def test_fp046_naive_datetimes_read_as_utc() -> None:
    naive = session(
        created_at=START.replace(tzinfo=None), resolved_at=(START + timedelta(minutes=30)).replace(tzinfo=None)
    )
    assert build_documentation(naive, [], NOW).duration_display == "0.50 hrs"


def test_fp046_status_updates_and_briefings_are_not_diagnostic_steps() -> None:
    steps = [
        question(0),
        StepView(order=1, step_type="status_update", content={"audience": "client_update", "generated_content": "Hi"}),
        StepView(order=2, step_type="action", content={"type": "briefing", "text": "## Escalation Briefing\n..."}),
        action(3),
    ]
    doc = build_documentation(session(), steps, NOW)
    assert [s.step_number for s in doc.diagnostic_steps] == [1, 4]
    assert doc.total_steps == 2


def test_fp046_generated_at_resolution_and_escalation_carried() -> None:
    doc = build_documentation(session(resolution_summary="Fixed", escalation_reason="Needs tenant admin"), [], NOW)
    assert doc.generated_at == NOW
    assert doc.resolution_summary == "Fixed"
    assert doc.escalation_reason == "Needs tenant admin"


def test_fp046_documentation_is_json_ready() -> None:
    doc = build_documentation(session(), [question(0), action(1)], NOW)
    assert SessionDocumentation.model_validate_json(doc.model_dump_json()) == doc


def test_fp046_markdown_view() -> None:
    steps = [question(0), action(1, action_result="failure", action_details="no change"), suggestion(2, ["Enable MFA"])]
    resolved = session(status="resolved", resolved_at=START + timedelta(minutes=30), resolution_summary="New profile")
    text = render_markdown(build_documentation(resolved, steps, NOW))
    assert text.startswith("# Outlook keeps asking for the password\n")
    assert "- **Duration:** 0.50 hrs" in text
    assert "### Step 1: Question" in text
    assert "- **Engineer response:** Classic Outlook for Windows" in text
    assert "- **Outcome:** Did not resolve — no change" in text
    assert "### Step 3: Suggested resolution" in text
    assert "## Resolution\n\nNew profile" in text
    assert "## Follow-up recommendations\n\n- Enable MFA" in text
    assert "## Escalation reason" not in text


def test_fp046_markdown_view_of_an_open_session_without_steps() -> None:
    text = render_markdown(build_documentation(session(escalation_reason="Needs a tenant admin"), [], NOW))
    assert "- **Time spent so far:** 0.75 hrs" in text
    assert "No steps recorded." in text
    assert "## Escalation reason\n\nNeeds a tenant admin" in text


# ---- FP-044: PSA note text ---------------------------------------------------------------------------------


def resolved_doc() -> SessionDocumentation:
    steps = [
        question(0),
        action(1, action_result="failure", action_details="prompt\n came back"),
        question(2, was_skipped=True),
        suggestion(3, ["Enable modern auth", "Check **MFA** registration"]),
    ]
    resolved = session(
        status="resolved",
        resolved_at=START + timedelta(minutes=15),
        resolution_summary="Re-created the Outlook profile;\nprompts stopped.",
        problem_summary="Outlook keeps\nasking for the password",
    )
    return build_documentation(resolved, steps, NOW)


def test_fp044_psa_note_has_a_single_line_header() -> None:
    note = psa_note_text(resolved_doc(), context="resolution")
    header, blank, *_ = note.split("\n")
    assert header == "RESOLVED | Outlook keeps asking for the password | Domain: m365 | Time: 0.25 hrs | Steps: 4"
    assert blank == ""


def test_fp044_psa_note_steps_with_engineer_responses_inline() -> None:
    note = psa_note_text(resolved_doc(), context="resolution")
    assert "1. Which Outlook client is affected? — Engineer: Classic Outlook for Windows" in note
    assert "2. Clear the cached credentials in Credential Manager [Did not resolve — prompt came back]" in note
    assert "3. Which Outlook client is affected? — Engineer: Skipped" in note
    assert "4. Suggested fix: Re-create the Outlook profile" in note


def test_fp044_psa_note_time_once_in_decimal_hours_and_no_confidence() -> None:
    note = psa_note_text(resolved_doc(), context="resolution")
    assert note.count("hrs") == 1
    assert "0.25 hrs" in note
    assert "confidence" not in note.lower()
    assert re.search(r"\b\d+\s*(m|min|minutes)\b", note) is None


def test_fp044_psa_note_follow_up_recommendations_and_resolution() -> None:
    note = psa_note_text(resolved_doc(), context="resolution")
    assert "Resolution: Re-created the Outlook profile; prompts stopped." in note
    assert note.endswith("Follow-up recommendations:\n- Enable modern auth\n- Check MFA registration")


def test_fp044_psa_note_is_plain_text() -> None:
    note = psa_note_text(resolved_doc(), context="resolution")
    assert "**" not in note
    assert not any(line.startswith("#") for line in note.splitlines())


def test_fp044_psa_escalation_note() -> None:
    escalated = session(status="requesting_escalation", escalation_reason="Needs a tenant admin", problem_domain=None)
    note = psa_note_text(build_documentation(escalated, [question(0)], NOW), context="escalation")
    assert note.startswith("ESCALATED | Outlook keeps asking for the password | Time: 0.75 hrs | Steps: 1\n")
    assert "Escalation reason: Needs a tenant admin" in note
    assert "Resolution:" not in note
    assert "Follow-up recommendations" not in note


@pytest.mark.parametrize(
    ("context", "line"), [("resolution", "Resolution: Not recorded"), ("escalation", "Escalation reason: Not given")]
)
def test_fp044_psa_note_without_steps_or_summary(context: str, line: str) -> None:
    note = psa_note_text(build_documentation(session(intake={}), [], NOW), context=context)  # type: ignore[arg-type]
    assert "Steps taken: none recorded" in note
    assert line in note
    assert "Reported:" not in note


def test_fp046_malformed_step_content_is_tolerated() -> None:
    options = ["not a mapping", {"label": None, "value": None}, {"label": "Only a label"}, {"value": 3}]
    step = question(0, content={"type": "question", "text": 5, "options": options}, selected_option="Only a label")
    assert engineer_response(step) == "Only a label"
    assert step.option_label("3") == "3"
    assert step.text == ""
    odd = StepView(order=1, step_type="action", content={"options": "x", "follow_up_recommendations": "y"})
    assert odd.options == ()
    assert odd.follow_up_recommendations == ()
    assert odd.content_type == "action"
