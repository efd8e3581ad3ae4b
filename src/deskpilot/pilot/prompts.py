"""Prompt text for guided sessions (FP-005..FP-007, FP-015, FP-016, FP-019, FP-026, FP-042): pure string building."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from deskpilot.pilot.schemas import IntakeClassification, StepOption

# --- system prompt --------------------------------------------------------------------------

ROLE: Final = """\
You are Pilot, the troubleshooting partner of an IT service desk engineer (MSP or internal IT). You lead a \
structured diagnosis one step at a time: the engineer runs the checks and reports back, you decide what to \
look at next.

How you work:
- Work methodically: begin with broad checks that split the problem space, then narrow down with each answer.
- Do not guess. When the evidence does not settle a point, ask a clarifying question instead.
- Every step must be something the engineer can actually do or verify and report on.
- While confidence is low keep investigating; once it is high, propose the fix."""

RESPONSE_FORMAT: Final = """\
## ANSWER FORMAT
Answer with exactly one JSON object and nothing else: no markdown, no prose around it, no code fences.
Its "type" is one of "question", "action", "resolution_suggestion" or "fork"."""

STEP_SHAPES: Final = """\
The four shapes (fields not listed for a type are left out):

question - ask the engineer something:
{"type": "question", "content": "the question", "reasoning": "your private reasoning", \
"context_message": "shown to the engineer: why you ask", "options": [{"label": "text on the button", \
"value": "machine_value", "followup_hint": "what this answer would point to, or null"}], \
"allow_free_text": true, "allow_skip": true, "confidence": 0.55}

action - have the engineer do something and report whether it worked:
{"type": "action", "content": "what to do, precisely", "reasoning": "...", "context_message": "why this action", \
"action_type": "instruction | script_generation | verification | info_request | open_script_builder", \
"expected_outcome": "what success looks like", "confidence": 0.7}
  script_generation also carries "template_id" (an ID from AVAILABLE SCRIPTS) and "pre_filled_params" \
({"parameter": "value"}); open_script_builder carries "script_prompt" (what the script must do) and \
"script_language" ("powershell", "bash" or "python"); any action may carry "instructions" (numbered sub-steps).

resolution_suggestion - propose the fix once the cause is clear:
{"type": "resolution_suggestion", "content": "what was found and what to do", "reasoning": "...", \
"resolution_summary": "caused by X, fixed by Y", "follow_up_recommendations": ["watch the event log for 24 hours"], \
"confidence": 0.93}

fork - split the investigation into parallel branches, one per hypothesis:
{"type": "fork", "content": "why the investigation splits", "reasoning": "...", \
"context_message": "shown to the engineer: explains the branches", "fork_reason": "the competing hypotheses", \
"options": [{"label": "short hypothesis name", "description": "what this branch will check"}], "confidence": 0.45}"""

# Each rule of FP-005 in this product's own words; tests check that every one reaches the prompt.
STEP_RULES: Final[Mapping[str, str]] = {
    "max_options": "A question offers 5 options at most; pick the answers you most expect.",
    "explain_why": "Always fill context_message with the reason for the step, so the engineer knows WHY it matters.",
    "confidence": "confidence is a number between 0.0 and 1.0 saying how sure you are of the current diagnosis path.",
    "resolve_when_sure": (
        "When the evidence points to one root cause with more than 90% confidence, answer with a "
        "resolution_suggestion instead of investigating further."
    ),
    "ask_script_or_gui": (
        "When a task can be done either with a script or in a GUI (Active Directory Users and Computers, the "
        "Microsoft 365 admin center, ...), first ask the engineer which way they prefer. Never assume they want "
        "a script."
    ),
    "script_after_confirmation": (
        "Use a script_generation action only after the engineer has confirmed they want the script approach."
    ),
    "script_builder": (
        "If the engineer wants a script that none of the available scripts covers, use an action with action_type "
        "open_script_builder, a script_prompt describing exactly what the script must do and a script_language "
        "(powershell, bash or python)."
    ),
    "no_reboot_first": "Never propose a restart or reboot as a first step: diagnose before you reboot anything.",
    "be_specific": (
        'Be specific: say "open Event Viewer > System and filter on source NTFS", not "check the logs".'
    ),
}

# FP-006 in this product's own words.
FORK_WHEN: Final[Mapping[str, str]] = {
    "equal_hypotheses": (
        "two or more hypotheses are about equally likely and checking one would not rule out the others;"
    ),
    "ambiguous_results": (
        "the obvious path has been tried and the results are ambiguous (it could be DNS, or the firewall, or "
        "authentication);"
    ),
    "several_subsystems": (
        "the symptoms involve several subsystems (a slow logon can be AD replication, DNS or group policy)."
    ),
}
FORK_NOT_WHEN: Final[Mapping[str, str]] = {
    "one_likelier": "one hypothesis is clearly more likely: investigate it first;",
    "one_question": "one question would eliminate most of the possibilities: ask it instead;",
    "too_early": "the session has fewer than 3 steps so far: gather more facts first.",
}
FORK_SHAPE: Final = (
    "A fork has 2 to 4 options, each an independent line of investigation labelled with a short hypothesis "
    'name ("DNS resolution", "AD replication lag").'
)


def rules_section() -> str:
    lines = ["## RULES"]
    lines += [f"- {rule}" for rule in STEP_RULES.values()]
    return "\n".join(lines)


def forking_section() -> str:
    lines = [
        "## FORKING THE INVESTIGATION",
        "Answer with a fork when:",
        *(f"- {text}" for text in FORK_WHEN.values()),
        "Do not fork when:",
        *(f"- {text}" for text in FORK_NOT_WHEN.values()),
        FORK_SHAPE,
    ]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class MatchedFlow:
    """The best flow match of the intake (FP-016)."""

    flow_id: str
    name: str
    score: float
    outline: str = ""


# Below this score the flow is a coincidence rather than a guide, and is not mentioned to the model (FP-016).
FLOW_PROMPT_MIN_SCORE: Final = 0.5


def matched_flow_section(match: MatchedFlow | None) -> str:
    """The MATCHED FLOW section, only for a match scoring above 0.5 (FP-016)."""
    if match is None or match.score <= FLOW_PROMPT_MIN_SCORE:
        return ""
    lines = [
        "## MATCHED FLOW",
        f'The team has a runbook for problems like this one: "{match.name}" (match score: {match.score:.0%}). '
        "Follow it where it fits this case, and depart from it where the evidence says otherwise.",
    ]
    if match.outline:
        lines += ["", match.outline]
    return "\n".join(lines)


def team_context_section(ticket_block: str | None, scripts_block: str | None) -> str:
    """The team context (FP-007): the PSA ticket's context and the scripts the team can run (FP-018)."""
    parts = [block.strip() for block in (ticket_block, scripts_block) if block and block.strip()]
    return "\n\n".join(parts)


def build_system_prompt(
    *, ticket_block: str | None = None, scripts_block: str | None = None, matched_flow: MatchedFlow | None = None
) -> str:
    """The system prompt of a guided session (FP-005..FP-007): role, format, step shapes, rules, forking, context."""
    sections = [ROLE, RESPONSE_FORMAT, STEP_SHAPES, rules_section(), forking_section()]
    team = team_context_section(ticket_block, scripts_block)
    if team:
        sections.append(team)
    flow = matched_flow_section(matched_flow)
    if flow:
        sections.append(flow)
    return "\n\n".join(sections)


LINKED_TICKET_HEADING: Final = "## PSA TICKET CONTEXT (linked mid-session)"


def with_linked_ticket(system_prompt: str, ticket_block: str) -> str:
    """The system prompt with a ticket linked mid-session appended (FP-043)."""
    body = ticket_block.strip()
    # The PSA formatter starts its block with its own heading; the mid-session heading replaces it.
    first, _, rest = body.partition("\n")
    if first.startswith("## "):
        body = rest.strip()
    return f"{system_prompt}\n\n{LINKED_TICKET_HEADING}\n{body}"


BRANCHES_HEADING: Final = "## OTHER BRANCHES OF THIS INVESTIGATION"


def with_branch_context(system_prompt: str, current_label: str, siblings_summary: str) -> str:
    """The system prompt of a branch: which hypothesis it investigates and what the other branches found."""
    lines = [
        system_prompt,
        "",
        "## CURRENT BRANCH",
        f'You are investigating the branch "{current_label}". Stay on its hypothesis. When the evidence rules it '
        "out, say so in context_message and suggest marking this branch a dead end.",
    ]
    if siblings_summary:
        lines += ["", BRANCHES_HEADING, siblings_summary]
    return "\n".join(lines)


# --- intake ---------------------------------------------------------------------------------

CLASSIFICATION_PROMPT: Final = """\
You triage incoming IT support problems for a managed service provider. Read the intake and classify it.
Return:
- problem_summary: the problem in one line of at most 120 characters;
- problem_domain: one of active_directory, networking, m365, hardware, endpoint, virtualization, security, \
backup, email, printing, cloud, other;
- key_symptoms: the concrete symptoms mentioned (short phrases);
- urgency: low, medium, high or critical, judged by business impact."""


def intake_text(text: str, log_content: str, ticket_summary: str | None) -> str:
    """The searchable intake text (FP-015): description, log output and ticket summary, by blank lines."""
    parts: list[str] = []
    if text.strip():
        parts.append(text.strip())
    if log_content.strip():
        parts.append(f"Log output:\n{log_content.strip()}")
    if ticket_summary:
        parts.append(f"Ticket: {ticket_summary}")
    return "\n\n".join(parts)


def first_user_message(text: str, log_content: str, classification: IntakeClassification) -> str:
    """The conversation's first message (FP-019): the problem, the log in a fence, and its classification."""
    lines = ["I need help troubleshooting an issue."]
    if text.strip():
        lines += ["", "**Problem description:**", text.strip()]
    if log_content.strip():
        lines += ["", "**Log output:**", "```", log_content.strip(), "```"]
    lines.append("")
    lines.append(f"**Classified as:** {classification.problem_summary}")
    lines.append(f"**Domain:** {classification.problem_domain}")
    if classification.key_symptoms:
        lines.append(f"**Key symptoms:** {', '.join(classification.key_symptoms)}")
    return "\n".join(lines)


# --- responses ------------------------------------------------------------------------------

SKIPPED_TEXT: Final = "I can't check this right now / I don't know."
EMPTY_RESPONSE_TEXT: Final = "No response provided."


def format_response(
    *,
    selected_option: str | None,
    free_text: str | None,
    was_skipped: bool,
    action_success: bool | None,
    action_details: str | None,
    options: Sequence[StepOption] = (),
) -> str:
    """The engineer's response as a conversation message (FP-026).

    A selected option is written with its label (what the engineer read), falling back to the value.
    """
    if was_skipped:
        return SKIPPED_TEXT
    lines: list[str] = []
    if selected_option:
        label = next((o.label for o in options if o.value == selected_option), selected_option)
        lines.append(f"Selected: {label}")
    if free_text and free_text.strip():
        lines.append(free_text.strip())
    if action_success is not None:
        lines.append("Action succeeded." if action_success else "Action did not work.")
        if action_details and action_details.strip():
            lines.append(f"Details: {action_details.strip()}")
    return "\n".join(lines) if lines else EMPTY_RESPONSE_TEXT


PICKUP_PREFIX: Final = "[Picking up escalated session]"


def pickup_message(additional_context: str | None, *, fresh: bool) -> str:
    """The message that resumes an escalated session for the engineer picking it up (FP-042)."""
    if fresh and additional_context and additional_context.strip():
        return f"{PICKUP_PREFIX} {additional_context.strip()}"
    return (
        f"{PICKUP_PREFIX} I've reviewed the briefing above. Please continue the diagnosis based on everything "
        "tried so far."
    )


def branch_intro_message(label: str, description: str) -> str:
    """The first message of a new branch: which hypothesis it follows."""
    text = f'[Branch: {label}] Let\'s investigate the hypothesis "{label}".'
    if description.strip():
        text += f" {description.strip()}"
    return text + " What should I check first on this branch?"


def revive_message(evidence: str) -> str:
    """The message reopening a dead-end branch with the engineer's new evidence."""
    return f"[Branch reopened] New evidence: {evidence.strip()} Please reconsider this hypothesis in its light."


# --- escalation -----------------------------------------------------------------------------

INSIGHTS_PROMPT: Final = """\
You review a troubleshooting session that an engineer is handing to a colleague. From the problem, the \
steps taken with their results and the reason for escalating, list briefly:
- remaining_hypotheses: causes still plausible, most likely first;
- suggested_next_steps: the checks the next engineer should run first;
- steps_ruled_out: causes the steps so far have eliminated."""


def insights_request(
    problem_summary: str | None, problem_domain: str | None, steps: Sequence[str], reason: str
) -> str:
    """The user message asking for escalation insights (FP-039)."""
    lines = [f"Problem: {problem_summary or 'unknown'}", f"Domain: {problem_domain or 'unknown'}", "", "Steps taken:"]
    lines += [f"- {line}" for line in steps] or ["- none"]
    lines += ["", f"Escalation reason: {reason}"]
    return "\n".join(lines)
