"""The Chat page in a real headless Chromium, against the live app with a scripted chat model.

Covers the streamed reply (shown word by word), the task lane, "What we know", the suggested-fix banner and its
outcome confirmation, an approval card that continues the turn, a reload in the middle of a reply, a second tab
following a turn it did not start, and the branch sidebar (switch, mark, revive, a fork inside a branch).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from deskpilot.identity.models import Role
from deskpilot.llm import LLM, MemoryRecorder
from deskpilot.llm.testing import Reply, tool_call
from deskpilot.security import passwords
from deskpilot.settings import LLMSettings
from tests.api.chat_support import ChatModel
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
OUTLOOK = "Outlook keeps asking for the password"
FIRST_REPLY = (
    "Let's check the cached credentials first.\n\n"
    "Run this and look for MicrosoftOffice16 entries:\n"
    "```\ncmdkey /list\n```\n"
    "Tell me what you find.\n\n"
    '[QUESTIONS]\n[{"text": "Does Outlook on the web prompt too?", "context": "Rules out the account"}]\n'
    "[/QUESTIONS]\n"
    '[ACTIONS]\n[{"label": "List cached credentials", "command": "cmdkey /list"}]\n[/ACTIONS]'
)


class BrowserChatModel(ChatModel):
    """`ChatModel` that can hold the next reply after its first word; released from the test thread."""

    def hold_next(self) -> None:
        self._released = asyncio.Event()
        self.hold = True


@pytest.fixture(scope="module")
def model() -> BrowserChatModel:
    return BrowserChatModel()


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory: pytest.TempPathFactory, model: BrowserChatModel) -> Iterator[LiveServer]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(passwords, "_hasher", cheap_hasher())
        # Vision-capable, so that a message may carry images (UC-003).
        llm = LLM.for_model(model, recorder=MemoryRecorder(), settings=LLMSettings(vision_models=[model.name]))
        yield from _live_server(tmp_path_factory, llm=llm, starter_library=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, chat_server: LiveServer, model: BrowserChatModel) -> Iterator[Page]:
    """A signed-in engineer's page; fails the test on script errors or broken assets."""
    model.replies.clear()
    model.hold = False
    context = browser.new_context(base_url=chat_server.url, viewport=WIDE)  # type: ignore[arg-type]
    context.set_default_timeout(8000)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    # 4xx answers are part of some flows (a refused request); only script errors and broken assets count.
    opened.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    opened.on(
        "response",
        lambda r: (
            errors.append(f"{r.status} {r.url}")
            if r.request.resource_type in ("script", "stylesheet") and r.status >= 400
            else None
        ),
    )
    opened.goto("/login")
    opened.get_by_label("Email address").fill(email_of(Role.ENGINEER))
    opened.get_by_label("Password").fill(PASSWORD)
    opened.get_by_role("button", name="Sign in").click()
    expect(opened.get_by_role("heading", level=1)).to_contain_text("Welcome")
    yield opened
    if model.hold:  # never leave a turn waiting: the server could not shut down
        chat_server.loop.call_soon_threadsafe(model.release)
    context.close()
    assert errors == []


def _release(server: LiveServer, model: BrowserChatModel) -> None:
    model.hold = False
    server.loop.call_soon_threadsafe(model.release)


def _new_chat(page: Page) -> None:
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Chat", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Chat")
    page.get_by_role("button", name="New chat").click()
    expect(page.locator("#chat-title")).to_have_text("New Chat")
    _ready(page)


def _ready(page: Page) -> None:
    """chat.js is deferred: wait until it has taken over the page (before that, Enter only adds a line)."""
    expect(page.locator("#chat")).to_have_attribute("data-ready", "true")


def _send(page: Page, text: str) -> None:
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_label("Message", exact=True).press("Enter")


def _assistant(page: Page) -> Any:
    return page.locator(".chat-msg.chat-assistant")


def _idle(page: Page) -> None:
    expect(page.locator("#chat")).to_have_attribute("data-busy", "false")


def _shot(page: Page, name: str) -> None:
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _assert_accessible_basics(page: Page) -> None:
    assert page.locator("h1").count() == 1
    unlabelled = page.evaluate(
        """() => Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea'))
              .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
              .map(el => el.outerHTML)"""
    )
    assert unlabelled == []
    assert page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth") <= 0


# --- tests ------------------------------------------------------------------------------------------


def test_a_streamed_reply_shows_word_by_word_then_the_task_lane(
    page: Page, chat_server: LiveServer, model: BrowserChatModel
) -> None:
    _new_chat(page)
    composer = page.get_by_label("Message", exact=True)
    composer.fill("first line")
    composer.press("Shift+Enter")
    composer.type("second line")
    expect(composer).to_have_value("first line\nsecond line")  # Shift+Enter is a new line, not a send
    expect(page.locator(".chat-msg")).to_have_count(0)

    model.hold_next()
    model.add(FIRST_REPLY)
    composer.fill(OUTLOOK)
    composer.press("Enter")
    expect(page.locator(".chat-msg.chat-user")).to_have_text(re.compile(OUTLOOK))
    # The first word is on screen while the model still holds the rest: the reply is streamed, not waited for.
    expect(_assistant(page)).to_contain_text("Let's")
    expect(page.locator("#chat")).to_have_attribute("data-busy", "true")
    expect(page.locator("#chat-send")).to_be_disabled()
    expect(composer).to_be_disabled()
    expect(page.locator("#chat-busy")).to_be_visible()
    assert "Tell me what you find." not in _assistant(page).inner_text()
    _release(chat_server, model)

    expect(_assistant(page)).to_contain_text("Tell me what you find.")
    expect(_assistant(page).locator("pre code")).to_have_text("cmdkey /list")
    assert "[QUESTIONS]" not in _assistant(page).inner_text()
    _idle(page)
    expect(composer).to_be_enabled()
    lane = page.locator("#chat-lane")
    expect(lane.locator(".lane-questions .lane-text")).to_have_text(["Does Outlook on the web prompt too?"])
    expect(lane.locator(".lane-actions .lane-text")).to_have_text(["List cached credentials"])
    expect(page.locator("#chat-title")).to_have_text("Outlook password prompts")
    expect(page).to_have_title(re.compile(r"^Outlook password prompts · Chat"))
    expect(page.locator("#chat-usage")).not_to_have_text("0 in · 0 out")
    expect(page.locator("#chat-model")).to_have_text("Model: test:chat")
    _assert_accessible_basics(page)
    _shot(page, "chat-streamed-reply")

    # Check a question with its answer, skip the action; both stick after a reload (task-lane PATCH).
    lane.get_by_label("Answer to: Does Outlook on the web prompt too?").fill("No, only the desktop app")
    lane.get_by_role("button", name="Check: Does Outlook on the web prompt too?").click()
    expect(lane.locator(".lane-done")).to_contain_text("Answer: No, only the desktop app")
    lane.get_by_role("button", name="Skip: List cached credentials").click()
    expect(lane.locator(".lane-skipped")).to_contain_text("Skipped")
    page.reload()
    _ready(page)
    expect(page.locator("#chat-lane .lane-done .lane-text")).to_have_text("Does Outlook on the web prompt too?")
    expect(page.locator("#chat-lane .lane-skipped .lane-text")).to_have_text("List cached credentials")
    expect(_assistant(page).locator("pre code")).to_have_text("cmdkey /list")


def test_promoted_fact_and_suggested_fix_then_the_ai_outcome_is_confirmed(
    page: Page, chat_server: LiveServer, model: BrowserChatModel
) -> None:
    _new_chat(page)
    title = "Clear the cached Office credentials"
    fix = {
        "title": title,
        "confidence": 80,
        "description": "Remove the MicrosoftOffice16 entries in Credential Manager, then restart Outlook.",
        "ai_drafted_script": "cmdkey /delete:MicrosoftOffice16_Data:SSPI:user",
        "ai_drafted_parameters": {},
    }
    promote = {
        "source_type": "ai_synthesis",
        "text": "Only the desktop Outlook prompts; the account is fine",
        "summary": "From the web check",
    }
    model.add(
        "The account works on the web, so the desktop client holds a stale token.\n\n"
        f"[PROMOTE]\n{json.dumps(promote)}\n[/PROMOTE]\n[SUGGEST_FIX]\n{json.dumps(fix)}\n[/SUGGEST_FIX]"
    )
    _send(page, "Outlook on the web works without prompting")
    _idle(page)

    facts = page.locator("#chat-facts")
    expect(facts.locator(".chat-fact-text")).to_have_text([promote["text"]])
    expect(facts.locator(".chat-fact .pill")).to_have_text(["AI synthesis"])
    banner = page.locator(".fix-banner")
    expect(banner).to_have_attribute("data-fix-status", "proposed")
    expect(banner.locator(".fix-title")).to_have_text(title)
    for name in ("Worked", "Partly", "Didn't work", "Dismiss"):
        expect(banner.get_by_role("button", name=re.compile(f"^{re.escape(name)}"))).to_be_visible()
    _shot(page, "chat-suggested-fix")

    # The engineer's own note: added, edited, shown with its provenance.
    page.get_by_label("Add a note").fill("User is on the VPN most days")
    page.get_by_role("button", name="Add note").click()
    note = facts.locator(".chat-fact", has_text="User is on the VPN most days")
    expect(note.locator(".pill")).to_have_text("User note")
    note.get_by_role("button", name="Edit: User is on the VPN most days").click()
    facts.get_by_label("Fact text").fill("User is on the VPN every day")
    facts.get_by_role("button", name="Save").click()
    expect(facts.locator(".chat-fact-text")).to_have_text([promote["text"], "User is on the VPN every day"])

    # The AI proposes that the fix worked; the engineer confirms.
    fix_id = banner.get_attribute("data-fix-id")
    outcome = {"fix_id": fix_id, "outcome": "success", "reason": "No prompt since the entries were removed"}
    model.add(f"Great, that sounds fixed.\n\n[FIX_OUTCOME]\n{json.dumps(outcome)}\n[/FIX_OUTCOME]")
    _send(page, "Cleared them, Outlook has not asked again")
    _idle(page)
    expect(banner.locator(".fix-proposal-text")).to_have_text("AI thinks it worked — confirm?")
    expect(banner).to_contain_text("No prompt since the entries were removed")
    _shot(page, "chat-fix-outcome-proposal")
    banner.get_by_role("button", name="Confirm").click()
    expect(banner).to_have_attribute("data-fix-status", "applied_success")
    expect(banner.locator(".fix-status")).to_have_text("Worked")
    expect(banner.get_by_role("button")).to_have_count(0)

    page.reload()
    expect(page.locator(".fix-banner")).to_have_attribute("data-fix-status", "applied_success")
    expect(page.locator("#chat-facts .chat-fact-text")).to_have_count(2)


def test_an_approval_card_continues_the_turn_when_approved(
    page: Page, chat_server: LiveServer, model: BrowserChatModel
) -> None:
    _new_chat(page)
    call = tool_call("post_ticket_note", {"ticket_id": "4711", "text": "Cleared cached credentials."})
    model.add(Reply.calls(call, text="I'll post a note to the ticket."), "Done: the note is recorded for ticket 4711.")
    _send(page, "Please note the fix on ticket 4711")

    card = page.locator(".chat-approval")
    expect(card).to_have_count(1)
    expect(card.locator(".approval-title")).to_have_text("post_ticket_note")
    expect(card.locator(".approval-args")).to_contain_text('"ticket_id": "4711"')
    _idle(page)
    _shot(page, "chat-approval-card")
    card.get_by_role("button", name="Approve", exact=True).click()

    expect(card.locator(".pill")).to_have_text("Approved")
    expect(_assistant(page).last).to_contain_text("Done: the note is recorded for ticket 4711.")
    _idle(page)
    expect(card.get_by_role("button")).to_have_count(0)
    # The approved call ran once and the continuation saw its result (no PSA is connected here: it says so).
    tool_results = [m.content for m in model.seen[-1] if m.role == "tool"]
    assert tool_results == ["No PSA connection is configured for this account; the note was not posted."]


def test_a_reload_in_the_middle_of_a_reply_shows_the_whole_reply(
    page: Page, chat_server: LiveServer, model: BrowserChatModel
) -> None:
    _new_chat(page)
    model.hold_next()
    model.add("The whole answer arrives after the page was reloaded, word by word.")
    _send(page, "VPN drops every ten minutes")
    expect(_assistant(page)).to_contain_text("The")
    page.reload()
    # The page reconnects to the running turn from its first event.
    expect(page.locator(".chat-msg.chat-user")).to_have_text(re.compile("VPN drops every ten minutes"))
    expect(page.locator("#chat")).to_have_attribute("data-busy", "true")
    expect(_assistant(page)).to_contain_text("The")
    _release(chat_server, model)
    expect(_assistant(page)).to_have_text(
        re.compile(r"The whole answer arrives after the page was reloaded, word by word\.$")
    )
    _idle(page)
    expect(_assistant(page)).to_have_count(1)
    # The user message was on the page already (rendered by the server): the stream's copy is not added again.
    expect(page.locator(".chat-msg.chat-user")).to_have_count(1)


def test_a_message_while_another_tab_waits_for_a_reply_gets_the_busy_banner(
    page: Page, chat_server: LiveServer, model: BrowserChatModel
) -> None:
    _new_chat(page)
    other = page.context.new_page()  # the same chat in a second tab, opened while it is idle
    other.goto(page.url)
    _ready(other)
    model.hold_next()
    model.add("A slow answer to the first message.")
    _send(page, "first message")
    expect(_assistant(page)).to_contain_text("A")

    _send(other, "second message")
    expect(other.locator("#chat-error")).to_have_text(
        "This chat is still answering the previous message; wait for it to finish"
    )
    # The refused message is not shown as sent, and is given back to the composer; the tab follows the running
    # turn instead and shows its user message (from data-user-message-id) above the reply.
    expect(other.get_by_label("Message", exact=True)).to_have_value("second message")
    expect(other.locator(".chat-msg.chat-user")).to_have_text([re.compile("first message")])
    expect(other.locator(".chat-msg").first).to_have_class(re.compile(r"\bchat-user\b"))
    _release(chat_server, model)
    # Both tabs end with the whole reply, and the first message once.
    for tab in (page, other):
        expect(_assistant(tab)).to_have_text(re.compile(r"A slow answer to the first message\.$"))
        expect(tab.locator(".chat-msg.chat-user")).to_have_text([re.compile("first message")])
        _idle(tab)
    other.close()


def _branch(page: Page, label: str) -> Any:
    return page.locator("#chat-branches .chat-branch", has=page.locator(".branch-label", has_text=label))


def _on_branch(page: Page, label: str) -> None:
    expect(page.locator("#chat-branches .is-active .branch-label")).to_have_text(label)


def test_a_fork_shows_its_notice_and_the_branches_to_switch_mark_and_revive(
    page: Page, chat_server: LiveServer, model: BrowserChatModel
) -> None:
    _new_chat(page)
    fork = {
        "fork_reason": "Both the switch port and the NIC driver fit",
        "options": [
            {"label": "Switch port", "description": "Check errors on the port"},
            {"label": "NIC driver", "description": "Check the driver version"},
        ],
    }
    model.add(f"Two causes fit equally well.\n\n[FORK]\n{json.dumps(fork)}\n[/FORK]")
    _send(page, "The network drops every few minutes")
    _idle(page)
    notice = page.locator("#chat-fork")
    expect(notice).to_contain_text("Both the switch port and the NIC driver fit")
    expect(notice).to_contain_text("Branches: Switch port, NIC driver.")
    labels = page.locator("#chat-branches .branch-label")
    expect(labels).to_have_text(["Main path", "Switch port", "NIC driver"])
    _on_branch(page, "Main path")  # a fork on the main path does not switch
    expect(_branch(page, "Switch port").locator(".pill")).to_have_text("Untried")
    page.reload()
    _ready(page)
    expect(page.locator("#chat-branches .branch-label")).to_have_text(["Main path", "Switch port", "NIC driver"])
    _on_branch(page, "Main path")
    expect(_branch(page, "Main path").get_by_role("button")).to_have_count(0)  # the active main path: no actions

    # Switch to a branch and talk there; its reply forks again, inside the branch, which moves to the first option.
    page.get_by_role("button", name="Switch to Switch port").click()
    _on_branch(page, "Switch port")
    expect(notice).to_be_hidden()
    inner = {
        "fork_reason": "CRC errors point at the cable or the port speed",
        "options": [{"label": "Cable", "description": "Swap the patch cable"}, {"label": "Port speed"}],
    }
    model.add(f"Port 12 shows CRC errors.\n\n[FORK]\n{json.dumps(inner)}\n[/FORK]")
    _send(page, "Checked the switch port")
    _idle(page)
    expect(notice).to_contain_text("Now working on: Cable.")
    _on_branch(page, "Cable")
    expect(labels).to_have_text(["Main path", "Switch port", "Cable", "Port speed", "NIC driver"])
    expect(_branch(page, "Cable")).to_have_attribute("data-depth", "2")
    expect(page.locator(".chat-msg")).to_have_count(4)
    _shot(page, "chat-branches")

    # The other branch shows the conversation up to the fork only; switching back shows this branch's again.
    page.get_by_role("button", name="Switch to NIC driver").click()
    _on_branch(page, "NIC driver")
    expect(page.locator(".chat-msg")).to_have_count(2)
    expect(page.locator("#chat-messages")).not_to_contain_text("CRC errors")
    expect(_assistant(page)).to_contain_text("Two causes fit equally well.")
    page.get_by_role("button", name="Switch to Cable").click()
    _on_branch(page, "Cable")
    expect(page.locator(".chat-msg")).to_have_count(4)
    expect(_assistant(page).last).to_contain_text("Port 12 shows CRC errors.")

    # Mark the NIC driver a dead end, then revive it with new evidence: the chat continues on it.
    page.get_by_role("button", name="Mark NIC driver a dead end").click()
    nic = _branch(page, "NIC driver")
    expect(nic.locator(".pill-branch-dead_end")).to_have_text("Dead end")
    expect(nic.get_by_role("button", name="Switch to NIC driver")).to_have_count(0)
    _on_branch(page, "Cable")
    nic.locator("summary", has_text="Revive with new evidence").click()
    nic.get_by_label("New evidence").fill("The driver was updated the day the drops started")
    _assert_accessible_basics(page)
    nic.get_by_role("button", name="Revive NIC driver").click()
    expect(nic.locator(".pill-branch-revived")).to_have_text("Reopened")
    _on_branch(page, "NIC driver")
    expect(nic.locator(".findings")).to_contain_text("New evidence: The driver was updated the day the drops started")
    expect(page.locator(".chat-msg")).to_have_count(2)

    page.reload()
    _ready(page)
    _on_branch(page, "NIC driver")
    expect(page.locator(".chat-msg")).to_have_count(2)
    expect(_branch(page, "NIC driver").locator(".pill-branch-revived")).to_have_text("Reopened")
    page.get_by_role("button", name="Mark Port speed solved").click()
    expect(_branch(page, "Port speed").locator(".pill-branch-solved")).to_have_text("Solved")


def _png(width: int = 4, height: int = 3) -> str:
    """A real (red) PNG, base64: the browser must decode it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return base64.b64encode(png).decode()


def test_images_kept_with_a_message_show_in_the_conversation(
    page: Page, chat_server: LiveServer, model: BrowserChatModel
) -> None:
    """A message sent with an image through the API shows it on the chat page, as a link to the full image."""
    _new_chat(page)
    chat_id = page.locator("#chat").get_attribute("data-session")
    model.add("That is the VPN client's certificate warning.")
    sent = httpx.post(
        f"{chat_server.url}/api/v1/sessions/{chat_id}/messages",
        json={"text": "What is this dialog?", "images": [{"media_type": "image/png", "data": _png()}]},
        headers=chat_server.tenant.headers(Role.ENGINEER), timeout=15,
    )
    assert sent.status_code == 200, sent.text
    page.reload()
    _ready(page)
    expect(page.locator(".chat-msg.chat-user")).to_contain_text("What is this dialog?")
    image = page.get_by_role("img", name="Image 1 of 1 sent with this message")
    expect(image).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    assert image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [4, 3]
    link = page.locator(".chat-image")
    assert link.get_attribute("href") == f"/api/v1/sessions/{chat_id}/messages/{image_message_id(page)}/images/1"
    _shot(page, "chat-images")


def image_message_id(page: Page) -> str:
    message_id = page.locator(".chat-msg.chat-user").get_attribute("data-message-id")
    assert message_id
    return message_id


def test_an_attached_image_is_previewed_sent_with_the_message_and_kept(
    page: Page, chat_server: LiveServer, model: BrowserChatModel
) -> None:
    """Attach an image (the file picker; pasting goes the same way), see it before sending, remove one, send:
    the model gets the kept image with the text, and the page still shows it after a reload."""
    png = base64.b64decode(_png())
    _new_chat(page)
    expect(page.locator("#chat-input-hint")).to_contain_text("paste or attach up to 4 images")
    files = [{"name": f"shot{n}.png", "mimeType": "image/png", "buffer": png} for n in (1, 2)]
    page.set_input_files("#chat-attach", files=files)  # type: ignore[arg-type]
    expect(page.get_by_role("img", name="Image 2 to send")).to_be_visible()
    page.get_by_role("button", name="Remove image 2").click()
    expect(page.get_by_role("img", name="Image 2 to send")).to_have_count(0)
    model.add("That is the VPN client's certificate warning.")
    _send(page, "What is this dialog?")
    expect(_assistant(page)).to_contain_text("That is the VPN client's certificate warning.")
    _idle(page)
    expect(page.get_by_role("img", name="Image 1 to send")).to_have_count(0)
    asked = model.seen[-1][-1]
    assert (asked.role, asked.content, len(asked.images)) == ("user", "What is this dialog?", 1)
    assert base64.b64decode(asked.images[0].data) == png
    expect(page.get_by_role("img", name="Image 1 of 1 sent with this message")).to_be_visible()
    page.reload()
    _ready(page)
    kept = page.get_by_role("img", name="Image 1 of 1 sent with this message")
    expect(kept).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=kept.element_handle())
    _assert_accessible_basics(page)
    _shot(page, "chat-attach")
