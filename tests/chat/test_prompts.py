"""The chat system prompt and titles (UC-002, SS-038), as pure functions."""

from __future__ import annotations

import uuid

from deskpilot.chat import prompts
from deskpilot.chat.prompt_markers import MARKER_PROMPT


def test_ss038_a_title_is_one_short_line_without_quotes() -> None:
    assert prompts.clean_title('"Outlook password prompts."') == "Outlook password prompts"
    assert prompts.clean_title("Title: VPN drops\nextra line") == "VPN drops"
    assert prompts.clean_title("   ") is None
    assert prompts.clean_title("x" * 101) is None
    assert prompts.clean_title("x" * 100) == "x" * 100


def test_uc002_the_fallback_title_is_the_first_words_or_new_chat() -> None:
    assert prompts.fallback_title("  ") == "New Chat"
    assert prompts.fallback_title("Printer offline") == "Printer offline"
    long = "word " * 30
    title = prompts.fallback_title(long)
    assert title.endswith("…")
    assert len(title) <= 61


def test_the_title_prompt_sends_at_most_500_characters_of_the_message() -> None:
    prompt = prompts.title_prompt("a" * 600)
    assert "a" * 500 in prompt
    assert "a" * 501 not in prompt


def test_the_system_prompt_carries_markers_state_knowledge_and_siblings() -> None:
    question = uuid.uuid4()
    state = prompts.SessionFacts(
        problem="Outlook asks for the password", domain="m365",
        task_lane=[prompts.LaneLine("question", question, "Does OWA prompt?", "done", "No")],
        facts=["Only the desktop client prompts"],
        active_fix={"id": "f-1", "title": "Clear cached credentials", "status": "proposed"},
    )
    text = prompts.system_prompt(state, ["Runbook “Outlook credential prompts” (match 0.80)"],
                                 siblings="- NIC driver (dead end)", revival="New evidence: CRC errors")
    assert MARKER_PROMPT in text
    assert f"question {question} [done]: Does OWA prompt? — engineer: No" in text
    assert "Only the desktop client prompts" in text
    assert "Active suggested fix f-1" in text
    assert "[1] Runbook “Outlook credential prompts”" in text
    assert "NIC driver (dead end)" in text
    assert "New evidence: CRC errors" in text


def test_an_empty_session_adds_no_empty_sections() -> None:
    text = prompts.system_prompt(prompts.SessionFacts())
    assert "## This session" not in text
    assert "knowledge base" not in text
