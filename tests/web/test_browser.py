"""The console in a real headless Chromium against a live server: sign in, navigate, tokens, narrow layout, bell."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from deskpilot.events import notifications
from deskpilot.identity.models import Role
from deskpilot.web.nav import SECTIONS
from tests.web.conftest import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, PASSWORD, LiveServer, email_of, require_chromium

pytestmark = pytest.mark.browser

require_chromium()

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

WIDE = {"width": 1280, "height": 860}
NARROW = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


def _new_page(browser: Browser, live_server: LiveServer, viewport: dict[str, int] = WIDE) -> Page:
    context = browser.new_context(base_url=live_server.url, viewport=viewport)  # type: ignore[arg-type]
    context.set_default_timeout(5000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Pages answer 401/403/422 on purpose (a wrong password); only broken assets and script errors count.
    page.on("console", lambda msg: errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}")
            if r.request.resource_type in ("script", "stylesheet", "image", "font") and r.status >= 400 else None)
    page.errors = errors  # type: ignore[attr-defined]
    return page


def _sign_in(page: Page, role: Role = Role.OWNER) -> None:
    page.goto("/login")
    page.get_by_label("Email address").fill(email_of(role))
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Welcome")


def _shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _assert_accessible_basics(page: Page) -> None:
    """Landmarks, one h1, and a label for every visible form control."""
    assert page.locator("header").count() == 1
    assert page.locator("main#main").count() == 1
    assert page.locator("h1").count() == 1
    unlabelled = page.evaluate(
        """() => Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea'))
              .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
              .map(el => el.outerHTML)"""
    )
    assert unlabelled == []


@pytest.fixture
def page(browser: Browser, live_server: LiveServer) -> Iterator[Page]:
    page = _new_page(browser, live_server)
    yield page
    # Closing the context also closes the page's SSE stream, which would otherwise hold up server shutdown.
    page.context.close()
    assert page.errors == []  # type: ignore[attr-defined]


@pytest.fixture
def narrow_page(browser: Browser, live_server: LiveServer) -> Iterator[Page]:
    page = _new_page(browser, live_server, NARROW)
    yield page
    page.context.close()
    assert page.errors == []  # type: ignore[attr-defined]


def test_sign_in_and_visit_every_section(page: Page) -> None:
    page.goto("/settings/team")
    expect(page).to_have_url(re.compile(r"/login\?next=/settings/team$"))
    _assert_accessible_basics(page)
    _shot(page, "login")

    page.get_by_label("Email address").fill(email_of(Role.OWNER))
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("email address or password is wrong")
    expect(page.get_by_label("Email address")).to_have_value(email_of(Role.OWNER))
    _shot(page, "login-error")

    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/settings/team$"))

    page.goto("/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Welcome, Acme IT Owner")
    _assert_accessible_basics(page)
    _shot(page, "dashboard")

    nav = page.get_by_role("navigation", name="Sections")
    for section in SECTIONS:
        nav.get_by_role("link", name=section.label, exact=True).click()
        expect(nav.get_by_role("link", name=section.label, exact=True)).to_have_attribute("aria-current", "page")
        if section.key == "settings":
            expect(page).to_have_url(re.compile(r"/settings/profile$"))
        else:
            expect(page.get_by_role("heading", level=1)).to_have_text(section.label)
        _assert_accessible_basics(page)
        _shot(page, f"section-{section.key}")

    for tab, name in (("Team & users", "settings-team"), ("Profile", "settings-profile")):
        page.get_by_role("navigation", name="Settings").get_by_role("link", name=tab).click()
        _assert_accessible_basics(page)
        _shot(page, name)

    page.get_by_role("navigation", name="Settings").get_by_role("link", name="Team & users").click()
    engineer_row = page.locator("tr", has_text=email_of(Role.ENGINEER))
    engineer_row.get_by_label("Role of Acme IT Engineer").select_option("lead")
    engineer_row.get_by_role("button", name="Save").click()
    expect(page.locator("tr", has_text=email_of(Role.ENGINEER)).get_by_role("status")).to_have_text("Saved.")

    page.locator("summary", has_text="Acme IT Owner").click()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login$"))


def test_create_use_and_revoke_api_token(page: Page, live_server: LiveServer) -> None:
    _sign_in(page, Role.ENGINEER)
    page.goto("/settings/tokens")
    page.get_by_label("Token name").fill("browser test")
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_role("heading", name="Copy your new token now")).to_be_visible()
    secret = page.get_by_label("New API token").input_value()
    assert secret.startswith("dp_")
    expect(page.get_by_role("button", name="Copy")).to_be_visible()
    _assert_accessible_basics(page)
    _shot(page, "settings-tokens-created")

    me = httpx.get(f"{live_server.url}/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200
    assert me.json()["email"] == email_of(Role.ENGINEER)

    page.goto("/settings/tokens")
    assert secret not in page.content()
    row = page.locator("tr", has_text="browser test")
    row.locator("summary", has_text="Revoke").click()
    row.get_by_role("button", name="Yes, revoke browser test").click()
    expect(page.locator("tr", has_text="browser test")).to_contain_text("Revoked")
    _shot(page, "settings-tokens")

    after = httpx.get(f"{live_server.url}/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert after.status_code == 401


def test_narrow_screen_hides_navigation_behind_menu_button(narrow_page: Page) -> None:
    page = narrow_page
    _sign_in(page)
    nav = page.get_by_role("navigation", name="Sections")
    menu = page.get_by_role("button", name="Menu")
    expect(menu).to_be_visible()
    expect(menu).to_have_attribute("aria-expanded", "false")
    expect(nav).to_be_hidden()
    _shot(page, "narrow-dashboard")

    menu.click()
    expect(menu).to_have_attribute("aria-expanded", "true")
    expect(nav).to_be_visible()
    _shot(page, "narrow-menu-open")
    nav.get_by_role("link", name="Knowledge").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Knowledge")
    expect(nav).to_be_hidden()

    page.goto("/settings/team")
    _shot(page, "narrow-settings-team")
    # Nothing may overflow the viewport sideways except inside the scrollable table wrapper.
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= NARROW["width"]


def test_menu_works_without_javascript(browser: Browser, live_server: LiveServer) -> None:
    context = browser.new_context(base_url=live_server.url, viewport=NARROW,  # type: ignore[arg-type]
                                  java_script_enabled=False)
    context.set_default_timeout(5000)
    page = context.new_page()
    page.goto("/login")
    page.get_by_label("Email address").fill(email_of(Role.VIEWER))
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    nav = page.get_by_role("navigation", name="Sections")
    expect(nav).to_be_hidden()
    page.get_by_role("link", name="Menu").click()
    expect(nav).to_be_visible()
    nav.get_by_role("link", name="Approvals").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Approvals")
    _shot(page, "narrow-no-javascript")
    context.close()


def test_bell_shows_new_notification_via_server_sent_events(page: Page, live_server: LiveServer) -> None:
    _sign_in(page, Role.LEAD)
    expect(page.locator("body")).to_have_attribute("data-stream-state", "open")
    expect(page.locator("#bell-count .badge")).to_have_count(0)

    async def publish() -> None:
        tenant = live_server.tenant
        async with live_server.state.db.session(tenant.account_id) as session:
            await notifications.notify(
                session, live_server.state.pubsub, account_id=tenant.account_id, user_id=tenant.users[Role.LEAD],
                kind="approval.requested", title="Automation “Nightly backup check” waits for approval",
                body="Drafted from Dana's intent; review the steps before it runs.", link="/approvals",
            )

    live_server.call(publish())
    expect(page.locator("#bell-count .badge")).to_have_text("1")
    page.locator("summary", has_text="Notifications").click()
    panel = page.locator("#bell-panel")
    expect(panel.get_by_role("link", name=re.compile("Nightly backup check"))).to_have_attribute("href", "/approvals")
    _shot(page, "bell-open")

    panel.get_by_role("button", name="Mark all read").click()
    expect(page.locator("#bell-count .badge")).to_have_count(0)
    expect(panel.get_by_role("button", name="Mark all read")).to_have_count(0)

    page.goto("/notifications")
    _assert_accessible_basics(page)
    _shot(page, "notifications")

