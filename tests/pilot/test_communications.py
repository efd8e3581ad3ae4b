"""Status updates (FP-047 .. FP-050) and streamed ticket notes (FP-051), driven by scripted test models."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import product

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deskpilot.llm import LLM, MemoryRecorder, Model
from deskpilot.llm.messages import Completion, Message, RequestParams
from deskpilot.llm.testing import Reply, ScriptedModel
from deskpilot.pilot.communications import (
    CLIENT_JARGON,
    DEFAULT_SIGN_OFF,
    TICKET_NOTES_PROMPT,
    Audience,
    Length,
    UpdateContext,
    build_status_update_context,
    build_status_update_prompt,
    build_ticket_notes_context,
    build_what_we_know,
    client_name,
    ensure_four_sections,
    generate_status_update,
    sign_off,
    stream_ticket_notes,
    summarise_steps,
    time_spent_hours,
)
from deskpilot.pilot.views import EvidenceItem, MessageView, SessionView, StepView

START = datetime(2026, 4, 5, 9, 0, tzinfo=UTC)
NOW = START + timedelta(minutes=15)
ACCOUNT = uuid.UUID(int=7)
AUDIENCES: tuple[Audience, ...] = ("ticket_notes", "client_update", "request_info", "email_draft")
LENGTHS: tuple[Length, ...] = ("quick", "full")
CONTEXTS: tuple[UpdateContext, ...] = ("status", "resolution", "escalation")
SECTIONS = ["## Problem Summary", "## Steps Taken", "## Resolution", "## Next Steps"]


def session(**changes: object) -> SessionView:
    values: dict[str, object] = {
        "id": uuid.UUID(int=1),
        "kind": "guided",
        "status": "active",
        "created_at": START,
        "problem_summary": "Printer on floor 2 shows offline",
        "problem_domain": "printing",
        "intake": {"text": "Nobody on floor 2 can print since this morning.", "client_name": "Acme Dental"},
        "engineer_name": "Dana Reyes",
        "ticket_id": "48213",
    }
    values.update(changes)
    return SessionView(**values)  # type: ignore[arg-type]


def steps() -> list[StepView]:
    return [
        StepView(
            order=0,
            step_type="question",
            content={
                "type": "question",
                "text": "Does the printer answer a ping from the print server?",
                "options": [
                    {"label": "Yes, it replies", "value": "ping_ok"},
                    {"label": "No reply", "value": "ping_fail"},
                ],
            },
            selected_option="ping_ok",
        ),
        StepView(
            order=1,
            step_type="action",
            content={
                "type": "action",
                "text": "Restart the Print Spooler service on PRN-01",
                "action_type": "instruction",
            },
            action_result="failure",
            action_details="queue still stuck",
        ),
        StepView(
            order=2,
            step_type="question",
            content={"type": "question", "text": "Was the driver updated?"},
            was_skipped=True,
        ),
        StepView(order=3, step_type="question", content={"type": "question", "text": "   "}, free_text_input="ignored"),
        StepView(
            order=4,
            step_type="action",
            content={
                "type": "resolution_suggestion",
                "text": "Clear the stuck job",
                "follow_up_recommendations": ["Monitor"],
            },
        ),
        StepView(order=5, step_type="action", content={"type": "briefing", "text": "## Escalation Briefing"}),
        StepView(order=6, step_type="status_update", content={"generated_content": "Earlier update"}),
        StepView(
            order=7,
            step_type="action",
            content={"type": "action", "text": "Clear the stuck job from the queue"},
            free_text_input="Deleted job 112",
            action_result="success",
        ),
    ]


# ---- FP-047: time, client, sign-off, steps summary ------------------------------------------------------------


def test_fp047_time_spent_in_decimal_hours() -> None:
    assert time_spent_hours(session(), NOW) == "0.25 hrs"
    resolved = session(resolved_at=START + timedelta(hours=2, minutes=6))
    assert time_spent_hours(resolved, NOW + timedelta(days=1)) == "2.10 hrs"


def test_fp047_client_name_prefers_the_ticket_company() -> None:
    intake = {"client_name": "From intake", "ticket_data": {"company": {"name": "Intake ticket Co"}}}
    assert client_name(session(intake=intake, ticket_data={"company": {"name": "Linked Co"}})) == "Linked Co"
    assert client_name(session(intake=intake)) == "Intake ticket Co"
    assert client_name(session(intake={"client_name": "Acme", "ticket_data": {"company": "not a dict"}})) == "Acme"
    assert client_name(session(intake={"company_name": "Beta LLC"})) == "Beta LLC"
    assert client_name(session(intake={}, client_name="Desk client")) == "Desk client"
    assert client_name(session(intake={})) is None


def test_fp047_sign_off_is_engineer_name_else_support_team() -> None:
    assert sign_off(session()) == "Dana Reyes"
    assert sign_off(session(engineer_name=None)) == DEFAULT_SIGN_OFF == "Your support team"


def test_fp047_steps_summary_skips_non_diagnostic_and_empty_steps() -> None:
    assert summarise_steps(steps()) == [
        "1. Does the printer answer a ping from the print server? — Yes, it replies",
        "2. Restart the Print Spooler service on PRN-01 [Did not resolve — queue still stuck]",
        "3. Was the driver updated? (skipped)",
        "8. Clear the stuck job from the queue — Deleted job 112 [Succeeded]",
    ]


def test_fp047_steps_summary_resolves_option_labels_not_machine_values() -> None:
    text = "\n".join(summarise_steps(steps()))
    assert "ping_ok" not in text
    assert "Yes, it replies" in text


# ---- FP-050: What we know -------------------------------------------------------------------------------------


def test_fp050_what_we_know_from_evidence_items() -> None:
    evidence = (
        EvidenceItem("Printer answers ping", "confirmed"),
        EvidenceItem("Network outage", "ruled_out"),
        EvidenceItem("Stuck job in the queue", "pending"),
        EvidenceItem("Toner is fine", "confirmed"),
    )
    assert build_what_we_know(session(evidence_items=evidence), steps()) == (
        "Confirmed:\n  - Printer answers ping\n  - Toner is fine\n"
        "Ruled out:\n  - Network outage\n"
        "Still investigating:\n  - Stuck job in the queue"
    )


def test_fp050_what_we_know_omits_empty_groups() -> None:
    evidence = (EvidenceItem("Network outage", "ruled_out"),)
    assert build_what_we_know(session(evidence_items=evidence), []) == "Ruled out:\n  - Network outage"


def test_fp050_what_we_know_derived_from_answered_steps() -> None:
    assert build_what_we_know(session(), steps()) == (
        "Findings so far:\n"
        "  - Does the printer answer a ping from the print server? — Yes, it replies\n"
        "  - Restart the Print Spooler service on PRN-01 — Did not resolve\n"
        "  - Clear the stuck job from the queue — Deleted job 112; Succeeded"
    )


def test_fp050_what_we_know_empty_without_findings() -> None:
    unanswered = StepView(order=0, step_type="question", content={"type": "question", "text": "Which floor?"})
    assert build_what_we_know(session(), [unanswered]) == ""


# ---- FP-048: audience prompts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("audience", "length", "context"), list(product(AUDIENCES, LENGTHS, CONTEXTS)))
def test_fp048_every_audience_length_and_context_has_a_prompt(
    audience: Audience, length: Length, context: UpdateContext
) -> None:
    prompt = build_status_update_prompt(audience, length, context, client_name="Acme Dental", engineer_name="Dana")
    assert "no code fences" in prompt
    assert "\n- \n" not in prompt
    if audience != "request_info":
        assert "decimal hours" in prompt
        assert ("One or two sentences" in prompt) == (length == "quick")
        assert ("complete breakdown" in prompt) == (length == "full")


def test_fp048_ticket_notes_are_plain_text_with_what_we_know() -> None:
    prompt = build_status_update_prompt("ticket_notes", "full", "status", client_name="Acme", engineer_name="Dana")
    assert "internal PSA ticket note" in prompt
    assert "Plain text only" in prompt
    assert "no markdown" in prompt
    assert '"What We Know:"' in prompt
    assert "ruled out" in prompt
    assert "one line each" in prompt
    assert "No greetings, pleasantries or sign-off" in prompt
    assert "Dana" not in prompt
    assert "root cause" not in prompt


def test_fp048_ticket_notes_resolution_and_escalation_additions() -> None:
    resolution = build_status_update_prompt("ticket_notes", "full", "resolution", client_name=None, engineer_name="D")
    escalation = build_status_update_prompt("ticket_notes", "quick", "escalation", client_name=None, engineer_name="D")
    assert "root cause" in resolution
    assert "what was tried, what failed, and why it is being escalated" in escalation
    assert "One or two sentences" in escalation


def test_fp048_client_update_bans_jargon_and_internals() -> None:
    prompt = build_status_update_prompt(
        "client_update", "full", "status", client_name="Acme Dental", engineer_name="Dana"
    )
    for term in ("DNS", "MX record", "transport rule", "registry", "GPO", "connector"):
        assert term in CLIENT_JARGON
        assert f'"{term}"' in prompt
    assert "Never use technical jargon" in prompt
    assert "Never mention server names, IP addresses, internal tool names or ticket IDs" in prompt
    assert 'Address the client as "Acme Dental"' in prompt
    assert "Sign off with: Dana" in prompt
    assert "no timeline" in prompt


def test_fp048_client_update_context_guidance() -> None:
    def prompt(context: UpdateContext) -> str:
        return build_status_update_prompt("client_update", "quick", context, client_name=None, engineer_name="Dana")

    assert "good news" in prompt("resolution")
    assert "specialist is being brought in" in prompt("escalation")
    assert "never as a failure" in prompt("escalation")
    assert "handoff" not in prompt("escalation")
    assert "a specialist is joining to help" in prompt("escalation")
    assert '"Hi,"' in prompt("status")


def test_fp048_request_info_numbered_questions_and_skips_length() -> None:
    quick = build_status_update_prompt("request_info", "quick", "status", client_name=None, engineer_name="Dana")
    full = build_status_update_prompt("request_info", "full", "escalation", client_name=None, engineer_name="Dana")
    assert quick == full
    assert "one plain sentence saying what you are working on" in quick
    assert "numbered list" in quick
    assert "Never use technical jargon" in quick
    assert "Sign off with: Dana" in quick


@pytest.mark.parametrize(
    ("context", "subject"),
    [
        ("status", "Subject: Update: [short description of the issue]"),
        ("resolution", "Subject: Resolved: [short description of the issue]"),
        ("escalation", "Subject: Update: [short description of the issue] — Specialist Assistance"),
    ],
)
def test_fp048_email_draft_subject_first(context: UpdateContext, subject: str) -> None:
    prompt = build_status_update_prompt("email_draft", "full", context, client_name="Acme", engineer_name="Dana")
    assert "The very first line is the subject" in prompt
    assert subject in prompt
    assert "Quick Question: [short description of the issue]" in prompt
    assert "Never use technical jargon" in prompt
    assert "sign-off from: Dana" in prompt


# ---- FP-049: context message and generation -------------------------------------------------------------------


def test_fp049_context_message_has_the_session_facts() -> None:
    message = build_status_update_context(session(), steps(), context="status", now=NOW)
    assert message.splitlines()[:6] == [
        "Session status: in progress",
        "Time spent: 0.25 hrs (decimal hours)",
        "Problem summary: Printer on floor 2 shows offline",
        "Problem domain: printing",
        "Client: Acme Dental",
        "Ticket ID: 48213",
    ]
    assert "\nWhat we know:\nFindings so far:\n" in message
    assert "\nDiagnostic steps taken:\n1. Does the printer answer" in message


def test_fp049_context_message_resolution_and_escalation_only_in_their_context() -> None:
    closed = session(resolution_summary="Cleared the queue", escalation_reason="Needs vendor")
    assert "Resolution: Cleared the queue" in build_status_update_context(closed, [], context="resolution", now=NOW)
    assert "Resolution:" not in build_status_update_context(closed, [], context="escalation", now=NOW)
    assert "Escalation reason: Needs vendor" in build_status_update_context(closed, [], context="escalation", now=NOW)
    assert "Escalation reason" not in build_status_update_context(closed, [], context="status", now=NOW)


def test_fp049_context_message_without_steps() -> None:
    bare = session(problem_summary=None, problem_domain=None, intake={}, ticket_id=None, status="paused")
    message = build_status_update_context(bare, [], context="status", now=NOW)
    assert message == (
        "Session status: paused\nTime spent: 0.25 hrs (decimal hours)\nProblem summary: Not yet determined\n"
        "\nDiagnostic steps taken:\nNo diagnostic steps yet."
    )


async def test_fp049_generate_status_update_uses_quick_model_and_returns_content_and_usage() -> None:
    model = ScriptedModel(
        [Reply("```\nHi Acme Dental,\nWe are on it.\nDana Reyes\n```", input_tokens=120, output_tokens=14)]
    )
    recorder = MemoryRecorder()
    llm = LLM.for_model(model, recorder=recorder)
    update = await generate_status_update(
        llm, session(), steps(), audience="client_update", length="quick", context="status", account_id=ACCOUNT, now=NOW
    )
    assert update.content == "Hi Acme Dental,\nWe are on it.\nDana Reyes"
    assert (update.usage.input_tokens, update.usage.output_tokens) == (120, 14)
    assert update.client_name == "Acme Dental"
    assert update.time_spent_display == "0.25 hrs"
    assert update.steps_completed == 4
    assert update.generated_at == NOW
    assert update.step_content() == {
        "audience": "client_update",
        "length": "quick",
        "context": "status",
        "generated_content": update.content,
        "client_name": "Acme Dental",
    }
    call = recorder.last
    assert call.purpose == "quick"
    assert call.account_id == ACCOUNT
    assert call.context is not None
    assert (call.context.subject_type, call.context.subject_id) == ("pilot_session", session().id)
    assert update.record_id == call.id

    request = model.requests[0]
    assert request.params.max_tokens == 1500
    system, user = request.messages
    assert system.role == "system"
    assert "message to a client" in system.content
    assert "One or two sentences" in system.content
    assert "progress update" in system.content
    assert 'Address the client as "Acme Dental"' in system.content
    assert "Sign off with: Dana Reyes" in system.content
    assert "decimal hours" in system.content
    assert "Time spent: 0.25 hrs" in user.content
    assert "What we know:" in user.content
    assert "Client: Acme Dental" in user.content


async def test_fp049_generate_status_update_ticket_notes_escalation_prompt() -> None:
    model = ScriptedModel(["Escalating: spooler restart did not clear the queue."])
    llm = LLM.for_model(model)
    escalated = session(status="requesting_escalation", escalation_reason="Needs the print vendor")
    update = await generate_status_update(
        llm,
        escalated,
        steps(),
        audience="ticket_notes",
        length="full",
        context="escalation",
        account_id=ACCOUNT,
        now=NOW,
    )
    assert update.content == "Escalating: spooler restart did not clear the queue."
    system, user = model.requests[0].messages
    assert "handoff note" in system.content
    assert "What We Know" in system.content
    assert "Escalation reason: Needs the print vendor" in user.content
    assert "Session status: escalated, waiting for another engineer" in user.content


# ---- FP-051: ticket notes -------------------------------------------------------------------------------------

GOOD_NOTES = (
    "## Problem Summary\nFloor 2 printer offline.\n\n## Steps Taken\n- Pinged printer: replies\n- Restarted spooler\n\n"
    "## Resolution\nCleared stuck job 112.\n\n## Next Steps\nNone\n"
)


def test_fp051_prompt_demands_exactly_four_sections() -> None:
    headings = [line for line in TICKET_NOTES_PROMPT.splitlines() if line.startswith("## ")]
    assert headings == SECTIONS
    assert "exactly these four markdown sections, in this order" in TICKET_NOTES_PROMPT
    assert 'Write "None" if there are none' in TICKET_NOTES_PROMPT
    assert "decimal hours" in TICKET_NOTES_PROMPT


def test_fp051_guided_source_is_the_steps_with_labels() -> None:
    resolved = session(
        status="resolved", resolution_summary="Cleared job 112", resolved_at=START + timedelta(minutes=30)
    )
    message = build_ticket_notes_context(resolved, steps(), now=NOW + timedelta(hours=5))
    assert "Time spent: 0.50 hrs (decimal hours)" in message
    assert "Resolution notes: Cleared job 112" in message
    assert (
        "Step 1: Does the printer answer a ping from the print server?\n  Engineer response: Yes, it replies" in message
    )
    assert "  Outcome: Did not resolve — queue still stuck" in message
    assert "Step 3: Was the driver updated?\n  Engineer response: Skipped" in message
    assert "Suggested fix: Clear the stuck job" in message
    assert "Escalation Briefing" not in message
    assert "Earlier update" not in message
    assert "ping_ok" not in message


def test_fp051_chat_source_is_the_last_20_messages_cut_to_500_chars() -> None:
    chat = [MessageView("user" if i % 2 == 0 else "assistant", f"message {i} " + "x" * 600) for i in range(25)]
    message = build_ticket_notes_context(session(kind="chat"), chat, now=NOW)
    conversation = message.split("Session conversation:\n", 1)[1].splitlines()
    assert len(conversation) == 20
    assert conversation[0].startswith("AI Assistant: message 5 ")
    assert conversation[1].startswith("Engineer: message 6 ")
    assert len(conversation[0]) == len("AI Assistant: ") + 500


def test_fp051_escalated_session_gives_the_escalation_reason() -> None:
    escalated = session(status="requesting_escalation", escalation_reason="Needs the print vendor")
    assert "Escalation reason: Needs the print vendor" in build_ticket_notes_context(escalated, steps(), now=NOW)


def test_fp051_no_source_data() -> None:
    assert "Session steps:\nNo session data." in build_ticket_notes_context(session(), [], now=NOW)


async def test_fp051_stream_yields_deltas_and_stores_four_sections() -> None:
    model = ScriptedModel([Reply(GOOD_NOTES, input_tokens=300, output_tokens=40)])
    recorder = MemoryRecorder()
    llm = LLM.for_model(model, recorder=recorder)
    stream = stream_ticket_notes(llm, session(), steps(), account_id=ACCOUNT, now=NOW)
    assert not stream.finished
    with pytest.raises(RuntimeError):
        _ = stream.notes
    deltas = [delta async for delta in stream]
    assert len(deltas) > 10
    assert "".join(deltas) == GOOD_NOTES
    assert stream.finished
    assert stream.streamed
    assert stream.notes == GOOD_NOTES
    assert (stream.usage.input_tokens, stream.usage.output_tokens) == (300, 40)
    request = model.requests[0]
    assert request.stream
    assert request.params.max_tokens == 1500
    assert request.messages[0].content == TICKET_NOTES_PROMPT
    assert "Time spent: 0.25 hrs (decimal hours)" in request.messages[1].content
    assert recorder.last.purpose == "drafter"


class NonStreamingModel(Model):
    """A provider adapter without streaming: only `request`, answered by a scripted model."""

    def __init__(self, inner: ScriptedModel) -> None:
        self.name = "test:nostream"
        self.inner = inner

    async def request(self, messages: Sequence[Message], params: RequestParams) -> Completion:
        return await self.inner.request(messages, params)


async def test_fp051_falls_back_to_one_text_call_when_the_model_cannot_stream() -> None:
    inner = ScriptedModel(["Resolution only, no headings"])
    llm = LLM.for_model(NonStreamingModel(inner))
    stream = stream_ticket_notes(llm, session(), steps(), account_id=ACCOUNT, now=NOW)
    deltas = [delta async for delta in stream]
    assert deltas == ["Resolution only, no headings"]
    assert not stream.streamed
    assert len(inner.requests) == 1
    assert not inner.requests[0].stream
    assert [line for line in stream.notes.splitlines() if line.startswith("## ")] == SECTIONS


async def test_fp051_malformed_reply_is_repaired_to_four_sections() -> None:
    malformed = (
        "Sure! Here are the notes:\n**Resolution:** cleared job 112\n"
        "# Problem\nPrinter offline\n### Root cause\nstuck job"
    )
    llm = LLM.for_model(ScriptedModel([malformed]))
    async with stream_ticket_notes(llm, session(), steps(), account_id=ACCOUNT, now=NOW) as stream:
        async for _ in stream:
            pass
    assert stream.notes == (
        "## Problem Summary\nPrinter offline\nRoot cause:\nstuck job\n\n## Steps Taken\nNone\n\n"
        "## Resolution\ncleared job 112\n\n## Next Steps\nNone\n"
    )


async def test_fp051_leaving_early_closes_the_stream() -> None:
    llm = LLM.for_model(ScriptedModel([GOOD_NOTES]))
    async with stream_ticket_notes(llm, session(), steps(), account_id=ACCOUNT, now=NOW) as stream:
        first = await stream.__anext__()
    assert first == "## "
    assert not stream.finished
    assert stream.text == "## "


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        pytest.param(GOOD_NOTES, GOOD_NOTES, id="already-good"),
        pytest.param(
            "```markdown\n" + GOOD_NOTES + "```",
            GOOD_NOTES,
            id="fenced",
        ),
        pytest.param(
            "## Next Steps\n- Monitor\n## Resolution\nFixed\n## Steps Taken\n- a\n## Problem Summary\nOffline",
            "## Problem Summary\nOffline\n\n## Steps Taken\n- a\n\n## Resolution\nFixed\n\n## Next Steps\n- Monitor\n",
            id="reordered",
        ),
        pytest.param(
            "Printer offline since morning.",
            "## Problem Summary\nPrinter offline since morning.\n\n## Steps Taken\nNone\n\n## Resolution\nNone\n\n"
            "## Next Steps\nNone\n",
            id="no-headings",
        ),
        pytest.param(
            "**Problem Summary:** Offline\n**Steps taken**\n- ping\nFix: keep in steps\n## Steps\n- restart\n"
            "### Follow-up\n",
            "## Problem Summary\nOffline\n\n## Steps Taken\n- ping\nFix: keep in steps\n\n- restart\n\n"
            "## Resolution\nNone\n\n## Next Steps\nNone\n",
            id="bold-aliases-duplicates-empty",
        ),
        pytest.param(
            "## Steps Taken\n#1 printer first\n##Resolution\nok",
            "## Problem Summary\nNone\n\n## Steps Taken\n#1 printer first\n\n"
            "## Resolution\nok\n\n## Next Steps\nNone\n",
            id="hash-text-and-heading-without-space",
        ),
        pytest.param(
            "",
            "## Problem Summary\nNone\n\n## Steps Taken\nNone\n\n## Resolution\nNone\n\n## Next Steps\nNone\n",
            id="empty",
        ),
    ],
)
def test_fp051_ensure_four_sections_repairs(reply: str, expected: str) -> None:
    assert ensure_four_sections(reply) == expected


@given(st.text(alphabet=st.sampled_from(list("#*:- \nabcPrSumyNxtRsolui")), max_size=200))
def test_fp051_ensure_four_sections_always_gives_exactly_the_four_headings(reply: str) -> None:
    repaired = ensure_four_sections(reply)
    assert re.findall(r"^ {0,3}#{1,6}(?:[ \t].*)?$", repaired, flags=re.MULTILINE) == SECTIONS
    assert ensure_four_sections(repaired) == repaired
