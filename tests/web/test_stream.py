"""The notification stream over a real socket: SSE framing, live delivery, keep-alives and disconnect cleanup."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from deskpilot.api.routes import notifications as notification_routes
from deskpilot.events import notifications
from deskpilot.events.pubsub import InProcessPubSub, user_channel
from deskpilot.identity.models import Role
from tests.web.conftest import LiveServer


def _next_event(lines: Iterator[str]) -> list[str]:
    """The lines of the next event (up to its blank line)."""
    event: list[str] = []
    for line in lines:
        if line == "":
            if event:
                return event
            continue
        event.append(line)
    raise AssertionError(f"stream ended inside an event: {event}")


def _data(event: list[str]) -> dict[str, object]:
    payload = next(line for line in event if line.startswith("data: "))
    decoded: dict[str, object] = json.loads(payload.removeprefix("data: "))
    return decoded


def test_stream_says_hello_then_pushes_notifications(live_server: LiveServer) -> None:
    tenant = live_server.tenant
    with httpx.Client(base_url=live_server.url, timeout=5) as http, http.stream(
        "GET", "/api/v1/notifications/stream", headers=tenant.headers(Role.ENGINEER)
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        lines = response.iter_lines()
        hello = _next_event(lines)
        assert hello[:2] == ["retry: 5000", "event: hello"]
        assert _data(hello) == {"type": "hello", "unread": 0}

        async def publish() -> None:
            async with live_server.state.db.session(tenant.account_id) as session:
                await notifications.notify(session, live_server.state.pubsub, account_id=tenant.account_id,
                                           user_id=tenant.users[Role.ENGINEER], kind="test", title="Disk almost full")

        live_server.call(publish())
        pushed = _next_event(lines)
        assert pushed[0] == "event: notification"
        assert _data(pushed)["title"] == "Disk almost full"


def test_stream_sends_keep_alives_and_leaves_on_disconnect(live_server: LiveServer,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notification_routes, "HEARTBEAT_S", 0.1)
    tenant = live_server.tenant
    channel = user_channel(tenant.users[Role.VIEWER])
    pubsub = live_server.state.pubsub
    assert isinstance(pubsub, InProcessPubSub)
    with httpx.Client(base_url=live_server.url, timeout=5) as http, http.stream(
        "GET", "/api/v1/notifications/stream", headers=tenant.headers(Role.VIEWER)
    ) as response:
        lines = response.iter_lines()
        _next_event(lines)
        assert next(line for line in lines if line) == ": keep-alive"
        assert pubsub._fanout.has(channel)
    # The server notices the closed socket and drops the subscription.
    deadline = time.monotonic() + 5
    while pubsub._fanout.has(channel):
        assert time.monotonic() < deadline, "subscription outlived the client"
        time.sleep(0.05)


def test_stream_refuses_anonymous_clients(live_server: LiveServer) -> None:
    response = httpx.get(f"{live_server.url}/api/v1/notifications/stream", timeout=5)
    assert response.status_code == 401
