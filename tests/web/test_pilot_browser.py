"""Pilot and Knowledge in a real headless Chromium: a whole AI session with a scripted model, and flow mode."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import select

from deskpilot.identity.models import Role
from deskpilot.knowledge.models import Flow, FlowSource, FlowStatus
from deskpilot.llm import LLM
from deskpilot.llm.messages import Message, RequestParams
from deskpilot.llm.testing import FunctionModel, Reply
from deskpilot.security import passwords
from tests.conftest import cheap_hasher
from tests.web.conftest import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    LiveServer,
    _live_server,
    email_of,
    require_chromium,
)

pytestmark = pytest.mark.browser

require_chromium()

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

WIDE = {"width": 1280, "height": 900}
NARROW = {"width": 390, "height": 844}
OUTLOOK = "Outlook keeps asking for my password"
_TEMPLATE_ID = re.compile(r"Create a fresh Outlook profile \(ID: ([0-9a-f-]{36})")


# --- the scripted model: answers by what the conversation asks for ----------------------------------


def _last_user(messages: Sequence[Message]) -> str:
    return next((m.content for m in reversed(messages) if m.role == "user"), "")


def _step(messages: Sequence[Message]) -> dict[str, Any]:
    """The next troubleshooting step, chosen from the engineer's last message, as a real model would."""
    last = _last_user(messages)
    if last.startswith("I need help troubleshooting"):
        return {"type": "question", "content": "Does the prompt also appear in Outlook on the web?",
                "context_message": "Tells an account problem from a client problem", "confidence": 0.35,
                "options": [{"label": "Web sign-in fails too", "value": "web"},
                            {"label": "Only desktop Outlook", "value": "desktop"}],
                "allow_free_text": True, "allow_skip": True}
    if "Selected: Only desktop Outlook" in last:
        return {"type": "action", "action_type": "instruction", "confidence": 0.55,
                "content": "Close Outlook and remove the MicrosoftOffice16 entries in Credential Manager.",
                "context_message": "Stale cached credentials are the most common cause",
                "expected_outcome": "Outlook signs in once and stops prompting"}
    if "Action did not work." in last:
        return {"type": "fork", "content": "Two causes fit what we have seen equally well.", "confidence": 0.5,
                "context_message": "Investigating one will not rule out the other",
                "fork_reason": "The token broker or a corrupt Outlook profile",
                "options": [{"label": "Token broker", "description": "Check the Windows token broker (PRT)"},
                            {"label": "Outlook profile", "description": "Replace the Outlook profile"}]}
    if last.startswith("[Branch: Token broker]"):
        return {"type": "question", "content": "What does dsregcmd /status show for AzureAdPrt?",
                "confidence": 0.5, "options": [{"label": "YES", "value": "yes"}, {"label": "NO", "value": "no"}],
                "allow_free_text": True, "allow_skip": True}
    if last.startswith("[Branch: Outlook profile]"):
        found = _TEMPLATE_ID.search(messages[0].content)
        assert found, "the system prompt lists the starter scripts"
        return {"type": "action", "action_type": "script_generation", "confidence": 0.7,
                "content": "Create a fresh Outlook profile with the script and make it the default.",
                "context_message": "A corrupt profile keeps the old token cache",
                "expected_outcome": "The new profile connects without prompting",
                "template_id": found.group(1), "pre_filled_params": {"profile_name": "Outlook-Fresh"}}
    if last.startswith("[Picking up escalated session]"):
        return {"type": "question", "content": "Does Outlook connect with the new profile without prompting?",
                "confidence": 0.8, "options": [{"label": "Yes, it connects", "value": "yes"},
                                               {"label": "No, still prompting", "value": "no"}],
                "allow_free_text": True, "allow_skip": True}
    return {"type": "resolution_suggestion", "content": "The corrupt Outlook profile caused the prompts.",
            "resolution_summary": "Replaced the corrupt Outlook profile; Outlook connects without prompting.",
            "follow_up_recommendations": ["Re-add the shared mailboxes to the new profile"], "confidence": 0.95}


DRAFTED_FLOW = {
    "name": "Outlook prompts after a profile corruption", "problem_domain": "m365",
    "description": "Drafted from a resolved session: credentials, token broker, then a fresh profile.",
    "tags": ["outlook"], "symptoms": ["Outlook keeps asking for the password"],
    "definition": {"start": "scope", "nodes": [
        {"id": "scope", "type": "question", "text": "Only in desktop Outlook?",
         "options": [{"value": "yes", "label": "Yes", "next": "profile"},
                     {"value": "no", "label": "No, web too", "next": "escalate"}]},
        {"id": "profile", "type": "action", "text": "Create a fresh Outlook profile",
         "on_success": "fixed", "on_failure": "escalate"},
        {"id": "fixed", "type": "resolution", "text": "Profile replaced; Outlook connects."},
        {"id": "escalate", "type": "resolution", "outcome": "escalate", "text": "Escalate to the M365 admin."},
    ]},
}


def pilot_model(messages: Sequence[Message], params: RequestParams) -> Reply:
    kind = params.output.name if params.output is not None else None
    if kind == "IntakeClassification":
        return Reply.json({"problem_summary": "Outlook prompts for the password repeatedly", "problem_domain": "m365",
                           "key_symptoms": ["password prompt"], "urgency": "medium"})
    if kind == "EscalationInsights":
        return Reply.json({"remaining_hypotheses": ["Corrupt Outlook profile"],
                           "suggested_next_steps": ["Run the fresh-profile script"],
                           "steps_ruled_out": ["Token broker (PRT is fine)"]})
    if kind == "FlowDraft":
        return Reply.json(DRAFTED_FLOW)
    if kind is None:
        return Reply("Hello Contoso team,\n\nWe replaced the Outlook profile on the affected laptop and Outlook "
                     "now connects without asking for the password.\n\nAcme IT Lead")
    return Reply(json.dumps(_step(messages)))


# --- servers and pages ------------------------------------------------------------------------------


def _serve(tmp_path_factory: pytest.TempPathFactory, llm: LLM | None) -> Iterator[LiveServer]:
    """The app on loopback with the starter library loaded and, when given, a scripted LLM."""
    return _live_server(tmp_path_factory, llm=llm, starter_library=True)


@pytest.fixture(scope="module")
def ai_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(passwords, "_hasher", cheap_hasher())
        yield from _serve(tmp_path_factory, LLM.for_model(FunctionModel(pilot_model, name="test:pilot")))


@pytest.fixture(scope="module")
def flow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(passwords, "_hasher", cheap_hasher())
        yield from _serve(tmp_path_factory, None)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


class Pages:
    """Opens pages in fresh browser contexts; at teardown closes them and fails on script or asset errors."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.opened: list[tuple[Page, list[str]]] = []

    def open(self, server: LiveServer, viewport: dict[str, int] = WIDE, *, javascript: bool = True) -> Page:
        context = self.browser.new_context(base_url=server.url, viewport=viewport,  # type: ignore[arg-type]
                                           java_script_enabled=javascript)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
        context.set_default_timeout(8000)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # Pages answer 4xx on purpose (a refused form); only broken assets and script errors count.
        page.on("console", lambda msg: errors.append(msg.text)
                if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
        page.on("response", lambda r: errors.append(f"{r.status} {r.url}")
                if r.request.resource_type in ("script", "stylesheet", "image", "font") and r.status >= 400
                else None)
        self.opened.append((page, errors))
        return page

    def close(self) -> list[str]:
        # Closing a context also closes its SSE stream, which would otherwise hold up server shutdown.
        errors: list[str] = []
        for page, page_errors in self.opened:
            page.context.close()
            errors += page_errors
        return errors


@pytest.fixture
def pages(browser: Browser) -> Iterator[Pages]:
    opened = Pages(browser)
    yield opened
    assert opened.close() == []


def _sign_in(page: Page, role: Role) -> None:
    page.goto("/login")
    page.get_by_label("Email address").fill(email_of(role))
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Welcome")


def _sign_out(page: Page, name: str) -> None:
    page.locator("summary", has_text=name).click()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("You are signed out.")


def _shot(page: Page, name: str) -> None:
    # From the top: a full-page capture of a scrolled page would paint the sticky top bar mid-page.
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _assert_accessible_basics(page: Page) -> None:
    """Landmarks, one h1, a label for every visible form control, nothing wider than the viewport."""
    assert page.locator("header").count() == 1
    assert page.locator("main#main").count() == 1
    assert page.locator("h1").count() == 1
    unlabelled = page.evaluate(
        """() => Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea'))
              .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
              .map(el => el.outerHTML)"""
    )
    assert unlabelled == []
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0


def _button(page: Page, name: str) -> Any:
    return page.get_by_role("button", name=name, exact=True)


def _summary(page: Page, text: str) -> Any:
    return page.locator("summary", has_text=re.compile(f"^{re.escape(text)}$"))


def _branch(page: Page, label: str) -> Any:
    return page.locator(".branch-map .branch-row", has_text=label)


def _step_heading(page: Page) -> Any:
    return page.locator("#current-step-title")


# --- a whole AI session -------------------------------------------------------------------------------


def test_whole_ai_session_in_the_browser(pages: Pages, ai_server: LiveServer) -> None:
    page = pages.open(ai_server)
    _sign_in(page, Role.ENGINEER)
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Pilot", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Pilot")
    expect(page.locator("#flow-mode-note")).to_have_count(0)
    _assert_accessible_basics(page)
    _shot(page, "pilot-home")

    # Intake: problem text and a pasted log.
    page.get_by_label("Problem description").fill(OUTLOOK + " since this morning, on her laptop only.")
    page.locator("summary", has_text="Paste log output").click()
    page.get_by_label("Log output").fill("Event 1098 AAD Error: 0xCAA20003 Authorization grant failed")
    _button(page, "Start session").click()

    # Question card: options, free text, skip; tier badge and score, matched flow chip, AI mode.
    expect(page.get_by_role("heading", level=1)).to_have_text("Outlook prompts for the password repeatedly")
    expect(_step_heading(page)).to_have_text("Step 1 · Question")
    expect(page.locator(".step-text")).to_have_text("Does the prompt also appear in Outlook on the web?")
    expect(page.locator(".pill-tier-guided")).to_contain_text("Guided")
    expect(page.locator(".chip-flow")).to_contain_text("Outlook keeps asking for credentials (Microsoft 365)")
    expect(page.locator(".chip-flow .chip-score")).to_have_text(re.compile(r"^\d+% match$"))
    expect(page.locator(".pill-mode-ai")).to_have_text("AI")
    expect(_button(page, "Skip — I can't check this now")).to_be_visible()
    expect(page.get_by_label("Or answer in your own words")).to_be_visible()
    _assert_accessible_basics(page)
    _shot(page, "pilot-session-question")

    _button(page, "Only desktop Outlook").click()
    expect(_step_heading(page)).to_have_text("Step 2 · Action · Instruction")
    expect(page.locator("#step-announcer")).to_contain_text("New step: Action.")
    expect(_step_heading(page)).to_be_focused()
    expect(page.locator(".expected")).to_contain_text("Outlook signs in once and stops prompting")
    expect(page.locator(".timeline")).to_contain_text("Only desktop Outlook")
    expect(page.locator(".pill-tier-exploring")).to_contain_text("55%")
    _shot(page, "pilot-session-action")

    page.get_by_label("What did you see?").fill("Still prompts after clearing the credentials")
    _button(page, "Didn't work").click()
    expect(_step_heading(page)).to_have_text("Step 3 · Fork: several explanations")
    expect(page.locator(".fork-option")).to_have_count(2)
    branch_map = page.locator(".branch-map")
    expect(_branch(page, "Token broker").locator(".pill-branch-active")).to_be_visible()
    expect(_branch(page, "Outlook profile").locator(".pill-branch-untried")).to_be_visible()
    _assert_accessible_basics(page)
    _shot(page, "pilot-session-fork")

    # Switch branch in the sidebar: answers the fork and opens the other hypothesis.
    _button(page, "Switch to Outlook profile").click()
    expect(_step_heading(page)).to_have_text("Step 4 · Action · Run a script")
    expect(page.locator(".step-card .pill-quiet")).to_have_text("Branch: Outlook profile")
    expect(page.locator(".script-title")).to_have_text("Create a fresh Outlook profile")
    expect(page.locator(".params")).to_contain_text("Outlook-Fresh")
    expect(page.locator("#script-text")).to_contain_text("$ProfileName = 'Outlook-Fresh'")
    _button(page, "Copy script").click()
    expect(_button(page, "Copied")).to_be_visible()
    assert "$ProfileName = 'Outlook-Fresh'" in page.evaluate("() => navigator.clipboard.readText()")
    expect(_branch(page, "Outlook profile").locator(".pill-current")).to_be_visible()
    _button(page, "Mark Token broker a dead end").click()
    expect(_branch(page, "Token broker").locator(".pill-branch-dead_end")).to_be_visible()
    expect(branch_map.locator("summary", has_text="Revive with new evidence")).to_be_visible()
    _shot(page, "pilot-session-branches")

    # Escalate to the whole team.
    _summary(page, "Escalate").click()
    expect(page.get_by_label("Escalate to", exact=True)).to_have_value("")
    page.get_by_label("Reason", exact=True).fill("The new profile needs Exchange admin checks I cannot do")
    _shot(page, "pilot-dialog-escalate")
    _button(page, "Escalate session").click()
    expect(page.locator(".flash-ok")).to_have_text("Session escalated. Your team has been notified.")
    expect(page.locator(".session-meta .pill-status-requesting_escalation")).to_have_text("Escalated")
    expect(page.get_by_role("heading", name="Waiting for a colleague to pick this up")).to_be_visible()
    expect(page.locator(".banner-escalated")).to_contain_text("Corrupt Outlook profile")
    _shot(page, "pilot-session-escalated")
    _sign_out(page, "Acme IT Engineer")

    # Another engineer of the team picks it up from the queue.
    _sign_in(page, Role.LEAD)
    expect(page.locator("#bell-count .badge")).to_have_text("1")
    page.goto("/pilot")
    item = page.locator(".queue-item", has_text="Outlook prompts for the password repeatedly")
    expect(item).to_contain_text("Escalated by Acme IT Engineer to the team")
    _shot(page, "pilot-escalation-queue")
    item.locator("summary", has_text="Pick up").click()
    expect(item.get_by_label("Continue from where it stopped")).to_be_checked()
    item.get_by_label("Additional context").fill("I have Exchange admin rights")
    _shot(page, "pilot-dialog-pickup")
    item.get_by_role("button", name="Pick up and brief me").click()
    expect(page.locator(".flash-ok")).to_contain_text("You picked the session up")
    briefing = page.locator(".timeline-item.kind-briefing")
    expect(briefing.get_by_role("heading", name="Escalation Briefing")).to_be_visible()
    expect(briefing).to_contain_text("Escalated by: Acme IT Engineer")
    expect(briefing).to_contain_text("Remaining hypotheses")
    expect(page.locator(".step-text")).to_have_text("Does Outlook connect with the new profile without prompting?")
    _assert_accessible_basics(page)
    _shot(page, "pilot-session-briefing")

    _button(page, "Yes, it connects").click()
    expect(_step_heading(page)).to_contain_text("Suggested resolution")
    expect(page.locator(".resolution-box")).to_contain_text("Replaced the corrupt Outlook profile")
    expect(page.locator(".pill-tier-guided")).to_contain_text("95%")
    _shot(page, "pilot-session-resolution")
    _summary(page, "Resolve").click()
    expect(page.get_by_label("Resolution summary")).to_have_value(re.compile("^Replaced the corrupt Outlook profile"))
    _shot(page, "pilot-dialog-resolve")
    _summary(page, "Resolve").click()
    _button(page, "Resolve with this").click()

    # Documentation: rendered markdown, PSA result, communications with copy.
    expect(page.get_by_role("heading", level=1)).to_have_text("Documentation")
    expect(page.locator(".flash-ok")).to_have_text("Session resolved. Its documentation is below.")
    doc = page.locator("article.documentation")
    expect(doc.get_by_role("heading", name="Diagnostic steps")).to_be_visible()
    expect(doc.get_by_role("heading", name="Resolution", exact=True)).to_be_visible()
    expect(doc).to_contain_text("Engineer response: Only desktop Outlook")
    expect(page.locator(".psa-panel")).to_contain_text("No PSA")
    page.locator("label.tab-radio", has_text="Client update").click()
    page.locator(".segmented label", has_text="Resolution").click()
    _button(page, "Generate").click()
    output = page.locator("#comms-output-text")
    expect(output).to_contain_text("We replaced the Outlook profile")
    expect(page.locator(".comms-output h3")).to_have_text("Client update · Resolution · Quick")
    page.locator(".comms-output").get_by_role("button", name="Copy").click()
    expect(page.locator(".comms-output").get_by_role("button", name="Copied")).to_be_visible()
    _assert_accessible_basics(page)
    _shot(page, "pilot-documentation")

    # The knowledge flywheel drafts a runbook from the resolved session; a lead approves it in Knowledge.
    draft_id = _wait_for_flywheel_draft(ai_server)
    page.goto("/knowledge")
    drafts = page.locator(".drafts-panel")
    expect(drafts).to_contain_text("Outlook prompts after a profile corruption")
    expect(drafts.locator(".pill-source-flywheel")).to_have_text("Flywheel")
    _shot(page, "knowledge-flows-with-draft")
    drafts.get_by_role("link", name="Outlook prompts after a profile corruption").click()
    expect(page).to_have_url(re.compile(f"/knowledge/flows/{draft_id}$"))
    expect(page.locator(".flow-node")).to_have_count(4)
    _assert_accessible_basics(page)
    _shot(page, "knowledge-flow-draft")
    _button(page, "Approve").click()
    expect(page.locator(".flash-ok")).to_have_text("Flow approved: Pilot now matches it to new sessions.")
    expect(page.locator(".page-head .pill-flow-approved")).to_have_text("Approved")


def _wait_for_flywheel_draft(server: LiveServer) -> uuid.UUID:
    """The flywheel job runs in the background after resolve; poll the database until its draft is there."""

    async def draft() -> uuid.UUID | None:
        tenant = server.tenant
        async with server.state.db.session(tenant.account_id) as s:
            return await s.scalar(select(Flow.id).where(Flow.source == FlowSource.FLYWHEEL,
                                                        Flow.status == FlowStatus.DRAFT))

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = server.call(draft())
        if found is not None:
            return found
        time.sleep(0.1)
    raise AssertionError("the flywheel drafted no flow within 15 s")


def test_session_pages_fit_a_narrow_screen(pages: Pages, ai_server: LiveServer) -> None:
    page = pages.open(ai_server, NARROW)
    _sign_in(page, Role.ENGINEER)
    page.goto("/pilot")
    _assert_accessible_basics(page)
    _shot(page, "pilot-narrow-home")
    page.get_by_label("Problem description").fill(OUTLOOK)
    _button(page, "Start session").click()
    expect(_step_heading(page)).to_have_text("Step 1 · Question")
    _button(page, "Only desktop Outlook").click()
    expect(_step_heading(page)).to_have_text("Step 2 · Action · Instruction")
    _button(page, "Didn't work").click()
    expect(page.locator(".fork-option")).to_have_count(2)
    _assert_accessible_basics(page)
    _shot(page, "pilot-narrow-session")
    _summary(page, "Escalate").click()
    expect(page.get_by_label("Reason", exact=True)).to_be_visible()
    _shot(page, "pilot-narrow-dialog")
    page.keyboard.press("Escape")
    expect(page.get_by_label("Reason", exact=True)).to_be_hidden()
    page.goto(page.url + "/documentation")
    _assert_accessible_basics(page)
    _shot(page, "pilot-narrow-documentation")


# --- flow mode without an LLM ----------------------------------------------------------------------


def test_flow_mode_session_without_an_llm(pages: Pages, flow_server: LiveServer) -> None:
    page = pages.open(flow_server)
    _sign_in(page, Role.ENGINEER)
    page.goto("/pilot")
    expect(page.locator("#flow-mode-note")).to_contain_text("No LLM provider is configured")
    page.get_by_label("Problem description").fill(OUTLOOK)
    _button(page, "Start session").click()

    expect(page.locator(".session-meta .pill-mode-flow")).to_have_text("Flow mode")
    explanation = page.locator("#flow-mode-explanation")
    expect(explanation).to_contain_text("No LLM configured — this session follows the runbook")
    expect(explanation).to_contain_text("Outlook keeps asking for credentials (Microsoft 365)")
    expect(_step_heading(page)).to_have_text("Step 1 · Question")
    expect(page.get_by_label("Or answer in your own words")).to_have_count(0)
    _assert_accessible_basics(page)
    _shot(page, "pilot-flow-question")

    _button(page, "Only desktop Outlook").click()
    expect(page.locator(".step-text")).to_contain_text("Did the user's password change recently")
    _button(page, "Password changed recently").click()
    expect(_step_heading(page)).to_have_text("Step 3 · Action · Instruction")
    expect(page.locator(".step-text")).to_contain_text("Credential Manager")
    expect(page.locator(".step-why")).to_contain_text("Next step of the runbook")
    _shot(page, "pilot-flow-action")
    page.get_by_label("What did you see?").fill("Removed two MicrosoftOffice16_Data entries")
    _button(page, "Worked").click()
    expect(_step_heading(page)).to_contain_text("Suggested resolution")
    expect(page.locator(".resolution-box")).to_contain_text("Stale cached credentials removed")
    _shot(page, "pilot-flow-resolution")
    _button(page, "Resolve with this").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Documentation")
    doc = page.locator("article.documentation")
    expect(doc).to_contain_text("Engineer response: Password changed recently")
    expect(doc).to_contain_text("Outcome: Succeeded — Removed two MicrosoftOffice16_Data entries")
    expect(page.locator("#comms-no-llm")).to_contain_text("no LLM provider is configured")
    expect(_button(page, "Generate")).to_be_disabled()
    _assert_accessible_basics(page)
    _shot(page, "pilot-flow-documentation")


def test_session_works_without_javascript(pages: Pages, flow_server: LiveServer) -> None:
    page = pages.open(flow_server, javascript=False)
    _sign_in(page, Role.ENGINEER)
    page.goto("/pilot")
    page.get_by_label("Problem description").fill(OUTLOOK)
    _button(page, "Start session").click()
    expect(_step_heading(page)).to_have_text("Step 1 · Question")
    _button(page, "Web sign-in fails too").click()
    expect(_step_heading(page)).to_have_text("Step 2 · Action · Instruction")
    expect(page.locator(".timeline")).to_contain_text("Web sign-in fails too")
    _summary(page, "Escalate").click()
    expect(page.get_by_label("Reason", exact=True)).to_be_visible()
    _summary(page, "Escalate").click()
    _button(page, "Pause").click()
    expect(page.locator(".flash-ok")).to_have_text("Session paused. Resume it when you are ready.")
    expect(page.locator(".banner-paused")).to_be_visible()
    _button(page, "Resume").click()
    expect(page.locator(".session-meta .pill-status-active")).to_have_text("Active")
    _shot(page, "pilot-no-javascript")


def test_knowledge_library_pages(pages: Pages, flow_server: LiveServer) -> None:
    page = pages.open(flow_server)
    _sign_in(page, Role.VIEWER)
    page.goto("/knowledge")
    expect(page.get_by_role("heading", level=1)).to_have_text("Knowledge")
    page.get_by_label("Domain").select_option("m365")
    _button(page, "Filter").click()
    expect(page).to_have_url(re.compile(r"/knowledge\?domain=m365"))
    rows = page.locator("table.flows-table tbody tr")
    expect(rows.first).to_be_visible()
    assert rows.count() >= 3
    _assert_accessible_basics(page)
    _shot(page, "knowledge-flows")

    page.get_by_role("link", name="Outlook keeps asking for credentials (Microsoft 365)").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Outlook keeps asking for credentials (Microsoft 365)")
    expect(page.locator("#node-scope")).to_contain_text("Does the prompt also appear in Outlook on the web")
    page.locator("#node-scope").get_by_role("link").nth(1).click()
    expect(page).to_have_url(re.compile(r"#node-recent-change$"))
    with page.expect_download() as download:
        page.get_by_role("link", name="Export YAML").click()
    assert download.value.suggested_filename == "outlook-credential-prompts.yaml"
    _assert_accessible_basics(page)
    _shot(page, "knowledge-flow")
    _sign_out(page, "Acme IT Viewer")

    _sign_in(page, Role.ENGINEER)
    page.goto("/knowledge/scripts")
    expect(page.get_by_role("link", name="Create a fresh Outlook profile")).to_be_visible()
    _assert_accessible_basics(page)
    _shot(page, "knowledge-scripts")
    page.get_by_role("link", name="Create a fresh Outlook profile").click()
    page.get_by_label("Name of the new profile").fill("Outlook 2026")
    _button(page, "Render script").click()
    expect(page.locator("#rendered-script")).to_contain_text("$ProfileName = 'Outlook 2026'")
    _button(page, "Copy script").click()
    expect(_button(page, "Copied")).to_be_visible()
    page.get_by_label("Name of the new profile").fill("bad;name")
    _button(page, "Render script").click()
    expect(page.locator("#rendered [role=alert]")).to_contain_text("does not match the pattern")
    _assert_accessible_basics(page)
    _shot(page, "knowledge-script")
