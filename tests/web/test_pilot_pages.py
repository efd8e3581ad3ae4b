"""Pilot pages over HTTP: intake, step forms, branches, lifecycle dialogs, escalation queue, documentation, PSA."""

from __future__ import annotations

import json
import re
import uuid

import httpx
import pytest

from deskpilot.api.state import AppState
from deskpilot.identity import service as identity
from deskpilot.identity.models import Role
from deskpilot.knowledge import service as knowledge
from deskpilot.llm import LLM
from deskpilot.llm.testing import Reply, ScriptedModel
from deskpilot.pilot.models import PilotSession
from deskpilot.psa import service as psa
from deskpilot.web.routes.pilot import markdown_html
from tests.conftest import Tenant
from tests.pilot.conftest import action, classification, fork, question, resolution
from tests.web.conftest import login

OUTLOOK = "Outlook keeps asking for my password"
_SESSION_URL = re.compile(r"^/pilot/([0-9a-f-]{36})")


def scripted(app_state: AppState, *items: str | Reply | BaseException) -> ScriptedModel:
    """Route every LLM call of the app to a scripted model (the console reads `state.llm` per request)."""
    model = ScriptedModel(items)
    app_state.llm = LLM.for_model(model)
    return model


async def load_starter(app_state: AppState, tenant: Tenant) -> None:
    async with app_state.db.session(tenant.account_id) as s:
        await knowledge.load_starter_library(s, tenant.account_id)
        await s.commit()


async def start(client: httpx.AsyncClient, csrf: str, text: str = OUTLOOK, **fields: str) -> uuid.UUID:
    response = await client.post("/pilot/sessions", data={"csrf_token": csrf, "text": text, **fields})
    assert response.status_code == 303, response.text
    found = _SESSION_URL.match(response.headers["location"])
    assert found, response.headers["location"]
    return uuid.UUID(found.group(1))


def htmx(csrf: str) -> dict[str, str]:
    return {"HX-Request": "true", "X-CSRF-Token": csrf}


def current_step_id(html: str) -> str:
    found = re.search(r'name="step_id" value="([0-9a-f-]{36})"', html)
    assert found, "no step form on the page"
    return found.group(1)


def branch_ids(html: str) -> dict[str, str]:
    """Branch label → id, from the branch map's switch/mark forms."""
    return {label: bid for bid, label in
            re.findall(r'/branches/([0-9a-f-]{36})/mark"[^>]*>\s*<input[^>]*>\s*<input[^>]*>\s*'
                       r'<button[^>]*aria-label="Mark (.+?) a dead end"', html)}


# --- home and intake ------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role), ids=[r.value for r in Role])
async def test_home_renders_per_role(client: httpx.AsyncClient, tenant_a: Tenant, role: Role) -> None:
    await login(client, role)
    page = await client.get("/pilot")
    assert page.status_code == 200
    html = page.text
    assert "<h1>Pilot</h1>" in html
    assert 'id="escalation-queue"' in html
    assert "My sessions" in html
    assert ('action="/pilot/sessions"' in html) is (role is not Role.VIEWER)
    if role is Role.VIEWER:
        assert "can read Pilot sessions but not start or work on them" in html
    # No LLM in the test settings: the page says Pilot runs in flow mode.
    assert 'id="flow-mode-note"' in html
    assert "0 approved runbooks" in html


async def test_viewer_cannot_start_a_session(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    csrf = await login(client, Role.VIEWER)
    refused = await client.post("/pilot/sessions", data={"csrf_token": csrf, "text": OUTLOOK})
    assert refused.status_code == 403
    assert "needs the &#39;engineer&#39; role" in refused.text


async def test_forms_need_the_csrf_token(client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState) -> None:
    await login(client, Role.ENGINEER)
    refused = await client.post("/pilot/sessions", data={"text": OUTLOOK})
    assert refused.status_code == 403
    assert "This form has expired" in refused.text
    async with app_state.db.session(tenant_a.account_id) as s:
        assert await s.get(PilotSession, uuid.uuid4()) is None
        assert (await s.execute(PilotSession.__table__.select())).first() is None


async def test_empty_and_oversized_intake_are_refused_inline(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    csrf = await login(client, Role.ENGINEER)
    empty = await client.post("/pilot/sessions", data={"csrf_token": csrf, "text": "  "})
    assert empty.status_code == 422
    assert 'role="alert" id="intake-error"' in empty.text
    assert "Describe the problem, paste log output or link a PSA ticket" in empty.text
    big = await client.post("/pilot/sessions", data={"csrf_token": csrf, "text": "short text",
                                                     "log_content": "x" * 110_000})
    assert big.status_code == 422
    assert "at most 100 KB is accepted" in big.text
    # Nothing typed is lost.
    assert ">short text</textarea>" in big.text
    assert "Traceback" not in big.text


async def test_a_nul_pasted_into_the_intake_is_dropped_not_a_server_error(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    """A browser user cannot see a NUL in pasted log output; PostgreSQL cannot store one. The form drops it."""
    await load_starter(app_state, tenant_a)
    scripted(app_state, classification(), question())
    csrf = await login(client, Role.ENGINEER)
    sid = await start(client, csrf, text=f"{OUTLOOK}\x00", log_content="Event 1098\x00: token broker error")
    async with app_state.db.session(tenant_a.account_id) as s:
        session = await s.get(PilotSession, sid)
        assert session is not None
        assert session.intake["text"] == OUTLOOK
        assert session.intake["log_content"] == "Event 1098: token broker error"


async def test_no_llm_and_no_flow_keeps_the_intake_and_retries_later(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    csrf = await login(client, Role.ENGINEER)
    response = await client.post("/pilot/sessions", data={"csrf_token": csrf, "text": OUTLOOK})
    assert response.status_code == 503
    assert "no runbook in Knowledge matches this problem" in response.text
    assert f">{OUTLOOK}</textarea>" in response.text
    saved = re.search(r'href="/pilot/([0-9a-f-]{36})">Open the saved session', response.text)
    assert saved
    sid = saved.group(1)
    page = await client.get(f"/pilot/{sid}")
    assert page.status_code == 200
    assert "The next step could not be generated" in page.text
    assert "No LLM provider is configured and no runbook in Knowledge matches this problem" in page.text
    assert f'action="/pilot/{sid}/retry"' in page.text
    # A runbook added later drives the session on retry.
    await load_starter(app_state, tenant_a)
    retried = await client.post(f"/pilot/{sid}/retry", data={"csrf_token": csrf})
    assert retried.status_code == 303
    page = await client.get(f"/pilot/{sid}")
    assert 'class="pill pill-mode-flow">Flow mode<' in page.text
    assert "Does the prompt also appear in Outlook on the web" in page.text


# --- an AI session over plain forms and htmx -------------------------------------------------------


async def test_ai_session_step_cards_history_and_badges(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    await load_starter(app_state, tenant_a)
    scripted(app_state, classification(), question(confidence=0.3),
             action(confidence=0.6, expected_outcome="No more prompts"), resolution())
    csrf = await login(client, Role.ENGINEER)
    sid = await start(client, csrf, log_content="Event 1098: token broker error")
    page = (await client.get(f"/pilot/{sid}")).text
    assert "Step 1 · Question" in page
    assert "Does the prompt appear in Outlook on the web too?" in page
    for label in ("Yes, web too", "Desktop only"):
        assert f">{label}</button>" in page
    assert "Send answer" in page
    assert "Skip — I can" in page
    # Matched starter flow above 0.8 forces the guided tier at start (FP-011); the chip shows name and score.
    assert 'class="chip chip-flow"' in page
    assert "Outlook keeps asking for credentials (Microsoft 365)" in page
    assert re.search(r'class="chip-score">\d+% match<', page)
    assert 'class="pill pill-tier-guided"' in page
    assert 'class="pill pill-mode-ai">AI<' in page
    assert 'id="flow-mode-explanation"' not in page
    assert "Event 1098: token broker error" in page

    # An htmx answer gets the session region back, with the new step announced.
    answered = await client.post(f"/pilot/{sid}/respond", headers=htmx(csrf), data={
        "step_id": current_step_id(page), "selected_option": "desktop", "free_text_input": "only on her laptop"})
    assert answered.status_code == 200
    fragment = answered.text
    assert fragment.lstrip().startswith('<div id="session"')
    assert "<html" not in fragment
    assert 'id="step-announcer" hx-swap-oob="innerHTML"' in fragment
    assert "Step 2 · Action · Instruction" in fragment
    assert "Clear the cached credentials in Credential Manager" in fragment
    assert "No more prompts" in fragment
    assert ">Worked</button>" in fragment
    assert ">Didn&#39;t work</button>" in fragment
    assert "Desktop only — only on her laptop" in fragment
    assert 'class="pill pill-tier-exploring"' in fragment

    # A plain form post redirects back to the page.
    worked = await client.post(f"/pilot/{sid}/respond", data={
        "csrf_token": csrf, "step_id": current_step_id(fragment), "answer": "success", "details": "prompt gone"})
    assert worked.status_code == 303
    assert worked.headers["location"] == f"/pilot/{sid}"
    page = (await client.get(f"/pilot/{sid}")).text
    assert "Suggested resolution" in page
    assert "Stale cached credentials; cleared them" in page
    assert "Watch for 24 hours" in page
    assert ">Resolve with this</button>" in page
    assert "Worked — prompt gone" in page


async def test_information_requests_and_the_script_builder(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    scripted(app_state, classification(),
             action("Send the output of dsregcmd /status", action_type="info_request"),
             action("Write a script that lists the user's Office credentials", action_type="open_script_builder",
                    script_prompt="List Credential Manager entries starting with MicrosoftOffice16",
                    script_language="powershell"))
    csrf = await login(client, Role.ENGINEER)
    sid = await start(client, csrf)
    page = (await client.get(f"/pilot/{sid}")).text
    assert "Step 1 · Action · Information needed" in page
    assert ">The information <span" in page
    assert ">Send information</button>" in page
    assert ">Not available</button>" in page
    page = (await client.post(f"/pilot/{sid}/respond", headers=htmx(csrf), data={
        "step_id": current_step_id(page), "answer": "success", "details": "AzureAdPrt : NO"})).text
    assert "Step 2 · Action · Write a script" in page
    assert "Language: PowerShell" in page
    assert 'id="script-prompt">List Credential Manager entries starting with MicrosoftOffice16</pre>' in page
    assert 'data-copy="script-prompt"' in page
    assert "Provided — AzureAdPrt : NO" in page


async def test_empty_answer_and_stale_step_are_refused_inline(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    scripted(app_state, classification(), question(), action())
    csrf = await login(client, Role.ENGINEER)
    sid = await start(client, csrf)
    page = (await client.get(f"/pilot/{sid}")).text
    step_id = current_step_id(page)
    empty = await client.post(f"/pilot/{sid}/respond", headers=htmx(csrf), data={"step_id": step_id})
    assert empty.status_code == 422
    assert 'role="alert" id="session-error">Choose an option, type an answer or skip this step.' in empty.text
    unknown = await client.post(f"/pilot/{sid}/respond", data={"csrf_token": csrf, "step_id": step_id,
                                                              "selected_option": "nope"})
    assert unknown.status_code == 422
    assert "Option &#39;nope&#39; is not one of this step&#39;s options" in unknown.text
    assert "<h1" in unknown.text
    first = await client.post(f"/pilot/{sid}/respond", data={"csrf_token": csrf, "step_id": step_id,
                                                            "selected_option": "web"})
    assert first.status_code == 303
    again = await client.post(f"/pilot/{sid}/respond", headers=htmx(csrf), data={"step_id": step_id,
                                                                               "selected_option": "web"})
    assert again.status_code == 409
    assert "That step is no longer the current one; reload the session" in again.text


async def test_failed_generation_keeps_the_answer_and_offers_retry(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    model = scripted(app_state, classification(), question(), "not json", "still not json")
    csrf = await login(client, Role.ENGINEER)
    sid = await start(client, csrf)
    page = (await client.get(f"/pilot/{sid}")).text
    failed = await client.post(f"/pilot/{sid}/respond", headers=htmx(csrf), data={
        "step_id": current_step_id(page), "selected_option": "web"})
    assert failed.status_code == 200
    assert "The next step could not be generated" in failed.text
    assert "llm_invalid_output" in failed.text
    assert "Your answer is saved" in failed.text
    assert ">Retry</button>" in failed.text
    assert "Yes, web too" in failed.text  # the answer is in the history
    model.add(action(content="Check the sign-in logs in Entra"))
    retried = await client.post(f"/pilot/{sid}/retry", headers=htmx(csrf), data={})
    assert retried.status_code == 200
    assert "Check the sign-in logs in Entra" in retried.text
    assert "could not be generated" not in retried.text
    nothing = await client.post(f"/pilot/{sid}/retry", data={"csrf_token": csrf})
    assert nothing.status_code == 409
    assert "This session is not waiting for a step" in nothing.text


async def test_fork_switch_mark_and_revive_branches(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    scripted(app_state, classification(), question(), action(), fork("Token broker", "Outlook profile"),
             question("Is the new profile connecting?", options=(("Yes", "yes"), ("No", "no"))),
             action("Re-register the token broker"))
    csrf = await login(client, Role.ENGINEER)
    sid = await start(client, csrf)
    page = (await client.get(f"/pilot/{sid}")).text
    page = (await client.post(f"/pilot/{sid}/respond", headers=htmx(csrf), data={
        "step_id": current_step_id(page), "selected_option": "desktop"})).text
    page = (await client.post(f"/pilot/{sid}/respond", headers=htmx(csrf), data={
        "step_id": current_step_id(page), "answer": "failure", "details": "still prompts"})).text
    assert "Fork: several explanations" in page
    assert "Token broker or profile" in page
    assert 'aria-label="Start with Outlook profile"' in page
    ids = branch_ids(page)
    assert set(ids) == {"Token broker", "Outlook profile"}
    assert 'aria-label="Switch to Outlook profile"' in page
    assert 'class="pill pill-branch-untried">Untried<' in page

    switched = (await client.post(f"/pilot/{sid}/branches/{ids['Outlook profile']}/switch", headers=htmx(csrf),
                                  data={})).text
    assert "Is the new profile connecting?" in switched
    assert "Branch: Outlook profile" in switched
    assert 'aria-label="Switch to Token broker"' in switched
    assert "Chose</span> Outlook profile" in switched

    marked = await client.post(f"/pilot/{sid}/branches/{ids['Token broker']}/mark", headers=htmx(csrf),
                               data={"status": "dead_end"})
    assert marked.status_code == 200
    assert 'class="pill pill-branch-dead_end">Dead end<' in marked.text
    assert f'action="/pilot/{sid}/branches/{ids["Token broker"]}/revive"' in marked.text
    empty = await client.post(f"/pilot/{sid}/branches/{ids['Token broker']}/revive", headers=htmx(csrf),
                              data={"evidence": " "})
    assert empty.status_code == 422
    assert "Say what new evidence reopens this branch." in empty.text
    revived = await client.post(f"/pilot/{sid}/branches/{ids['Token broker']}/revive", headers=htmx(csrf),
                                data={"evidence": "dsregcmd shows AzureAdPrt NO"})
    assert revived.status_code == 200
    assert 'class="pill pill-branch-revived">Revived<' in revived.text
    assert "Re-register the token broker" in revived.text
    bad = await client.post(f"/pilot/{sid}/branches/{ids['Token broker']}/mark", headers=htmx(csrf),
                            data={"status": "exploded"})
    assert bad.status_code == 422


# --- lifecycle --------------------------------------------------------------------------------------


async def test_pause_resume_and_wrong_state_messages_inline(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    scripted(app_state, classification(), question())
    csrf = await login(client, Role.ENGINEER)
    sid = await start(client, csrf)
    step_id = current_step_id((await client.get(f"/pilot/{sid}")).text)
    paused = await client.post(f"/pilot/{sid}/pause", data={"csrf_token": csrf})
    assert paused.headers["location"] == f"/pilot/{sid}?done=paused"
    page = (await client.get(f"/pilot/{sid}?done=paused")).text
    assert "Session paused. Resume it when you are ready." in page
    assert 'class="pill pill-status-paused">Paused<' in page
    assert f'action="/pilot/{sid}/resume"' in page
    assert "Resume the session to answer this step." in page
    refused = await client.post(f"/pilot/{sid}/respond", headers=htmx(csrf), data={"step_id": step_id,
                                                                                 "selected_option": "web"})
    assert refused.status_code == 409
    assert "Session is paused, not active" in refused.text
    again = await client.post(f"/pilot/{sid}/pause", data={"csrf_token": csrf})
    assert again.status_code == 409
    assert 'id="session-error">Cannot pause session in status: paused' in again.text
    assert "Traceback" not in again.text
    assert (await client.post(f"/pilot/{sid}/resume", data={"csrf_token": csrf})).status_code == 303
    assert 'class="pill pill-status-active">Active<' in (await client.get(f"/pilot/{sid}")).text


async def test_resolve_from_the_suggestion_and_read_the_documentation(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    scripted(app_state, classification(), question(), resolution())
    csrf = await login(client, Role.ENGINEER)
    sid = await start(client, csrf)
    step_id = current_step_id((await client.get(f"/pilot/{sid}")).text)
    await client.post(f"/pilot/{sid}/respond", data={"csrf_token": csrf, "step_id": step_id,
                                                    "selected_option": "desktop"})
    missing = await client.post(f"/pilot/{sid}/resolve", data={"csrf_token": csrf, "resolution_summary": " "})
    assert missing.status_code == 422
    assert "Write a resolution summary" in missing.text
    assert re.search(r'<details class="popover" data-popover\s+open>\s*<summary class="btn btn-primary">Resolve',
                     missing.text)
    resolved = await client.post(f"/pilot/{sid}/resolve", data={
        "csrf_token": csrf, "resolution_summary": "Stale cached credentials; cleared them", "rating": "5"})
    assert resolved.status_code == 303
    assert resolved.headers["location"] == f"/pilot/{sid}/documentation?done=resolved"
    doc = await client.get(resolved.headers["location"])
    assert doc.status_code == 200
    html = doc.text
    assert "<h1>Documentation</h1>" in html
    assert "Session resolved. Its documentation is below." in html
    assert "<h2>Outlook keeps prompting for a password</h2>" in html
    assert "<h3>Diagnostic steps</h3>" in html
    assert "<strong>Engineer response:</strong> Desktop only" in html
    assert "<h3>Resolution</h3>" in html
    assert "No PSA" in html
    # The scripted model counts as a configured LLM, so communications can be generated.
    assert ">Generate</button>" in html
    assert 'id="comms-no-llm"' not in html
    for audience in ("Ticket notes", "Client update", "Request info", "Email draft"):
        assert f"<span>{audience}</span>" in html
    again = await client.post(f"/pilot/{sid}/resolve", data={"csrf_token": csrf, "resolution_summary": "again"})
    assert again.status_code == 409
    assert "Cannot resolve session in status: resolved" in again.text
    rated = await client.post(f"/pilot/{sid}/rate", data={"csrf_token": csrf, "rating": "4", "feedback": "ok"})
    assert rated.headers["location"] == f"/pilot/{sid}/documentation?done=rated"
    assert "Rated 4 of 5" in (await client.get(f"/pilot/{sid}/documentation")).text


async def test_abandon_with_reason(client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState) -> None:
    scripted(app_state, classification(), question())
    csrf = await login(client, Role.ENGINEER)
    sid = await start(client, csrf)
    closed = await client.post(f"/pilot/{sid}/abandon", data={"csrf_token": csrf, "reason": "Duplicate ticket"})
    assert closed.headers["location"] == f"/pilot/{sid}?done=abandoned"
    page = (await client.get(f"/pilot/{sid}")).text
    assert "Closed without a resolution" in page
    assert "Reason: Duplicate ticket" in page
    assert f'action="/pilot/{sid}/respond"' not in page
    assert f'action="/pilot/{sid}/resolve"' not in page


async def test_communications_generate_and_keep_updates(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    scripted(app_state, classification(), question(), "Hi Contoso, we are checking your Outlook sign-in.",
             "## Problem Summary\nOutlook prompts.")
    csrf = await login(client, Role.ENGINEER)
    sid = await start(client, csrf)
    made = await client.post(f"/pilot/{sid}/communications", headers=htmx(csrf), data={
        "audience": "client_update", "context": "status", "length": "quick"})
    assert made.status_code == 200
    assert "<html" not in made.text
    assert "Client update · Progress update · Quick" in made.text
    assert 'id="comms-output-text">Hi Contoso, we are checking your Outlook sign-in.</pre>' in made.text
    assert 'data-copy="comms-output-text"' in made.text
    full = await client.post(f"/pilot/{sid}/communications", data={
        "csrf_token": csrf, "audience": "ticket_notes", "context": "status", "length": "full"})
    assert full.status_code == 200
    assert "<h1>Documentation</h1>" in full.text
    assert "## Problem Summary" in full.text
    assert "Earlier updates" in full.text
    assert full.text.count('class="update-list"') == 1
    bad = await client.post(f"/pilot/{sid}/communications", headers=htmx(csrf), data={
        "audience": "everyone", "context": "status", "length": "quick"})
    assert bad.status_code == 422
    assert "Choose an audience, a context and a length" in bad.text
    session_page = (await client.get(f"/pilot/{sid}")).text
    assert "Status update" in session_page


async def test_communications_without_an_llm_say_so(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    await load_starter(app_state, tenant_a)
    csrf = await login(client, Role.ENGINEER)
    sid = await start(client, csrf)
    doc = (await client.get(f"/pilot/{sid}/documentation")).text
    assert 'id="comms-no-llm"' in doc
    assert re.search(r"<button type=\"submit\" class=\"btn btn-primary\" disabled>Generate</button>", doc)
    made = await client.post(f"/pilot/{sid}/communications", headers=htmx(csrf), data={
        "audience": "ticket_notes", "context": "status", "length": "quick"})
    assert made.status_code == 200
    assert "no LLM provider is configured" in made.text
    plain = await client.post(f"/pilot/{sid}/communications", data={
        "csrf_token": csrf, "audience": "ticket_notes", "context": "status", "length": "quick"})
    assert plain.status_code == 503


# --- flow mode --------------------------------------------------------------------------------------


async def test_flow_mode_session_walks_the_runbook(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    await load_starter(app_state, tenant_a)
    csrf = await login(client, Role.ENGINEER)
    sid = await start(client, csrf)
    page = (await client.get(f"/pilot/{sid}")).text
    assert 'class="pill pill-mode-flow">Flow mode<' in page
    assert "No LLM configured — this session follows the runbook" in page
    assert "“Outlook keeps asking for credentials (Microsoft 365)”" in page
    # Runbook questions take only their options.
    assert 'name="free_text_input"' not in page
    assert "Skip — I can" not in page
    for option in ("desktop-only", "password"):
        page = (await client.post(f"/pilot/{sid}/respond", headers=htmx(csrf), data={
            "step_id": current_step_id(page), "selected_option": option})).text
    assert "Remove every" in page or "Credential Manager" in page
    page = (await client.post(f"/pilot/{sid}/respond", headers=htmx(csrf), data={
        "step_id": current_step_id(page), "answer": "failure"})).text
    assert "dsregcmd /status" in page
    page = (await client.post(f"/pilot/{sid}/respond", headers=htmx(csrf), data={
        "step_id": current_step_id(page), "answer": "failure"})).text
    # The runbook's script step shows the starter template filled with its default parameters.
    assert "Run a script" in page
    assert "Create a fresh Outlook profile" in page
    assert "$ProfileName = &#39;Outlook-New&#39;" in page
    assert 'data-copy="script-text"' in page
    assert "?p.profile_name=Outlook-New\">Change the parameters in the script library</a>" in page
    page = (await client.post(f"/pilot/{sid}/respond", headers=htmx(csrf), data={
        "step_id": current_step_id(page), "answer": "success"})).text
    assert "Corrupt Outlook profile replaced with a new one" in page
    resolved = await client.post(f"/pilot/{sid}/resolve", data={
        "csrf_token": csrf, "resolution_summary": "Corrupt Outlook profile replaced with a new one"})
    assert resolved.status_code == 303
    doc = (await client.get(f"/pilot/{sid}/documentation")).text
    assert "Flow mode" in doc
    assert "Corrupt Outlook profile replaced" in doc
    # FP-021: the next session about the same problem shows the resolved one as solved before.
    again = await start(client, csrf, "Outlook keeps asking for the password again after a reboot")
    page = (await client.get(f"/pilot/{again}")).text
    assert "Solved before" in page
    assert "Corrupt Outlook profile replaced with a new one" in page


# --- escalation and pickup -----------------------------------------------------------------------


async def test_escalate_to_the_team_and_pick_up_from_the_queue(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    scripted(app_state, classification(), question(),
             Reply.json({"remaining_hypotheses": ["Token broker"], "suggested_next_steps": ["Run dsregcmd"],
                         "steps_ruled_out": []}),
             action("Run dsregcmd /status and read AzureAdPrt"))
    csrf = await login(client, Role.ENGINEER)
    sid = await start(client, csrf)
    page = (await client.get(f"/pilot/{sid}")).text
    assert "The whole team (Service Desk)" in page
    assert "Acme IT Lead" in page  # a colleague to escalate to
    no_reason = await client.post(f"/pilot/{sid}/escalate", data={"csrf_token": csrf, "reason": ""})
    assert no_reason.status_code == 422
    assert "Say why you escalate" in no_reason.text
    to_self = await client.post(f"/pilot/{sid}/escalate", data={
        "csrf_token": csrf, "reason": "help", "target_user_id": str(tenant_a.users[Role.ENGINEER])})
    assert to_self.status_code == 409
    assert "Cannot escalate a session to yourself. Use pause instead." in to_self.text
    escalated = await client.post(f"/pilot/{sid}/escalate", data={"csrf_token": csrf,
                                                                 "reason": "Needs Entra admin rights"})
    assert escalated.headers["location"] == f"/pilot/{sid}?done=escalated"
    page = (await client.get(f"/pilot/{sid}")).text
    assert "Waiting for a colleague to pick this up" in page
    assert "Needs Entra admin rights" in page
    assert "Token broker" in page
    assert "Run dsregcmd" in page
    assert f'action="/pilot/{sid}/pickup"' not in page  # not for the engineer who escalated it
    home = (await client.get("/pilot")).text
    assert "Waiting for a colleague" in home

    csrf = await login(client, Role.LEAD)
    # A team member may open the escalated session and pick it up there too.
    waiting = (await client.get(f"/pilot/{sid}")).text
    assert f'action="/pilot/{sid}/pickup"' in waiting
    assert f'action="/pilot/{sid}/respond"' not in waiting
    home = (await client.get("/pilot")).text
    assert f'id="queue-{sid}"' in home
    assert "Escalated by Acme IT Engineer" in home
    assert "“Needs Entra admin rights”" in home
    assert f'action="/pilot/{sid}/pickup"' in home
    bad = await client.post(f"/pilot/{sid}/pickup", data={"csrf_token": csrf, "resume_mode": "sideways",
                                                          "origin": "queue"})
    assert bad.status_code == 422
    assert 'class="row-message row-error" role="alert"' in bad.text
    picked = await client.post(f"/pilot/{sid}/pickup", data={"csrf_token": csrf, "resume_mode": "continue",
                                                             "origin": "queue"})
    assert picked.headers["location"] == f"/pilot/{sid}?done=picked-up"
    page = (await client.get(picked.headers["location"])).text
    assert "You picked the session up" in page
    assert "Escalation briefing" in page
    assert "<h3>Escalation Briefing</h3>" in page
    assert "<strong>Reason:</strong> Needs Entra admin rights" in page
    assert "Run dsregcmd /status and read AzureAdPrt" in page
    assert "Picked up by" in page
    assert f'id="queue-{sid}"' not in (await client.get("/pilot")).text


# --- access -------------------------------------------------------------------------------------------


async def test_other_accounts_get_404_and_colleagues_403(
    client: httpx.AsyncClient, tenant_a: Tenant, tenant_b: Tenant, app_state: AppState
) -> None:
    scripted(app_state, classification(), question())
    csrf = await login(client, Role.ENGINEER)
    sid = await start(client, csrf)
    csrf_b = await login(client, Role.ENGINEER, slug="globex-support")
    for path in (f"/pilot/{sid}", f"/pilot/{sid}/documentation"):
        page = await client.get(path)
        assert page.status_code == 404, path
        assert "Session not found" in page.text
    posted = await client.post(f"/pilot/{sid}/pause", data={"csrf_token": csrf_b})
    assert posted.status_code == 404
    step = await client.post(f"/pilot/{sid}/respond", headers=htmx(csrf_b), data={"selected_option": "web"})
    assert step.status_code == 404
    assert "<html" not in step.text
    assert (await client.get(f"/pilot/{uuid.uuid4()}")).status_code == 404
    await login(client, Role.LEAD)
    colleague = await client.get(f"/pilot/{sid}")
    assert colleague.status_code == 403
    assert "Not your session" in colleague.text


# --- PSA: ticket picker, push result and retry -----------------------------------------------------


class Receiver:
    """The customer's webhook receiver: ticket context and search on GET, notes on POST (failing on demand)."""

    def __init__(self) -> None:
        self.fail_posts = True
        self.posts: list[dict[str, object]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path == "/search":
            return httpx.Response(200, json=[{"id": "4711", "summary": "Outlook prompts for password",
                                              "company": "Contoso Ltd", "status": "New"}])
        if request.method == "GET":
            return httpx.Response(200, json={
                "ticket": {"id": "4711", "summary": "Outlook prompts for password", "priority": "High"},
                "company": {"id": "c1", "name": "Contoso Ltd"}})
        self.posts.append(json.loads(request.content))
        if self.fail_posts:
            return httpx.Response(503, text="receiver down")
        return httpx.Response(200, json={"id": f"ext-{len(self.posts)}"})


async def test_ticket_picker_push_failure_and_retry(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    receiver = Receiver()
    await app_state.http.aclose()
    app_state.http = httpx.AsyncClient(transport=httpx.MockTransport(receiver))
    async with app_state.db.session(tenant_a.account_id) as s:
        connection = await psa.create_connection(
            s, app_state.secrets, account_id=tenant_a.account_id, name="Receiver", kind="webhook",
            settings={"url": "http://psa.test/hook", "context_url": "http://psa.test/tickets/{ticket_id}",
                      "search_url": "http://psa.test/search"},
            credentials={"secret": "whsec-0123456789abcdef"})
        await identity.create_client(s, account_id=tenant_a.account_id, name="Contoso Ltd")
        await s.commit()
    scripted(app_state, classification(), question())
    csrf = await login(client, Role.ENGINEER)
    home = (await client.get("/pilot")).text
    assert "PSA ticket" in home
    assert 'id="ticket-search"' in home
    assert ">Contoso Ltd</option>" in home
    found = await client.get("/pilot/tickets", params={"q": "outlook", "psa_connection_id": str(connection.id)},
                             headers={"HX-Request": "true"})
    assert found.status_code == 200
    assert 'data-ticket-id="4711"' in found.text
    assert "Outlook prompts for password" in found.text
    unchosen = await client.get("/pilot/tickets", params={"q": "outlook"}, headers={"HX-Request": "true"})
    assert "Choose a PSA connection first." in unchosen.text

    sid = await start(client, csrf, psa_connection_id=str(connection.id), psa_ticket_id="#4711")
    page = (await client.get(f"/pilot/{sid}")).text
    assert "#4711" in page
    resolved = await client.post(f"/pilot/{sid}/resolve", data={"csrf_token": csrf,
                                                               "resolution_summary": "Reset the token broker"})
    assert resolved.status_code == 303
    doc = (await client.get(f"/pilot/{sid}/documentation")).text
    assert "Push failed" in doc
    assert "receiver down" in doc or "503" in doc
    assert "No time entry was logged" in doc
    push_id = re.search(r'/pushes/([0-9a-f-]{36})/retry', doc)
    assert push_id
    receiver.fail_posts = False
    retried = await client.post(f"/pilot/{sid}/pushes/{push_id.group(1)}/retry", data={"csrf_token": csrf})
    assert retried.headers["location"] == f"/pilot/{sid}/documentation?done=push-retried"
    doc = (await client.get(retried.headers["location"])).text
    assert "The PSA push was sent again." in doc
    assert 'class="pill pill-ok">Pushed<' in doc
    assert "Retry push" not in doc
    done = await client.post(f"/pilot/{sid}/pushes/{push_id.group(1)}/retry", data={"csrf_token": csrf})
    assert done.status_code == 409
    assert "already went through" in done.text


# --- pieces -------------------------------------------------------------------------------------------


def test_markdown_renderer_escapes_html_and_renders_blocks() -> None:
    html = str(markdown_html(
        "# Title <script>alert(1)</script>\n\nSome **bold** and `code` here.\nNext line\n\n"
        "- one\n- two <b>\n  continued\n\n1. first\n2. second\n\n```\n<tag> & stuff\n```\nunpaired ` tick"
    ))
    assert "<script>" not in html
    assert "<b>" not in html
    assert "<h2>Title &lt;script&gt;alert(1)&lt;/script&gt;</h2>" in html
    assert "<p>Some <strong>bold</strong> and <code>code</code> here.<br>Next line</p>" in html
    assert "<ul><li>one</li><li>two &lt;b&gt;<br>continued</li></ul>" in html
    assert "<ol><li>first</li><li>second</li></ol>" in html
    assert "<pre><code>&lt;tag&gt; &amp; stuff</code></pre>" in html
    assert "<p>unpaired ` tick</p>" in html
    assert str(markdown_html(None)) == ""


async def test_dashboard_links_to_pilot_and_knowledge(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    await login(client, Role.ENGINEER)
    html = (await client.get("/")).text
    for href in ("/pilot", "/knowledge"):
        assert f'<a href="{href}">\n        <svg class="icon icon-lg"' in html
