"""The prompt context of a chat's next message: kept per session version, never stale, scoped to its account."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from deskpilot.chat.models import ChatTurn
from deskpilot.chat.service import STALE_TURN
from deskpilot.identity.models import Role
from deskpilot.llm import Message
from deskpilot.pilot.models import PilotSession, SessionMessage
from deskpilot.settings import Settings
from deskpilot.storage import utcnow
from tests.api.chat_support import API, ChatApp, chat_app
from tests.api.test_pilot_support import problem
from tests.conftest import make_settings


@pytest.fixture
async def chat(settings: Settings) -> AsyncIterator[ChatApp]:
    async with chat_app(settings) as running:
        yield running


def _shape(messages: list[Message]) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in messages]


async def _version(chat: ChatApp, chat_id: str) -> int:
    async with chat.state.db.system_session() as db:
        version = await db.scalar(select(PilotSession.state_version).where(PilotSession.id == uuid.UUID(chat_id)))
    assert isinstance(version, int)
    return version


async def test_the_next_message_reuses_the_context_the_last_turn_left_and_the_model_sees_the_same(
    chat: ChatApp,
) -> None:
    cached_id, fresh_id = await chat.new_chat(), await chat.new_chat()
    for chat_id in (cached_id, fresh_id):
        chat.model.add("Check the lease time first.")
        await chat.send(chat_id, "VPN drops on the guest Wi-Fi")
        # What the turn left behind is kept under the version its commit gave the session.
        assert chat.state.chat_contexts.get(uuid.UUID(chat_id), await _version(chat, chat_id), None) is not None
    chat.state.chat_contexts.forget(uuid.UUID(fresh_id))  # this one must read the database

    chat.model.add("Then the scope size.", "Then the scope size.")
    await chat.send(cached_id, "The lease is 8 days")
    from_cache = chat.model.seen[-1]
    await chat.send(fresh_id, "The lease is 8 days")
    from_database = chat.model.seen[-1]

    assert _shape(list(from_cache)) == _shape(list(from_database))
    assert [m.role for m in from_cache] == ["system", "user", "assistant", "user"]


async def test_a_change_between_turns_is_in_the_next_prompt(chat: ChatApp) -> None:
    """Every write to what the prompt shows bumps state_version, so a kept context is never used stale."""
    chat_id = await chat.new_chat()
    chat.model.add("Let's look at DHCP.", "Noted.")
    await chat.send(chat_id, "VPN drops on the guest Wi-Fi")
    kept_at = await _version(chat, chat_id)
    added = await chat.http.post(f"{API}/sessions/{chat_id}/facts", json={"text": "Scope is 98% full"},
                                 headers=chat.a.headers(Role.ENGINEER))
    assert added.status_code == 201, added.text
    assert await _version(chat, chat_id) > kept_at

    await chat.send(chat_id, "What next?")

    system = chat.model.seen[-1][0]
    assert system.role == "system"
    assert "Scope is 98% full" in system.content


async def test_a_message_edited_behind_the_cache_is_not_seen_once_the_version_moves(chat: ChatApp) -> None:
    """The cache is keyed by version: a newer version (another process wrote) reads the database again."""
    chat_id = await chat.new_chat()
    chat.model.add("First reply.", "Second reply.")
    await chat.send(chat_id, "first question")
    async with chat.state.db.system_session() as db:
        await db.execute(
            update(SessionMessage)
            .where(SessionMessage.session_id == uuid.UUID(chat_id), SessionMessage.seq == 2)
            .values(content="Edited.")
        )
        await db.execute(
            update(PilotSession).where(PilotSession.id == uuid.UUID(chat_id))
            .values(state_version=PilotSession.state_version + 1)
        )
        await db.commit()

    await chat.send(chat_id, "second question")

    assert [m.content for m in chat.model.seen[-1][1:]] == ["first question", "Edited.", "second question"]


async def test_two_messages_at_once_store_one_turn_and_ask_the_model_for_the_winner_only(chat: ChatApp) -> None:
    """SS-043 with the model asked while the turn commits: the loser's rows and reply never exist."""
    chat_id = await chat.new_chat()
    chat.model.add("Only one answer.", "Second answer.")
    results = await asyncio.gather(
        *(chat.http.post(f"{API}/sessions/{chat_id}/messages", json={"text": text},
                         headers=chat.a.headers(Role.ENGINEER)) for text in ("one", "two")),
    )
    statuses = sorted(r.status_code for r in results)
    assert statuses in ([200, 409], [200, 200])  # the first may finish before the second starts
    for refused in (r for r in results if r.status_code == 409):
        problem(refused, 409, "THREAD_BUSY")
    async with chat.state.db.system_session() as db:
        turns = (await db.scalars(select(ChatTurn.status).where(ChatTurn.session_id == uuid.UUID(chat_id)))).all()
        users = (await db.scalars(select(SessionMessage.content).where(
            SessionMessage.session_id == uuid.UUID(chat_id), SessionMessage.role == "user"))).all()
    assert len(turns) == statuses.count(200)
    assert all(status == "complete" for status in turns)
    assert len(users) == statuses.count(200)


async def test_another_account_cannot_send_to_a_chat_even_with_its_context_kept(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    chat.model.add("Reply.")
    await chat.send(chat_id, "hello")
    asked = len(chat.model.seen)

    other = await chat.http.post(f"{API}/sessions/{chat_id}/messages", json={"text": "let me in"},
                                 headers=chat.b.headers(Role.ENGINEER))

    problem(other, 404, "chat_session_not_found")
    assert len(chat.model.seen) == asked


async def test_marking_a_sibling_branch_reaches_the_next_prompt(chat: ChatApp) -> None:
    """UC-022: sibling summaries are in a branch's prompt, so a branch marked between turns moves the version."""
    chat_id = await chat.new_chat()
    options = [{"label": "Switch port"}, {"label": "NIC driver"}]
    chat.model.add('Two ideas.\n[FORK]\n{"fork_reason": "both fit", "options": ' + json.dumps(options) + "}\n[/FORK]")
    fork = next(p["data"] for p in (await chat.send(chat_id, "Link flaps"))["parts"] if p["type"] == "data-fork")
    port_id, nic_id = (b["branch_id"] for b in fork["branches"])
    engineer = chat.a.headers(Role.ENGINEER)
    assert (await chat.http.post(f"{API}/chats/{chat_id}/branches/{port_id}/switch", headers=engineer)).is_success
    chat.model.add("On the port.", "Still the port.")
    await chat.send(chat_id, "CRC errors")
    before = await _version(chat, chat_id)
    marked = await chat.http.post(f"{API}/chats/{chat_id}/branches/{nic_id}/mark", json={"status": "dead_end"},
                                  headers=engineer)
    assert marked.is_success, marked.text
    assert await _version(chat, chat_id) > before

    await chat.send(chat_id, "What now?")

    assert "dead end" in chat.model.seen[-1][0].content.lower()


async def test_a_running_turn_of_another_process_is_thread_busy_and_a_stale_one_is_closed(
    migrated_database_url: str, tmp_path: Path
) -> None:
    """SS-043 on both databases: the partial unique index refuses the second running turn (409, not a 500 on
    PostgreSQL's aborted transaction); one nobody streams that is older than STALE_TURN is closed instead."""
    settings = make_settings(tmp_path, database={"url": migrated_database_url})
    async with chat_app(settings) as chat:
        chat_id = uuid.UUID(await chat.new_chat())

        async def running(started: datetime) -> uuid.UUID:
            async with chat.state.db.session(chat.a.account_id) as db:
                turn = ChatTurn(id=uuid.uuid4(), account_id=chat.a.account_id, session_id=chat_id,
                                user_id=chat.a.users[Role.ENGINEER], status="running", parts=[], started_at=started)
                db.add(turn)
                await db.commit()
                return turn.id

        fresh = await running(utcnow())
        busy = await chat.http.post(f"{API}/sessions/{chat_id}/messages", json={"text": "hello"},
                                    headers=chat.a.headers(Role.ENGINEER))
        problem(busy, 409, "THREAD_BUSY")
        async with chat.state.db.session(chat.a.account_id) as db:
            await db.execute(update(ChatTurn).where(ChatTurn.id == fresh).values(
                started_at=utcnow() - STALE_TURN - timedelta(minutes=1)))
            await db.commit()
        chat.model.add("Back on track.")
        sent = await chat.send(str(chat_id), "hello again")
        assert sent["status"] == "complete"
        async with chat.state.db.session(chat.a.account_id) as db:
            stale = await db.get(ChatTurn, fresh)
            assert stale is not None
            assert (stale.status, stale.error_code) == ("interrupted", "TURN_ABANDONED")
