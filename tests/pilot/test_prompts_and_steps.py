"""Prompt contents and the step contract, without a database or a model."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from deskpilot.pilot import prompts
from deskpilot.pilot.schemas import (
    ActionStep,
    ForkStep,
    IntakeClassification,
    QuestionStep,
    ResolutionSuggestionStep,
    StepOption,
    StepReply,
    step_content,
    step_type_of,
)

PROMPT = prompts.build_system_prompt()


# --- FP-005 / FP-006 / FP-007 ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "phrases"),
    [
        ("max_options", ["5 options at most"]),
        ("explain_why", ["context_message", "WHY"]),
        ("confidence", ["between 0.0 and 1.0"]),
        ("resolve_when_sure", ["more than 90% confidence", "resolution_suggestion"]),
        ("ask_script_or_gui", ["script or in a GUI", "first ask the engineer", "Never assume they want a script"]),
        ("script_after_confirmation", ["script_generation action only after the engineer has confirmed"]),
        ("script_builder", ["open_script_builder", "script_prompt", "script_language", "powershell, bash or python"]),
        ("no_reboot_first", ["Never propose a restart or reboot as a first step"]),
        ("be_specific", ["Event Viewer > System", "NTFS"]),
    ],
)
def test_fp005_every_step_rule_is_in_the_system_prompt(rule: str, phrases: list[str]) -> None:
    assert prompts.STEP_RULES[rule] in PROMPT
    for phrase in phrases:
        assert phrase in PROMPT


def test_fp006_forking_rules_are_in_the_system_prompt() -> None:
    for text in (*prompts.FORK_WHEN.values(), *prompts.FORK_NOT_WHEN.values()):
        assert text in PROMPT
    assert "equally likely" in PROMPT
    assert "ambiguous" in PROMPT
    assert "several subsystems" in PROMPT
    assert "clearly more likely" in PROMPT
    assert "one question would eliminate" in PROMPT
    assert "fewer than 3 steps" in PROMPT
    assert "2 to 4 options" in PROMPT
    assert "short hypothesis" in PROMPT


def test_fp002_the_prompt_names_all_four_step_types_consistently() -> None:
    # The source listed three types in one place and four in another; here every mention names all four.
    assert '"question", "action", "resolution_suggestion" or "fork"' in PROMPT
    for shape in ('{"type": "question"', '{"type": "action"', '{"type": "resolution_suggestion"', '{"type": "fork"'):
        assert shape in PROMPT
    assert "instruction | script_generation | verification | info_request | open_script_builder" in PROMPT
    assert "exactly one JSON object and nothing else" in PROMPT


def test_fp007_team_context_and_matched_flow_sections() -> None:
    flow = prompts.MatchedFlow("f1", "Printer spooler", 0.73, outline="- Ask: Is the spooler running?")
    prompt = prompts.build_system_prompt(
        ticket_block="## PSA TICKET CONTEXT\nTicket #42: printer down", scripts_block="## AVAILABLE SCRIPTS\n- Reset",
        matched_flow=flow,
    )
    assert "Ticket #42: printer down" in prompt
    assert "## AVAILABLE SCRIPTS" in prompt
    assert '"Printer spooler" (match score: 73%)' in prompt
    assert "- Ask: Is the spooler running?" in prompt


def test_fp016_a_weak_match_is_not_shown_to_the_model() -> None:
    assert prompts.matched_flow_section(prompts.MatchedFlow("f", "Weak", 0.5)) == ""
    assert prompts.matched_flow_section(None) == ""
    assert "MATCHED FLOW" in prompts.matched_flow_section(prompts.MatchedFlow("f", "Good", 0.51))


def test_fp043_linked_ticket_is_appended_under_its_own_heading() -> None:
    prompt = prompts.with_linked_ticket("base", "## PSA TICKET CONTEXT\nTicket #7: VPN")
    assert prompt == "base\n\n## PSA TICKET CONTEXT (linked mid-session)\nTicket #7: VPN"


# --- FP-015 / FP-019 / FP-026 / FP-042 ------------------------------------------------------


def test_fp015_intake_text_joins_description_log_and_ticket() -> None:
    assert prompts.intake_text("Printer down", "E42 error", "Ticket summary") == (
        "Printer down\n\nLog output:\nE42 error\n\nTicket: Ticket summary"
    )
    assert prompts.intake_text("  ", "", None) == ""


def test_fp019_first_user_message() -> None:
    c = IntakeClassification(problem_summary="Printer offline", problem_domain="printing",
                             key_symptoms=["offline", "queue stuck"])
    message = prompts.first_user_message("Printer is down", "spooler crashed", c)
    assert message.startswith("I need help troubleshooting an issue.")
    assert "**Problem description:**\nPrinter is down" in message
    assert "```\nspooler crashed\n```" in message
    assert "**Classified as:** Printer offline" in message
    assert "**Domain:** printing" in message
    assert "**Key symptoms:** offline, queue stuck" in message


def test_fp008_classification_fallback_and_summary_length() -> None:
    fallback = IntakeClassification.fallback("x" * 300)
    assert fallback.problem_summary == "x" * 120
    assert (fallback.problem_domain, fallback.key_symptoms, fallback.urgency) == ("other", [], "medium")
    assert len(IntakeClassification(problem_summary="y " * 200).problem_summary) <= 120


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"was_skipped": True, "selected_option": "yes"}, "I can't check this right now / I don't know."),
        ({}, "No response provided."),
        ({"selected_option": "web"}, "Selected: Yes, web too"),
        ({"selected_option": "unknown"}, "Selected: unknown"),
        ({"free_text": " It started Monday "}, "It started Monday"),
        ({"action_success": True}, "Action succeeded."),
        ({"action_success": False, "action_details": "still prompts"}, "Action did not work.\nDetails: still prompts"),
        ({"selected_option": "web", "free_text": "also on mobile"}, "Selected: Yes, web too\nalso on mobile"),
    ],
)
def test_fp026_engineer_response_text(kwargs: dict[str, object], expected: str) -> None:
    base: dict[str, object] = {"selected_option": None, "free_text": None, "was_skipped": False,
                               "action_success": None, "action_details": None}
    base.update(kwargs)
    options = [StepOption(label="Yes, web too", value="web")]
    assert prompts.format_response(**base, options=options) == expected  # type: ignore[arg-type]


def test_fp042_pickup_messages() -> None:
    assert prompts.pickup_message("Checked the firewall already", fresh=True) == (
        "[Picking up escalated session] Checked the firewall already"
    )
    continuing = prompts.pickup_message("ignored", fresh=False)
    assert continuing.startswith("[Picking up escalated session] I've reviewed the briefing above.")
    assert prompts.pickup_message(None, fresh=True) == continuing


# --- FP-002 / FP-003 / FP-023 ---------------------------------------------------------------


def reply(**data: object) -> StepReply:
    return StepReply.model_validate(data)


def test_fp002_only_the_four_types_validate() -> None:
    with pytest.raises(ValidationError):
        reply(type="diagnosis", content="x")
    with pytest.raises(ValidationError):
        StepReply.model_validate_json('{"content": "no type"}')


def test_fp003_question_shape() -> None:
    step = reply(type="question", content="Which?", options=[{"label": "A", "value": "a"}], confidence=0.4).step
    assert isinstance(step, QuestionStep)
    assert step.allow_free_text
    assert step.allow_skip
    with pytest.raises(ValidationError, match="at most 5 options"):
        reply(type="question", content="Which?", options=[{"label": f"o{i}", "value": f"v{i}"} for i in range(6)])
    with pytest.raises(ValidationError, match=r"options\.0\.value"):
        reply(type="question", content="Which?", options=[{"label": "no value"}])
    with pytest.raises(ValidationError, match="distinct"):
        reply(type="question", content="Which?", options=[{"label": "A", "value": "a"}, {"label": "B", "value": "a"}])


def test_fp003_action_shapes_and_script_fields() -> None:
    step = reply(type="action", content="Run it", action_type="script_generation", template_id="t-1",
                 pre_filled_params={"user": "bob", "days": 3}).step
    assert isinstance(step, ActionStep)
    with pytest.raises(ValidationError, match="template_id"):
        reply(type="action", content="Run it", action_type="script_generation")
    with pytest.raises(ValidationError, match="script_prompt and script_language"):
        reply(type="action", content="Build it", action_type="open_script_builder", script_prompt="List locked users")
    with pytest.raises(ValidationError):
        reply(type="action", content="x", action_type="reboot")


def test_fp023_stored_content_copies_script_builder_fields() -> None:
    step = reply(type="action", content="Build a script", action_type="open_script_builder",
                 script_prompt="List users locked out in the last day", script_language="powershell",
                 expected_outcome="A list").step
    content = step_content(step)
    assert content["script_prompt"] == "List users locked out in the last day"
    assert content["script_language"] == "powershell"
    assert content["action_type"] == "open_script_builder"
    assert step_type_of(step) == "action"


def test_fp023_resolution_is_stored_as_action_with_its_own_content_type() -> None:
    step = reply(type="resolution_suggestion", content="Fixed", resolution_summary="DNS was wrong",
                 follow_up_recommendations=["Monitor"], confidence=0.95).step
    assert isinstance(step, ResolutionSuggestionStep)
    assert step_type_of(step) == "action"
    content = step_content(step)
    assert content["type"] == "resolution_suggestion"
    assert content["resolution_summary"] == "DNS was wrong"
    assert content["allow_free_text"] is False
    assert content["allow_skip"] is False


def test_fp023_question_keeps_its_options_in_content() -> None:
    step = reply(type="question", content="Which?", options=[{"label": "A", "value": "a", "followup_hint": "h"}]).step
    content = step_content(step)
    assert content["options"] == [{"label": "A", "value": "a", "followup_hint": "h"}]
    assert step_type_of(step) == "question"


def test_fp003_fork_needs_two_to_four_distinct_options() -> None:
    step = reply(type="fork", content="Split", fork_reason="two causes",
                 options=[{"label": "DNS", "description": "d"}, {"label": "Firewall"}]).step
    assert isinstance(step, ForkStep)
    assert step_content(step)["fork_options"] == [{"label": "DNS", "description": "d"},
                                                   {"label": "Firewall", "description": ""}]
    with pytest.raises(ValidationError):
        reply(type="fork", content="Split", options=[{"label": "Only one"}])
    with pytest.raises(ValidationError):
        reply(type="fork", content="Split", options=[{"label": f"H{i}"} for i in range(5)])
    with pytest.raises(ValidationError, match="distinct"):
        reply(type="fork", content="Split", options=[{"label": "DNS"}, {"label": "dns"}])


def test_fp012_step_confidence_is_clamped_and_optional() -> None:
    assert reply(type="action", content="x", confidence=1.4).step.confidence == 1.0
    assert reply(type="action", content="x").step.confidence is None
