"""Chat rules that are about where things live and what a turn returns (UC-001, UC-005, UC-007, SS-044)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from deskpilot.chat import stream
from deskpilot.identity.models import Role
from deskpilot.knowledge import service as knowledge
from deskpilot.pilot.models import PilotSession, SessionMessage
from deskpilot.settings import Settings
from tests.api.chat_support import API, ChatApp, chat_app, data_of, types


@pytest.fixture
async def chat(settings: Settings) -> AsyncIterator[ChatApp]:
    async with chat_app(settings) as running:
        yield running


async def test_uc001_chats_are_sessions_of_kind_chat_with_their_messages_as_rows(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    chat.model.add("Hello there.")
    await chat.send(chat_id, "hi")
    async with chat.state.db.session(chat.a.account_id) as db:
        session = await db.get(PilotSession, uuid.UUID(chat_id))
        assert session is not None
        assert (session.kind, session.intake_type, session.confidence_tier) == ("chat", "free_text", "discovery")
        rows = (await db.scalars(select(SessionMessage.role).where(SessionMessage.session_id == session.id)
                                 .order_by(SessionMessage.seq))).all()
    assert list(rows) == ["user", "assistant"]
    # Guided lists do not show chats, and chat lists do not show guided sessions.
    guided = (await chat.http.get(f"{API}/sessions", headers=chat.a.headers(Role.ENGINEER))).json()
    assert chat_id not in [s["session_id"] for s in guided]
    chats = (await chat.http.get(f"{API}/chats", headers=chat.a.headers(Role.ENGINEER))).json()
    assert [c["id"] for c in chats] == [chat_id]


async def test_uc005_knowledge_feeds_the_prompt_and_comes_back_as_suggested_flows(chat: ChatApp) -> None:
    async with chat.state.db.session(chat.a.account_id) as db:
        await knowledge.load_starter_library(db, chat.a.account_id)
        await db.commit()
    chat_id = await chat.new_chat()
    chat.model.add("Let's look at the cached credentials.", "And the profile.")
    _, frames = await chat.stream(chat_id, "Outlook keeps asking for the password after the password change")
    flows = data_of(frames, "suggested-flows")
    assert flows
    assert "Outlook" in flows[0]["name"]
    assert set(flows[0]) == {"flow_id", "name", "score"}
    # The first turn retrieves before the model is asked: the runbook is in its system prompt.
    assert flows[0]["name"] in chat.model.seen[0][0].content
    # Later turns use what was retrieved before and retrieve for the new message while the model answers.
    _, later = await chat.stream(chat_id, "It is Outlook 2016 on Windows 10")
    assert flows[0]["name"] in chat.model.seen[1][0].content
    assert "data-suggested-flows" in types(later)


async def test_uc007_a_turn_returns_text_flows_session_fork_actions_and_questions(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    chat.model.add(
        "Two leads.\n[FORK]\n{\"fork_reason\": \"both fit\", \"options\": [{\"label\": \"A\"}, {\"label\": \"B\"}]}\n"
        "[/FORK]\n[ACTIONS]\n[{\"label\": \"Run dsregcmd /status\"}]\n[/ACTIONS]\n"
        "[QUESTIONS]\n[{\"text\": \"Hybrid joined?\"}]\n[/QUESTIONS]"
    )
    turn = await chat.send(chat_id, "Teams sign-in loops")
    kinds = {p["type"] for p in turn["parts"]}
    # The seed's tuple (display content, suggested flows, session, fork metadata, actions, questions) is one JSON
    # turn here: content, parts (suggested flows when any, fork, task lane with both lists), and the session id.
    assert turn["content"] == "Two leads."
    assert {"data-fork", "data-task-lane"} <= kinds
    lane = next(p["data"] for p in turn["parts"] if p["type"] == "data-task-lane")
    assert [a["label"] for a in lane["actions"]] == ["Run dsregcmd /status"]
    assert [q["text"] for q in lane["questions"]] == ["Hybrid joined?"]
    assert turn["session_id"] == chat_id


def test_ss044_the_thinking_step_branches_and_truncation() -> None:
    assert stream.thinking_part("short question")["data"]["items"] == ["Processing: short question"]
    assert stream.thinking_part("q" * 81)["data"]["items"] == [f"Processing: {'q' * 80}..."]
    assert stream.thinking_part("", images=1)["data"]["items"] == ["Processing: [1 image]"]
    assert stream.thinking_part("")["data"]["items"] == ["Processing: (message)"]


async def test_ss045_regenerate_answers_the_last_message_again(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    engineer = chat.a.headers(Role.ENGINEER)
    nothing = await chat.http.post(f"{API}/sessions/{chat_id}/regenerate", headers=engineer)
    assert nothing.status_code == 409
    assert nothing.json()["code"] == "nothing_to_regenerate"
    chat.model.add("First try.")
    await chat.send(chat_id, "Why is the VPN slow?")
    chat.model.add("Second try, better.")
    response = await chat.http.post(f"{API}/sessions/{chat_id}/regenerate", headers=engineer)
    assert response.status_code == 200, response.text
    assert response.json()["content"] == "Second try, better."
    # The model was asked the same question with the same history, without the replaced reply.
    assert [m.content for m in chat.model.seen[-1][1:]] == ["Why is the VPN slow?"]
    messages = (await chat.detail(chat_id))["messages"]
    assert [m["content"] for m in messages] == ["Why is the VPN slow?", "Second try, better."]


async def test_ss045_a_message_needs_text_or_images(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    empty = await chat.http.post(f"{API}/sessions/{chat_id}/messages", json={}, headers=chat.a.headers(Role.ENGINEER))
    assert empty.status_code == 422
    assert empty.json()["code"] == "message_empty"
