"""`deskpilot chat`: the copilot in the terminal against the fake OpenAI server (streaming, lane, approvals)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from typer.testing import CliRunner, Result

from deskpilot.cli.main import app
from tests.fakes import FakeOpenAIServer, FakeToolCall, text_reply, tool_reply

runner = CliRunner()


class ChatServer(FakeOpenAIServer):
    """The fake OpenAI server, with title requests (no tools offered) answered apart from the chat's queue."""

    async def _chat(self, request: Request) -> Response:
        body = json.loads(await request.body())
        if isinstance(body, dict) and not body.get("tools"):
            return JSONResponse(self._completion(body, text_reply("Outlook password prompts")))
        return await super()._chat(request)


@pytest.fixture(scope="module")
def fake_module() -> Iterator[ChatServer]:
    with ChatServer(api_key="test") as server:
        yield server


@pytest.fixture
def fake(fake_module: ChatServer, demo: Path, monkeypatch: pytest.MonkeyPatch) -> ChatServer:
    fake_module.reset()
    monkeypatch.setenv("DESKPILOT_LLM__DEFAULT_MODEL", "openai:gpt-test")
    monkeypatch.setenv("DESKPILOT_LLM__OPENAI__BASE_URL", fake_module.base_url)
    monkeypatch.setenv("DESKPILOT_LLM__OPENAI__API_KEY", "test")
    monkeypatch.setenv("DESKPILOT_LLM__TIMEOUT_S", "5")
    return fake_module


def chat(*args: str) -> Result:
    return runner.invoke(app, ["chat", *args])


def test_a_chat_streams_replies_with_its_task_lane_and_facts(fake: ChatServer, demo: Path) -> None:
    fake.enqueue(
        text_reply('Let us check the cached credentials.\n[QUESTIONS]\n[{"text": "Does OWA prompt too?"}]\n'
                   "[/QUESTIONS]"),
        text_reply('Then it is the desktop client.\n[PROMOTE]\n{"source_type": "ai_synthesis", '
                   '"text": "Only the desktop client prompts"}\n[/PROMOTE]'),
    )
    result = chat("Outlook keeps asking for my password", "--messages", "No, only the desktop client;q")
    assert result.exit_code == 0, result.output
    assert "copilot> Let us check the cached credentials." in result.output
    assert "? Does OWA prompt too?" in result.output
    assert "[QUESTIONS]" not in result.output
    assert "known: Only the desktop client prompts" in result.output
    with sqlite3.connect(demo) as conn:
        title, kind = conn.execute("SELECT title, kind FROM sessions WHERE kind = 'chat'").fetchone()
        messages = [r[0] for r in conn.execute("SELECT role FROM session_messages ORDER BY seq")]
    assert (title, kind) == ("Outlook password prompts", "chat")
    assert messages == ["user", "assistant", "user", "assistant"]


def test_a_tool_call_asks_at_the_prompt_and_runs_once_approved(fake: ChatServer, demo: Path) -> None:
    note = {"ticket_id": "4711", "text": "Cleared the token cache.", "internal": True}
    fake.enqueue(
        tool_reply(FakeToolCall("post_ticket_note", note, id="call_1"), text="I will post the note."),
        text_reply("No PSA is connected, so I could not post it; here is the text to paste."),
    )
    result = chat("Post a note to 4711", "--messages", "y;q")
    assert result.exit_code == 0, result.output
    assert 'approve? post_ticket_note {"ticket_id": "4711"' in result.output
    assert "here is the text to paste" in result.output
    tool_message = fake.requests[-1].body["messages"][-1]
    assert tool_message["role"] == "tool"
    assert "No PSA connection" in tool_message["content"]


def test_without_a_model_the_chat_says_what_to_configure(demo: Path) -> None:
    result = chat("hello")
    assert result.exit_code == 1
    assert "DESKPILOT_LLM__DEFAULT_MODEL" in result.output
