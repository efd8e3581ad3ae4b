"""Request bodies the database could not store are refused before any handler runs, and nothing is written."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from deskpilot.identity.models import Role
from deskpilot.settings import Settings
from tests.api.chat_support import API, ChatApp, chat_app
from tests.api.test_pilot_support import problem
from tests.conftest import make_settings


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[ChatApp]:
    async with chat_app(settings) as running:
        yield running


@pytest.fixture
async def any_db_app(tmp_path: Path, migrated_database_url: str) -> AsyncIterator[ChatApp]:
    """The app on a migrated SQLite file, then on a throwaway PostgreSQL database."""
    async with chat_app(make_settings(tmp_path, database={"url": migrated_database_url})) as running:
        yield running


# A lone surrogate escape: valid JSON syntax, but no UTF-8 text (the json module accepted it, then the commit
# failed with a 500); and bytes that are not UTF-8 at all.
LONE_SURROGATE = b'{"text": "Outlook keeps asking for my password \\ud800 since Monday"}'
NOT_UTF8 = b'{"text": "Outlook \xff\xfe"}'


@pytest.mark.parametrize("body", [LONE_SURROGATE, NOT_UTF8])
async def test_a_body_that_is_not_utf8_text_is_a_422_and_starts_nothing(app: ChatApp, body: bytes) -> None:
    headers = {**app.a.headers(Role.ENGINEER), "Content-Type": "application/json"}
    response = await app.http.post(f"{API}/sessions", content=body, headers=headers)
    problem(response, 422, "validation_failed")
    listed = await app.http.get(f"{API}/sessions", headers=app.a.headers(Role.ENGINEER))
    assert listed.json() == []


async def test_a_chat_message_with_a_lone_surrogate_is_refused_and_the_chat_stays_empty(app: ChatApp) -> None:
    chat_id = await app.new_chat()
    headers = {**app.a.headers(Role.ENGINEER), "Content-Type": "application/json"}
    response = await app.http.post(f"{API}/sessions/{chat_id}/messages", content=LONE_SURROGATE, headers=headers)
    problem(response, 422, "validation_failed")
    assert (await app.detail(chat_id))["messages"] == []


async def test_a_chat_for_a_client_of_no_one_or_of_another_account_is_a_404(app: ChatApp) -> None:
    created = await app.http.post(f"{API}/clients", json={"name": "Initech"}, headers=app.b.headers(Role.OWNER))
    assert created.status_code == 201, created.text
    for client_id in (created.json()["id"], "281b6bbb-4713-4614-b868-4fb01b0e4d97"):
        response = await app.http.post(f"{API}/chats", json={"client_id": client_id},
                                       headers=app.a.headers(Role.ENGINEER))
        problem(response, 404, "client_not_found")
    listed = await app.http.get(f"{API}/chats", headers=app.a.headers(Role.ENGINEER))
    assert listed.json() == []


async def test_a_nul_character_is_refused_on_every_database(any_db_app: ChatApp) -> None:
    """PostgreSQL cannot store U+0000 in text; SQLite can. The API refuses it alike, before anything is stored."""
    app = any_db_app
    headers = app.a.headers(Role.ENGINEER)
    response = await app.http.post(f"{API}/sessions", json={"text": "Outlook keeps asking\u0000 for a password"},
                                   headers=headers)
    assert "NUL character" in str(problem(response, 422, "validation_failed"))
    chat_id = await app.new_chat()
    response = await app.http.post(f"{API}/sessions/{chat_id}/messages", json={"text": "hello\u0000"}, headers=headers)
    problem(response, 422, "validation_failed")
    listed = await app.http.get(f"{API}/sessions", headers=headers)
    assert listed.json() == []
