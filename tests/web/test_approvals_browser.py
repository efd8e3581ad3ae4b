"""The Approvals inbox in a real headless Chromium: approve from a card, an invalid edit shown inline, reject."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest

from deskpilot.approvals import service as approvals
from deskpilot.approvals.models import SourceKind
from deskpilot.identity.models import Role
from tests.approvals.conftest import RESTART
from tests.web.conftest import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, PASSWORD, LiveServer, email_of, require_chromium

pytestmark = pytest.mark.browser

require_chromium()

from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright  # noqa: E402

WIDE = {"width": 1280, "height": 900}
NARROW = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


def _new_page(browser: Browser, live_server: LiveServer, viewport: dict[str, int]) -> tuple[Page, list[str]]:
    context = browser.new_context(base_url=live_server.url, viewport=viewport)  # type: ignore[arg-type]
    context.set_default_timeout(8000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Refused decisions answer 422 on purpose; only broken assets and script errors count.
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on(
        "response",
        lambda r: (
            errors.append(f"{r.status} {r.url}")
            if r.request.resource_type in ("script", "stylesheet", "image", "font") and r.status >= 400
            else None
        ),
    )
    return page, errors


@pytest.fixture
def page(browser: Browser, live_server: LiveServer) -> Iterator[Page]:
    page, errors = _new_page(browser, live_server, WIDE)
    yield page
    # Closing the context also closes the page's SSE stream, which would otherwise hold up server shutdown.
    page.context.close()
    assert errors == []


def _pause(live_server: LiveServer, call_id: str, host: str) -> uuid.UUID:
    tenant = live_server.tenant

    async def create() -> uuid.UUID:
        async with live_server.state.db.session(tenant.account_id) as session:
            request = await approvals.request_approval(
                session,
                tenant.account_id,
                tool=RESTART,
                tool_call_id=call_id,
                arguments={"host": host, "service": "Spooler"},
                source_kind=SourceKind.CHAT,
                source_id=uuid.uuid4(),
                requested_by_id=tenant.users[Role.ENGINEER],
                summary=f"Restart the print spooler on {host}",
            )
            await session.commit()
            return request.id

    return live_server.call(create())


def _sign_in(page: Page, role: Role) -> None:
    page.goto("/login")
    page.get_by_label("Email address").fill(email_of(role))
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Welcome")


def _card(page: Page, approval_id: uuid.UUID) -> Locator:
    return page.locator(f"#approval-{approval_id}")


def _assert_labelled(page: Page) -> None:
    unlabelled = page.evaluate(
        """() => Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea'))
              .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
              .map(el => el.outerHTML)"""
    )
    assert unlabelled == []
    assert page.locator("h1").count() == 1


def test_decide_from_the_cards(page: Page, live_server: LiveServer) -> None:
    approve_id = _pause(live_server, "browser_approve", "PRN-01")
    edit_id = _pause(live_server, "browser_edit", "PRN-02")
    reject_id = _pause(live_server, "browser_reject", "PRN-03")
    _sign_in(page, Role.LEAD)
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Approvals", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Approvals")
    expect(_card(page, approve_id)).to_contain_text("Restart the print spooler on PRN-01")
    expect(_card(page, approve_id).locator("pre")).to_contain_text('"host": "PRN-01"')
    _assert_labelled(page)
    page.screenshot(path=str(ARTIFACTS / "approvals-inbox.png"), full_page=True)

    # Approve: the card is swapped for its decided form in place.
    card = _card(page, approve_id)
    card.get_by_role("button", name="Approve", exact=True).click()
    expect(card).to_have_attribute("data-approval-status", "approved")
    expect(card.locator(".approval-outcome")).to_contain_text("Approved by Acme IT Lead")
    expect(card.get_by_role("button", name="Approve", exact=True)).to_have_count(0)

    # Edit with broken JSON: the problem shows inside the card, what was typed stays, nothing is decided.
    card = _card(page, edit_id)
    card.locator("summary", has_text="Edit arguments").click()
    card.get_by_label("Arguments (JSON)").fill('{"host": "PRN-22", ')
    card.get_by_role("button", name="Approve with these arguments").click()
    expect(card.get_by_role("alert")).to_contain_text("not valid JSON")
    expect(card.get_by_label("Arguments (JSON)")).to_have_value('{"host": "PRN-22", ')
    expect(card).to_have_attribute("data-approval-status", "pending")
    page.screenshot(path=str(ARTIFACTS / "approvals-edit-error.png"), full_page=True)
    card.get_by_label("Arguments (JSON)").fill('{"host": "PRN-22", "service": "Spooler"}')
    card.get_by_role("button", name="Approve with these arguments").click()
    expect(card).to_have_attribute("data-approval-status", "approved")
    expect(card).to_contain_text("Approved with edits")
    expect(card).to_contain_text('"host": "PRN-22"')

    # Reject with a reason.
    card = _card(page, reject_id)
    card.locator("summary", has_text="Reject").click()
    card.get_by_label(re.compile("^Reason for rejecting")).fill("Wrong printer")
    card.get_by_role("button", name="Reject this call").click()
    expect(card).to_have_attribute("data-approval-status", "rejected")
    expect(card).to_contain_text("Reason: Wrong printer")

    page.reload()
    for approval_id in (approve_id, edit_id, reject_id):
        expect(_card(page, approval_id)).to_have_count(0)
        expect(page.locator(f"#decided-{approval_id}")).to_have_count(1)
    expect(page.locator(f"#decided-{reject_id}")).to_contain_text("Rejected")
    page.screenshot(path=str(ARTIFACTS / "approvals-decided.png"), full_page=True)


def test_cards_fit_a_narrow_screen(browser: Browser, live_server: LiveServer) -> None:
    approval_id = _pause(live_server, "browser_narrow", "PRN-NARROW-WITH-A-LONG-HOST-NAME.contoso.example")
    page, errors = _new_page(browser, live_server, NARROW)
    try:
        _sign_in(page, Role.ENGINEER)
        page.goto("/approvals")
        card = _card(page, approval_id)
        card.locator("summary", has_text="Edit arguments").click()
        expect(card.get_by_label("Arguments (JSON)")).to_be_visible()
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
        page.screenshot(path=str(ARTIFACTS / "approvals-narrow.png"), full_page=True)
    finally:
        page.context.close()
    assert errors == []
