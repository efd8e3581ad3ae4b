"""Status updates and streamed ticket notes over HTTP: failures mid-stream, disconnects, who may write them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.types import Message as AsgiMessage

from deskpilot.identity.models import Role
from deskpilot.llm import ProviderUnavailable
from deskpilot.llm.testing import Reply
from deskpilot.settings import Settings
from tests.api.test_pilot_support import TICKET_NOTES, PilotApp, parse_sse, pilot_app, problem
from tests.pilot.conftest import question

API = "/api/v1"


@pytest.fixture
async def pilot(settings: Settings) -> AsyncIterator[PilotApp]:
    async with pilot_app(settings) as running:
        yield running


async def started(pilot: PilotApp) -> str:
    pilot.desk.add(question())
    sid: str = (await pilot.start())["session_id"]
    return sid


async def test_fp051_a_provider_failure_mid_stream_ends_with_an_error_event(pilot: PilotApp) -> None:
    sid = await started(pilot)
    pilot.desk.notes_reply = Reply(text=TICKET_NOTES, error=ProviderUnavailable("overloaded", model="test:desk"),
                                   stream_error_after=3)
    response = await pilot.http.get(f"{API}/sessions/{sid}/ticket-notes", headers=pilot.a.headers(Role.ENGINEER))
    assert response.status_code == 200
    frames = parse_sse(response.text)
    assert [f["event"] for f in frames] == ["delta", "delta", "delta", "error"]
    assert [f["id"] for f in frames] == ["1", "2", "3", "4"]
    assert frames[-1]["data"] == {"code": "llm_provider_unavailable", "status": 502, "detail": "overloaded"}
    assert pilot.desk.streams_closed == 1


async def test_fp051_a_failure_before_the_first_chunk_is_a_problem_response(pilot: PilotApp) -> None:
    sid = await started(pilot)
    pilot.desk.notes_reply = Reply(error=ProviderUnavailable("down", model="test:desk"))
    response = await pilot.http.get(f"{API}/sessions/{sid}/ticket-notes", headers=pilot.a.headers(Role.ENGINEER))
    problem(response, 502, "llm_provider_unavailable")


async def test_fp051_a_client_disconnect_closes_the_provider_stream(pilot: PilotApp) -> None:
    sid = await started(pilot)
    pilot.desk.hang_stream = True
    sent: list[AsgiMessage] = []
    disconnected = asyncio.Event()
    requested = False

    async def receive() -> AsgiMessage:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: AsgiMessage) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            # The browser tab closes as soon as the first chunk arrives.
            disconnected.set()

    path = f"{API}/sessions/{sid}/ticket-notes"
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {pilot.a.tokens[Role.ENGINEER]}".encode())],
        "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
    }
    # The model never finishes on its own: only the disconnect can end this request.
    await asyncio.wait_for(pilot.app(scope, receive, send), timeout=5)
    assert sent[0]["status"] == 200
    frames = parse_sse(b"".join(m.get("body", b"") for m in sent[1:]).decode())
    assert [f["event"] for f in frames] == ["delta"]
    assert pilot.desk.streams_opened == pilot.desk.streams_closed == 1


async def test_fp049_status_updates_are_written_only_by_those_who_may_store_them(pilot: PilotApp) -> None:
    sid = await started(pilot)
    url = f"{API}/sessions/{sid}/status-updates"
    problem(await pilot.http.post(url, json={"audience": "tweet"}, headers=pilot.a.headers(Role.ENGINEER)),
            422, "validation_failed")
    await pilot.http.post(f"{API}/sessions/{sid}/escalate", json={"reason": "Out of ideas"},
                          headers=pilot.a.headers(Role.ENGINEER))
    requests = len(pilot.desk.requests)
    # A teammate may read the escalated session (FP-033) but not add to it, and no model call is spent on it.
    assert (await pilot.detail(sid, Role.ADMIN))["status"] == "requesting_escalation"
    refused = await pilot.http.post(url, json={"audience": "client_update"}, headers=pilot.a.headers(Role.ADMIN))
    problem(refused, 403, "session_access_denied")
    assert len(pilot.desk.requests) == requests
    # The ticket notes are a read: the teammate may stream them.
    notes = await pilot.http.get(f"{API}/sessions/{sid}/ticket-notes", headers=pilot.a.headers(Role.ADMIN))
    assert parse_sse(notes.text)[-1]["event"] == "done"
    # The owner may write one while the session waits for pickup; it is stored as a step (FP-049).
    created = await pilot.http.post(url, json={"audience": "email_draft", "length": "quick", "context": "escalation"},
                                    headers=pilot.a.headers(Role.ENGINEER))
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["session_status"], body["length"], body["input_tokens"]) == ("requesting_escalation", "quick", 90)
    step = next(s for s in (await pilot.detail(sid))["steps"] if s["step_id"] == body["step_id"])
    assert step["content"]["context"] == "escalation"
    assert "Escalation reason: Out of ideas" in pilot.desk.requests[-1].messages[1].content
