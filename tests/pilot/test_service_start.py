"""Starting a session: classification, flow matching, ticket context, tiers, flow mode and failures."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from sqlalchemy import func, select

from deskpilot.knowledge import service as knowledge
from deskpilot.llm import LLM, ProviderUnavailable
from deskpilot.pilot import prompts, service
from deskpilot.pilot.errors import IntakeEmpty, IntakeTooLarge, NoLLMNoFlow, StepGenerationFailed
from deskpilot.pilot.models import PilotSession, SessionMessage, SessionStep
from deskpilot.pilot.schemas import SessionCreate, StepResponse
from deskpilot.psa import service as psa
from deskpilot.settings import LLMSettings
from tests.pilot.conftest import Desk, action, classification, conversation, question, scripted

OUTLOOK = "Outlook keeps asking for the password since this morning"
COFFEE = "The coffee machine on floor 3 is broken"


async def load_starter(desk: Desk) -> None:
    async with desk.session() as s:
        await knowledge.load_starter_library(s, desk.account_id)
        await s.commit()


async def test_fp022_start_without_a_flow_returns_the_first_step(desk: Desk) -> None:
    """FP-022 answer with the FP-024 step shape; FP-009 purposes; FP-020 stored state."""
    llm, model, recorder = scripted(classification("Coffee machine broken", "hardware"), question())
    started = await desk.call(service.start_session, desk.deps(llm), desk.engineer,
                              SessionCreate(text=COFFEE, log_content="E42: boiler"))
    assert started.status == "active"
    assert started.mode == "ai"
    assert started.problem_summary == "Coffee machine broken"
    assert started.problem_domain == "hardware"
    assert started.psa_context_status is None
    assert started.confidence_score == 0.5
    assert started.confidence_tier == "exploring"
    first = started.first_step
    assert first.step_order == 0
    assert first.step_type == "question"
    assert [o["value"] for o in first.options] == ["web", "desktop"]
    assert first.allow_free_text
    assert first.allow_skip
    # FP-008: classification goes through the quick purpose with the intake text.
    assert [c.purpose for c in recorder.calls] == ["quick", "pilot_step"]
    assert COFFEE in model.requests[0].last_user_text
    assert "Log output:\nE42: boiler" in model.requests[0].last_user_text
    assert recorder.calls[0].context is not None
    assert recorder.calls[0].context.subject_id == started.session_id
    # FP-019: system prompt plus the first user message.
    step_request = model.requests[1]
    assert step_request.messages[0].role == "system"
    assert prompts.STEP_RULES["no_reboot_first"] in step_request.messages[0].content
    assert step_request.messages[1].content.startswith("I need help troubleshooting an issue.")
    assert "**Domain:** hardware" in step_request.messages[1].content
    async with desk.session() as s:
        row = await s.get(PilotSession, started.session_id)
        assert row is not None
        # FP-020: step_count 1, the conversation as appended rows, tokens summed over both calls.
        assert (row.step_count, row.message_seq, row.kind, row.mode) == (1, 2, "guided", "ai")
        assert (row.total_input_tokens, row.total_output_tokens) == (50 + 200, 10 + 40)
        assert row.intake == {"text": COFFEE, "log_content": "E42: boiler"}
        roles = (await s.execute(select(SessionMessage.role).where(SessionMessage.session_id == row.id)
                                 .order_by(SessionMessage.seq))).scalars().all()
        # The intake is a message; the first step is its own conversation entry (seq 2), not a message as well.
        assert roles == ["user"]
        assert row.current_step_id == first.step_id
        step = await s.get(SessionStep, first.step_id)
        assert step is not None
        assert (step.seq, step.response_seq) == (2, None)
    assert [role for role, _ in await conversation(desk, started.session_id)] == ["user", "assistant"]


async def test_fp016_fp011_strong_flow_match_guides_the_prompt_and_forces_the_tier(desk: Desk) -> None:
    """FP-011, FP-016, FP-017 (usage counted) and FP-018 (team scripts in the prompt)."""
    await load_starter(desk)
    llm, model, _ = scripted(classification(), question(confidence=0.3))
    started = await desk.call(service.start_session, desk.deps(llm), desk.engineer, SessionCreate(text=OUTLOOK))
    assert started.matched_flow_name == "Outlook keeps asking for credentials (Microsoft 365)"
    assert started.match_score is not None
    assert started.match_score > 0.8
    # FP-011: the step said 0.3, the match lifts it to guided.
    assert (started.confidence_tier, started.confidence_score) == ("guided", 0.8)
    system = model.requests[1].messages[0].content
    assert '## MATCHED FLOW\nThe team has a runbook for problems like this one: "Outlook keeps asking' in system
    assert "- Ask: Does the prompt also appear in Outlook on the web" in system
    # FP-018: the team's scripts are offered.
    assert "## AVAILABLE SCRIPTS" in system
    assert "outlook-profile-reset" in system
    assert started.matched_flow_id is not None
    async with desk.session() as s:
        flow = await knowledge.get_flow(s, started.matched_flow_id)
        # FP-017: the match is counted.
        assert (flow.usage_count, flow.matched_count) == (1, 1)
        assert flow.last_matched_at is not None


async def test_fp008_classification_failure_falls_back(desk: Desk) -> None:
    llm, model, _ = scripted(ProviderUnavailable("down", model="test:scripted"), question())
    started = await desk.call(service.start_session, desk.deps(llm), desk.engineer, SessionCreate(text=COFFEE))
    assert started.problem_summary == COFFEE[:120]
    assert started.problem_domain == "other"
    assert started.urgency == "medium"
    assert "**Classified as:** " + COFFEE in model.requests[1].messages[1].content


async def test_fp013_intake_over_100_kb_is_refused_before_anything_is_stored(desk: Desk) -> None:
    llm, model, _ = scripted()
    with pytest.raises(IntakeTooLarge) as caught:
        await desk.call(service.start_session, desk.deps(llm), desk.engineer,
                        SessionCreate(text="Server down", log_content="x" * (100 * 1024)))
    assert caught.value.code == "intake_too_large"
    assert caught.value.status == 422
    assert "100 KB" in caught.value.detail
    with pytest.raises(IntakeEmpty):
        await desk.call(service.start_session, desk.deps(llm), desk.engineer, SessionCreate(text="  "))
    assert model.requests == []
    async with desk.session() as s:
        assert await s.scalar(select(func.count()).select_from(PilotSession)) == 0


async def test_no_llm_and_no_flow_keeps_the_intake_and_says_what_to_configure(desk: Desk) -> None:
    llm = LLM(LLMSettings())
    with pytest.raises(NoLLMNoFlow) as caught:
        await desk.call(service.start_session, desk.deps(llm), desk.engineer, SessionCreate(text=COFFEE))
    error = caught.value
    assert error.code == "no_llm_no_flow"
    assert error.detail == (
        "No LLM provider is configured and no flow matches this problem — configure DESKPILOT_LLM__DEFAULT_MODEL "
        "or add a flow"
    )
    session_id = uuid.UUID(error.extra["session_id"])
    detail = await desk.call(service.get_session, desk.engineer, session_id)
    # Nothing entered is lost: the session waits for its first step with the intake stored.
    assert detail.intake["text"] == COFFEE
    assert detail.awaiting_generation
    assert detail.generation_error == "llm_not_configured"
    assert detail.steps == []
    assert detail.problem_domain == "other"


async def test_no_llm_session_continues_in_flow_mode_once_a_flow_exists(desk: Desk) -> None:
    llm = LLM(LLMSettings())
    text = "Printer spooler keeps crashing and print jobs are stuck in the queue"
    with pytest.raises(NoLLMNoFlow) as caught:
        await desk.call(service.start_session, desk.deps(llm), desk.engineer, SessionCreate(text=text))
    await load_starter(desk)
    session_id = uuid.UUID(caught.value.extra["session_id"])
    turn = await desk.call(service.retry_generation, desk.deps(llm), desk.engineer, session_id)
    assert turn.mode == "flow"
    assert turn.next_step.content["flow_node_id"]
    detail = await desk.call(service.get_session, desk.engineer, session_id)
    assert detail.matched_flow_name == "Printing fails or jobs stuck in the queue"
    assert detail.matched_flow_id is not None
    assert turn.next_step.content["flow_id"] == str(detail.matched_flow_id)
    async with desk.session() as s:
        assert (await knowledge.get_flow(s, detail.matched_flow_id)).matched_count == 1


async def test_flow_mode_without_llm_walks_the_starter_runbook(desk: Desk) -> None:
    await load_starter(desk)
    deps = desk.deps(LLM(LLMSettings()))
    started = await desk.call(service.start_session, deps, desk.engineer, SessionCreate(text=OUTLOOK))
    assert started.mode == "flow"
    assert started.problem_domain == "other"  # keyword-only matching without a classifier
    first = started.first_step
    assert first.step_type == "question"
    assert first.content["flow_node_id"] == "scope"
    assert [o["value"] for o in first.options] == ["web-too", "desktop-only"]
    assert not first.allow_free_text
    turn = await desk.call(service.respond, deps, desk.engineer, started.session_id,
                           StepResponse(selected_option="desktop-only"))
    assert turn.next_step.content["flow_node_id"] == "recent-change"
    turn = await desk.call(service.respond, deps, desk.engineer, started.session_id,
                           StepResponse(selected_option="password"))
    step = turn.next_step
    assert (step.step_type, step.content["type"], step.content["flow_node_id"]) == ("action", "action",
                                                                                    "clear-credentials")
    turn = await desk.call(service.respond, deps, desk.engineer, started.session_id,
                           StepResponse(action_result={"success": True}))
    assert turn.resolution_suggested
    assert turn.next_step.content["flow_node_id"] == "fixed-credentials"
    assert turn.step_count == 4
    async with desk.session() as s:
        # The conversation is recorded in flow mode too, so an LLM can take over with full context: the intake
        # message, then each step and answer on its step row.
        count = await s.scalar(select(func.count()).where(SessionMessage.session_id == started.session_id))
        assert count == 1
    entries = await conversation(desk, started.session_id)
    assert [role for role, _ in entries] == ["user", *["assistant", "user"] * 3, "assistant"]
    assert entries[2][1] == "Selected: Only desktop Outlook"
    assert '"type":"question"' in entries[1][1]


async def test_flow_mode_script_step_names_the_template_by_id(desk: Desk) -> None:
    await load_starter(desk)
    deps = desk.deps(LLM(LLMSettings()))
    started = await desk.call(service.start_session, deps, desk.engineer, SessionCreate(text=OUTLOOK))
    sid = started.session_id
    for response in (StepResponse(selected_option="desktop-only"), StepResponse(selected_option="join"),
                     StepResponse(action_result={"success": False, "details": "PRT stays NO"})):
        turn = await desk.call(service.respond, deps, desk.engineer, sid, response)
    content = turn.next_step.content
    assert content["flow_node_id"] == "new-profile"
    assert content["action_type"] == "script_generation"
    assert content["template_slug"] == "outlook-profile-reset"
    async with desk.session() as s:
        template = await knowledge.get_template_by_slug(s, desk.account_id, "outlook-profile-reset")
    assert template is not None
    assert content["template_id"] == str(template.id)


async def test_provider_down_at_start_falls_back_to_the_matched_flow(desk: Desk) -> None:
    await load_starter(desk)
    down = ProviderUnavailable("503 from provider", model="test:scripted")
    llm, _, _ = scripted(classification(), down)
    started = await desk.call(service.start_session, desk.deps(llm), desk.engineer, SessionCreate(text=OUTLOOK))
    assert started.mode == "flow"
    assert started.first_step.content["flow_node_id"] == "scope"


async def test_provider_down_without_a_flow_stores_the_session_for_a_retry(desk: Desk) -> None:
    llm, model, _ = scripted(classification(), ProviderUnavailable("503", model="test:scripted"))
    with pytest.raises(StepGenerationFailed) as caught:
        await desk.call(service.start_session, desk.deps(llm), desk.engineer, SessionCreate(text=COFFEE))
    assert caught.value.extra["cause"] == "llm_provider_unavailable"
    model.add(action())
    session_id = uuid.UUID(caught.value.extra["session_id"])
    turn = await desk.call(service.retry_generation, desk.deps(llm), desk.engineer, session_id)
    assert turn.next_step.step_order == 0
    assert turn.mode == "ai"
    assert model.requests[-1].messages[1].content.startswith("I need help troubleshooting")


def ticket_handler(requests: list[httpx.Request], *, context_status: int = 200) -> httpx.MockTransport:
    context = {
        "ticket": {"id": "4711", "summary": "Outlook prompts for password", "priority": "High", "status": "New"},
        "company": {"id": "c1", "name": "Contoso Ltd"},
        "notes": [{"text": "User says it started after the password change", "author": "Dispatcher"}],
    }

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if request.method == "GET":
            return httpx.Response(context_status, json=context)
        return httpx.Response(200, json={"id": f"note-{len(requests)}"})

    return httpx.MockTransport(handle)


async def webhook_connection(desk: Desk) -> str:
    async with desk.session() as s:
        connection = await psa.create_connection(
            s, desk.secrets, account_id=desk.account_id, name="Receiver", kind="webhook",
            settings={"url": "http://psa.test/hook", "context_url": "http://psa.test/tickets/{ticket_id}"},
            credentials={"secret": "whsec-0123456789abcdef"},
        )
        await s.commit()
        return str(connection.id)


async def test_fp014_ticket_intake_loads_context_into_intake_and_prompt(desk: Desk) -> None:
    """FP-013 ticket intake type; FP-014 context loaded into intake, classification and system prompt."""
    connection_id = await webhook_connection(desk)
    seen: list[httpx.Request] = []
    llm, model, _ = scripted(classification(), question())
    async with httpx.AsyncClient(transport=ticket_handler(seen)) as http:
        started = await desk.call(
            service.start_session, desk.deps(llm, psa_http_client=http), desk.engineer,
            SessionCreate(psa_connection_id=connection_id, psa_ticket_id="4711"),
        )
    assert started.psa_context_status == "loaded"
    assert seen[0].url.path == "/tickets/4711"
    assert "Ticket #4711: Outlook prompts for password" in model.requests[0].last_user_text
    system = model.requests[1].messages[0].content
    assert "## PSA TICKET CONTEXT" in system
    assert "Contoso Ltd" in system
    detail = await desk.call(service.get_session, desk.engineer, started.session_id)
    assert detail.intake["ticket_data"] == {"summary": "Outlook prompts for password", "company": "Contoso Ltd",
                                            "priority": "High"}
    assert detail.ticket_data is not None
    assert detail.ticket_data["company"]["name"] == "Contoso Ltd"
    assert detail.intake_type == "psa_ticket"


async def test_fp014_ticket_context_failure_is_not_fatal(desk: Desk) -> None:
    connection_id = await webhook_connection(desk)
    llm, model, _ = scripted(classification(), question())
    async with httpx.AsyncClient(transport=ticket_handler([], context_status=503)) as http:
        started = await desk.call(
            service.start_session, desk.deps(llm, psa_http_client=http), desk.engineer,
            SessionCreate(text="Outlook prompts", psa_connection_id=connection_id, psa_ticket_id="4711"),
        )
    assert started.psa_context_status == "unavailable"
    assert "PSA TICKET CONTEXT" not in model.requests[1].messages[0].content


async def test_client_name_is_kept_on_the_intake(desk: Desk) -> None:
    from deskpilot.identity import service as identity

    async with desk.session() as s:
        client = await identity.create_client(s, account_id=desk.account_id, name="Northwind")
        await s.commit()
    llm, _, recorder = scripted(classification(), question())
    started = await desk.call(service.start_session, desk.deps(llm), desk.engineer,
                              SessionCreate(text=COFFEE, client_id=client.id))
    detail = await desk.call(service.get_session, desk.engineer, started.session_id)
    assert detail.client_id == client.id
    assert detail.intake["client_name"] == "Northwind"
    # Cost per client: every call of the session names the client.
    assert all(c.context is not None and c.context.client_id == client.id for c in recorder.calls)
    assert json.loads(detail.model_dump_json())["steps"][0]["step_order"] == 0


async def test_fp020_steps_are_rows_not_a_snapshot(desk: Desk) -> None:
    llm, _, _ = scripted(classification(), question())
    started = await desk.call(service.start_session, desk.deps(llm), desk.engineer, SessionCreate(text=COFFEE))
    async with desk.session() as s:
        assert await s.scalar(select(func.count()).where(SessionStep.session_id == started.session_id)) == 1
        assert not hasattr(PilotSession, "conversation_messages")
