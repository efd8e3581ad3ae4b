"""Chat turns over HTTP: the UI message stream, JSON answers, busy threads, failures, reconnects, lifecycle."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from deskpilot.api.app import create_app
from deskpilot.api.state import AppState
from deskpilot.chat import stored_images
from deskpilot.chat.models import ChatTurn
from deskpilot.chat.schemas import MAX_IMAGE_BASE64_CHARS
from deskpilot.identity.models import Role
from deskpilot.llm import LLM, MemoryRecorder, ProviderUnavailable
from deskpilot.llm.fallback import FallbackModel
from deskpilot.llm.messages import ImagePart
from deskpilot.llm.testing import Reply, ScriptedModel
from deskpilot.pilot.models import PilotSession, SessionMessage
from deskpilot.settings import LLMSettings, Settings
from tests.api.chat_support import API, SSE, ChatApp, ChatModel, chat_app, data_of, read_frames, text_of, types
from tests.api.test_pilot_support import problem
from tests.conftest import make_settings
from tests.services import require_redis
from tests.tenancy import assert_invisible_to_other_account

REPLY = (
    "Let's check the credential manager first.\n\n"
    '[QUESTIONS]\n[{"text": "Does it happen in Outlook on the web too?", "context": "Rules out the client"}]\n'
    "[/QUESTIONS]\n"
    '[ACTIONS]\n[{"label": "Clear cached credentials", "command": "cmdkey /list"}]\n[/ACTIONS]'
)


@pytest.fixture
async def chat(settings: Settings) -> AsyncIterator[ChatApp]:
    async with chat_app(settings) as running:
        yield running


async def _model_asked(chat: ChatApp) -> None:
    for _ in range(1000):
        if chat.model.requests:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the model was never asked")


async def _wait_idle(chat: ChatApp, chat_id: str) -> dict[str, object]:
    for _ in range(1000):  # generous: CI machines are busy
        detail = await chat.detail(chat_id)
        last = detail["last_turn"]
        if last is not None and last["status"] != "running":
            return detail
        await asyncio.sleep(0.01)
    raise AssertionError("the turn did not finish")


async def test_ss034_ss035_ss036_a_streamed_turn_is_an_ai_sdk_ui_message_stream(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    chat.model.add(REPLY)
    response, frames = await chat.stream(chat_id, "Outlook keeps asking for the password")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert response.headers["cache-control"] == "no-cache"
    kinds = types(frames)
    # SS-035: canonical opening, then the ids of both rows before any model output (SS-036 step 5).
    assert kinds[:6] == ["start", "start-step", "data-turn-info", "data-turn-status", "data-user-message-id",
                         "data-assistant-message-id"]
    assert frames[3]["part"]["data"] == {"status": "busy"}
    assert kinds.index("data-assistant-message-id") < kinds.index("text-start") < kinds.index("text-end")
    assert kinds[-4:] == ["data-turn-status", "finish-step", "finish", "[DONE]"]
    assert frames[-4]["part"]["data"] == {"status": "idle"}
    # Every frame has an id, counting up from 1.
    assert [f["id"] for f in frames] == list(range(1, len(frames) + 1))
    # Markers never reach the screen; the typed parts carry them.
    shown = text_of(frames)
    assert shown == "Let's check the credential manager first."
    assert "[QUESTIONS]" not in shown
    lane = data_of(frames, "task-lane")
    assert [q["text"] for q in lane["questions"]] == ["Does it happen in Outlook on the web too?"]
    usage = data_of(frames, "token-usage")
    assert usage["model"] == "test:chat"
    assert usage["output_tokens"] > 0
    message_id = frames[0]["part"]["messageId"]
    assert data_of(frames, "assistant-message-id")["message_id"] == message_id


async def test_uc002_uc004_uc006_json_turn_titles_counts_and_stores_clean_text(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    assert (await chat.detail(chat_id))["session"]["title"] == "New Chat"
    chat.model.add(REPLY)
    turn = await chat.send(chat_id, "Outlook keeps asking for the password _(not yet completed)_")
    assert turn["status"] == "complete"
    assert turn["content"] == "Let's check the credential manager first."
    detail = await chat.detail(chat_id)
    session = detail["session"]
    assert session["title"] == "Outlook password prompts"  # SS-038: the model's title, <= 100 characters
    assert session["step_count"] == 2  # UC-004
    assert session["problem_summary"].startswith("Outlook keeps asking")
    user, assistant = detail["messages"]
    assert user["content"] == "Outlook keeps asking for the password (pending)"  # UC-006
    assert assistant["content"] == "Let's check the credential manager first."  # markers stripped
    assert session["total_output_tokens"] > 0

    chat.model.add("Good. Next, sign out of Office everywhere.")
    await chat.send(chat_id, "Yes, web too")
    detail = await chat.detail(chat_id)
    assert detail["session"]["step_count"] == 4
    assert detail["session"]["title"] == "Outlook password prompts"  # only the first turn names the chat
    # The model saw the conversation so far, stored text only.
    history = chat.model.seen[-1]
    assert [m.role for m in history[1:]] == ["user", "assistant", "user"]
    assert "[QUESTIONS]" not in history[2].content


async def test_ss038_a_title_too_long_keeps_the_fallback(chat: ChatApp) -> None:
    chat.model.title = "x" * 101
    chat_id = await chat.new_chat()
    chat.model.add("Hello.")
    await chat.send(chat_id, "VPN drops every ten minutes")
    assert (await chat.detail(chat_id))["session"]["title"] == "VPN drops every ten minutes"


async def test_ss043_a_second_message_while_a_turn_runs_is_thread_busy(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    chat.model.hold = True
    chat.model.add("First answer, slowly.")
    first = asyncio.create_task(chat.send(chat_id, "first"))
    await _model_asked(chat)
    busy = await chat.http.post(f"{API}/sessions/{chat_id}/messages", json={"text": "second"},
                                headers=chat.a.headers(Role.ENGINEER))
    problem(busy, 409, "THREAD_BUSY")
    chat.model.release()
    assert (await first)["status"] == "complete"
    # The refused message was never stored; the next one goes through.
    chat.model.add("Now the second.")
    await chat.send(chat_id, "second again")
    contents = [m["content"] for m in (await chat.detail(chat_id))["messages"]]
    assert "second" not in contents
    assert "second again" in contents


async def test_ss040_a_provider_failure_keeps_the_user_message_and_the_partial_reply(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    chat.model.add(Reply(text="Checking the mailbox now and then", error=ProviderUnavailable("down", model="x"),
                         stream_error_after=3))
    response, frames = await chat.stream(chat_id, "Mailbox full warnings")
    assert response.status_code == 200
    kinds = types(frames)
    assert "error" in kinds
    error = next(f["part"] for f in frames if f["part"] != "[DONE]" and f["part"]["type"] == "error")
    assert error["errorCode"] == ProviderUnavailable.code
    assert kinds[-1] == "[DONE]"
    detail = await chat.detail(chat_id)
    user, assistant = detail["messages"]
    assert user["content"] == "Mailbox full warnings"
    assert assistant["content"] == "Checking the mailbox"
    assert detail["last_turn"]["status"] == "failed"
    # The chat takes the next message (the busy guard was released).
    chat.model.add("Let's try again.")
    assert (await chat.send(chat_id, "retry"))["status"] == "complete"


async def test_ss036_a_client_that_disconnects_loses_nothing(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    chat.model.hold = True
    chat.model.add("The whole answer arrives after the client left.")
    body = json.dumps({"text": "hello"}).encode()
    sent: list[dict[str, Any]] = []
    gone = asyncio.Event()
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and b"text-delta" in message.get("body", b""):
            gone.set()  # the client goes away as soon as the reply starts

    headers = [(k.lower().encode(), v.encode()) for k, v in {**chat.a.headers(Role.ENGINEER), **SSE,
                                                                "content-type": "application/json"}.items()]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": f"{API}/sessions/{chat_id}/messages", "raw_path": b"", "query_string": b"", "headers": headers,
             "server": ("testserver", 80), "client": ("127.0.0.1", 1234), "root_path": ""}
    await asyncio.wait_for(chat.app(scope, receive, send), timeout=10)
    assert sent[0]["status"] == 200
    assert not any(m.get("more_body") is False for m in sent[1:-1])
    chat.model.release()
    detail = await _wait_idle(chat, chat_id)
    assert detail["last_turn"]["status"] == "complete", detail["last_turn"]
    assert [m["content"] for m in detail["messages"]] == ["hello", "The whole answer arrives after the client left."]


async def _reconnect_mid_turn(
    chat: ChatApp, via: httpx.AsyncClient, last_event_id: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A turn held after its first words; a reconnect through `via` with `Last-Event-ID`; then the rest of the
    turn. The sender's frames and the reconnect's."""
    chat_id = await chat.new_chat()
    chat.model.hold = True
    chat.model.add("Part one and part two.")
    sender = asyncio.create_task(chat.stream(chat_id, "hello"))
    await _model_asked(chat)
    await asyncio.sleep(0.05)
    headers = {**chat.a.headers(Role.ENGINEER), **SSE, "Last-Event-ID": str(last_event_id)}
    resumed = asyncio.create_task(via.get(f"{API}/sessions/{chat_id}/stream", headers=headers))
    await asyncio.sleep(0.1)
    chat.model.release()
    _, full = await sender
    return full, read_frames((await asyncio.wait_for(resumed, timeout=10)).text)


async def test_reconnecting_with_last_event_id_gets_the_rest_of_a_live_turn(chat: ChatApp) -> None:
    full, rest = await _reconnect_mid_turn(chat, chat.http, last_event_id=6)
    assert [f["id"] for f in rest] == [f["id"] for f in full if f["id"] > 6]
    assert rest == [f for f in full if f["id"] > 6]


async def test_reconnecting_after_the_turn_gets_its_final_state(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    empty = await chat.http.get(f"{API}/sessions/{chat_id}/stream", headers=chat.a.headers(Role.ENGINEER))
    assert empty.status_code == 204
    chat.model.add(REPLY)
    _, frames = await chat.stream(chat_id, "Outlook prompts")
    chat.state.chat_streams._streams.clear()  # as if another process (or a restart) served the reconnect
    response = await chat.http.get(f"{API}/sessions/{chat_id}/stream",
                                   headers={**chat.a.headers(Role.ENGINEER), "Last-Event-ID": str(len(frames))})
    replay = read_frames(response.text)
    assert replay[0]["id"] == len(frames) + 1
    assert data_of(replay, "turn-info")["replay"] is True
    assert text_of(replay) == text_of(frames)
    assert data_of(replay, "task-lane") == data_of(frames, "task-lane")
    assert types(replay)[-1] == "[DONE]"


async def test_ss034_a_reconnect_served_by_another_process_follows_the_live_turn(
    settings: Settings, tmp_path: Path
) -> None:
    """Two server processes on one database and one Redis (`deskpilot serve --workers 2`): the turn runs in the
    first, the client's reconnect lands on the second and gets the rest of the live turn, frame for frame."""
    shared = make_settings(tmp_path, redis={"url": require_redis()})
    async with chat_app(shared) as chat:
        other = create_app(shared, state=AppState.build(shared, llm=LLM.for_model(ChatModel())))
        async with (
            other.router.lifespan_context(other),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=other), base_url="http://testserver") as elsewhere,
        ):
            full, rest = await _reconnect_mid_turn(chat, elsewhere, last_event_id=6)
    assert rest == [f for f in full if f["id"] > 6]  # live frames, not the stored state told again
    assert "replay" not in data_of(full, "turn-info")


async def test_ss040_shutdown_mid_turn_stores_what_was_said_and_frees_the_chat(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    chat.model.hold = True
    chat.model.add("Interrupted answer here")
    sender = asyncio.create_task(chat.send(chat_id, "hello"))
    await _model_asked(chat)
    await asyncio.sleep(0.02)
    await chat.state.chat_streams.shutdown()
    turn = await sender
    assert turn["status"] == "interrupted"
    assert turn["error_code"] == "TURN_CANCELLED"
    async with chat.state.db.session(chat.a.account_id) as db:
        stored = await db.get(ChatTurn, uuid.UUID(turn["id"]))
        assert stored is not None
        assert stored.status == "interrupted"
        assistant = await db.get(SessionMessage, uuid.UUID(turn["assistant_message_id"]))
        assert assistant is not None
        assert assistant.content == "Interrupted"


async def test_uc003_messages_only_to_active_or_paused_chats(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    engineer = chat.a.headers(Role.ENGINEER)
    paused = await chat.http.post(f"{API}/chats/{chat_id}/pause", headers=engineer)
    assert paused.json()["status"] == "paused"
    chat.model.add("Back again.")
    await chat.send(chat_id, "still there?")
    assert (await chat.detail(chat_id))["session"]["status"] == "active"  # a message wakes a paused chat
    await chat.http.post(f"{API}/chats/{chat_id}/resolve", headers=engineer)
    refused = await chat.http.post(f"{API}/sessions/{chat_id}/messages", json={"text": "one more"},
                                   headers=engineer)
    body = problem(refused, 409, "session_not_accepting_messages")
    assert body["detail"] == "Cannot send messages to a resolved session"


async def test_bad_messages_are_refused_and_store_nothing(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    engineer = chat.a.headers(Role.ENGINEER)
    problem(await chat.http.post(f"{API}/sessions/{chat_id}/messages", json={"text": "  "}, headers=engineer),
            422, "message_empty")
    problem(await chat.http.post(f"{API}/sessions/{chat_id}/messages", json={"text": "x" * 100_001},
                                 headers=engineer), 422, "message_too_large")
    # SS-043: `test:chat` is not in `llm.vision_models` (see the vision tests below for one that is).
    image = {"media_type": "image/png", "data": "iVBORw0KGgo="}
    problem(await chat.http.post(f"{API}/sessions/{chat_id}/messages", json={"text": "see", "images": [image]},
                                 headers=engineer), 422, "MODEL_DOES_NOT_SUPPORT_IMAGE_INPUT")
    viewer = await chat.http.post(f"{API}/sessions/{chat_id}/messages", json={"text": "hi"},
                                  headers=chat.a.headers(Role.VIEWER))
    assert viewer.status_code == 403
    assert (await chat.detail(chat_id))["messages"] == []


async def test_a_chat_is_invisible_to_other_accounts_and_other_engineers(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    owner, other = chat.a.headers(Role.ENGINEER), chat.b.headers(Role.OWNER)
    await assert_invisible_to_other_account(chat.http, f"{API}/chats/{chat_id}", owner_headers=owner,
                                            other_headers=other)
    for method, url, body in [
        ("POST", f"{API}/sessions/{chat_id}/messages", {"text": "hi"}),
        ("GET", f"{API}/sessions/{chat_id}/stream", None),
        ("POST", f"{API}/chats/{chat_id}/pause", None),
        ("POST", f"{API}/sessions/{chat_id}/resume", {"decisions": []}),
    ]:
        response = await chat.http.request(method, url, json=body, headers=other)
        assert response.status_code == 404, (url, response.text)
        assert response.json()["code"] in ("chat_session_not_found", "session_not_found")
    assert (await chat.detail(chat_id))["session"]["status"] == "active"
    lead = await chat.http.get(f"{API}/chats/{chat_id}", headers=chat.a.headers(Role.LEAD))
    problem(lead, 403, "session_access_denied")
    listed = await chat.http.get(f"{API}/chats", headers=chat.b.headers(Role.OWNER))
    assert listed.json() == []


async def test_without_an_llm_a_message_is_refused_before_anything_is_stored(settings: Settings) -> None:
    async with chat_app(settings, llm=LLM(LLMSettings())) as chat:
        chat_id = await chat.new_chat()
        refused = await chat.http.post(f"{API}/sessions/{chat_id}/messages", json={"text": "hi"},
                                       headers=chat.a.headers(Role.ENGINEER))
        problem(refused, 503, "llm_not_configured")
        assert (await chat.detail(chat_id))["messages"] == []


async def test_ss039_a_provider_failing_before_the_first_token_falls_back_once(settings: Settings) -> None:
    overloaded = Reply(error=ProviderUnavailable("overloaded", model="test:primary"))
    primary = ScriptedModel([overloaded, overloaded], name="test:primary")  # the reply, and the title
    backup = ChatModel()
    backup.add("From the backup model.")
    async with chat_app(settings, llm=LLM.for_model(FallbackModel([primary, backup]))) as chat:
        turn = await chat.send(await chat.new_chat(), "hi")
    assert turn["status"] == "complete"
    assert turn["content"] == "From the backup model."
    assert sorted(r.stream for r in primary.requests) == [False, True]
    assert len(backup.seen) == 1  # one fallback, before anything was streamed


async def test_ss039_a_turn_falls_back_at_most_once_on_a_longer_route(settings: Settings) -> None:
    """Issue #4: a three-model route falls back once a turn; the third model is never asked."""
    overloaded = Reply(error=ProviderUnavailable("overloaded", model="test:x"))
    first = ScriptedModel([overloaded, overloaded], name="test:first")
    second = ScriptedModel([overloaded, overloaded], name="test:second")
    third = ChatModel()
    third.add("Never asked.")
    async with chat_app(settings, llm=LLM.for_model(FallbackModel([first, second, third]))) as chat:
        response, frames = await chat.stream(await chat.new_chat(), "hi")
    assert response.status_code == 200
    error = next(f["part"] for f in frames if f["part"] != "[DONE]" and f["part"]["type"] == "error")
    assert error["errorCode"] == "llm_all_models_failed"
    assert [r.stream for r in first.requests].count(True) == 1
    assert [r.stream for r in second.requests].count(True) == 1
    assert third.seen == []


# --- images (UC-003, SS-043) -------------------------------------------------------------------------

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64).decode()
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0" + b"\x00" * 64).decode()


@pytest.fixture
async def vision_chat(settings: Settings) -> AsyncIterator[ChatApp]:
    """The chat app with its `ChatModel` listed as vision-capable (`llm.vision_models`)."""
    model, recorder = ChatModel(), MemoryRecorder()
    llm = LLM.for_model(model, recorder=recorder, settings=LLMSettings(vision_models=["test:chat"]))
    async with chat_app(settings, llm=llm) as running:
        yield dataclasses.replace(running, model=model, recorder=recorder)


async def test_uc003_images_reach_a_vision_model_and_the_stored_message_notes_them(vision_chat: ChatApp) -> None:
    chat = vision_chat
    chat_id = await chat.new_chat()
    chat.model.add("That is Outlook's modern authentication prompt.", "Then clear the token cache.")
    images = [{"media_type": "image/png", "data": PNG}, {"media_type": "image/jpeg", "data": JPEG}]

    response = await chat.http.post(f"{API}/sessions/{chat_id}/messages", json={"text": "What is this?",
                                    "images": images}, headers={**chat.a.headers(Role.ENGINEER), **SSE})

    frames = read_frames(response.text)
    assert data_of(frames, "thinking-step")["items"] == ["Processing: What is this? [2 images]"]
    assert data_of(frames, "user-message-id")["text"] == "What is this?\n\n[2 images attached]"
    current = chat.model.seen[0][-1]
    assert (current.role, current.content) == ("user", "What is this?")
    assert current.images == (ImagePart("image/png", PNG), ImagePart("image/jpeg", JPEG))
    detail = await chat.detail(chat_id)
    assert detail["last_turn"]["status"] == "complete"
    assert [m["content"] for m in detail["messages"]] == [
        "What is this?\n\n[2 images attached]", "That is Outlook's modern authentication prompt.",
    ]
    # The record of the exchange keeps placeholders, not the pixels.
    recorded = json.dumps([c.messages_json() for c in chat.recorder.calls])
    assert PNG not in recorded
    assert ImagePart("image/png", PNG).placeholder in recorded

    # The images are kept with their message: a later turn shows them to the model again.
    await chat.send(chat_id, "It keeps coming back")
    earlier, latest = [m for m in chat.model.seen[1] if m.role == "user"]
    assert (earlier.content, latest.content) == ("What is this?\n\n[2 images attached]", "It keeps coming back")
    assert earlier.images == (ImagePart("image/png", PNG), ImagePart("image/jpeg", JPEG))
    assert latest.images == ()


async def test_uc003_kept_images_are_served_back_to_whoever_may_read_the_chat(vision_chat: ChatApp) -> None:
    chat = vision_chat
    chat_id = await chat.new_chat()
    chat.model.add("A certificate warning.")
    images = [{"media_type": "image/png", "data": PNG}, {"media_type": "image/jpeg", "data": JPEG}]
    sent = await chat.http.post(f"{API}/sessions/{chat_id}/messages", json={"text": "See", "images": images},
                                headers=chat.a.headers(Role.ENGINEER))
    assert sent.status_code == 200, sent.text
    messages = (await chat.detail(chat_id))["messages"]
    assert [m["images"] for m in messages] == [2, 0]
    url = f"{API}/sessions/{chat_id}/messages/{messages[0]['id']}/images"

    second = await chat.http.get(f"{url}/2", headers=chat.a.headers(Role.ENGINEER))
    assert second.status_code == 200
    assert second.headers["content-type"] == "image/jpeg"
    assert second.headers["x-content-type-options"] == "nosniff"
    assert second.content == base64.b64decode(JPEG)
    problem(await chat.http.get(f"{url}/3", headers=chat.a.headers(Role.ENGINEER)), 404, "image_not_found")
    problem(await chat.http.get(f"{url}/0", headers=chat.a.headers(Role.ENGINEER)), 422, "validation_failed")
    reply = f"{API}/sessions/{chat_id}/messages/{messages[1]['id']}/images/1"
    problem(await chat.http.get(reply, headers=chat.a.headers(Role.ENGINEER)), 404, "image_not_found")
    # Another account does not find the chat at all.
    problem(await chat.http.get(f"{url}/1", headers=chat.b.headers(Role.OWNER)), 404, "chat_session_not_found")


async def test_uc003_only_the_newest_kept_images_go_to_the_model_again(
    vision_chat: ChatApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each image costs input tokens on every turn: past IMAGES_IN_HISTORY the older ones are only their note.
    Read from the database as from the context the previous turn left on this process alike."""
    monkeypatch.setattr(stored_images, "IMAGES_IN_HISTORY", 2)
    chat = vision_chat
    chat_id = await chat.new_chat()
    chat.model.add("One.", "Two.", "Three.", "Four.")
    for text, image in (("first", PNG), ("second", JPEG)):
        response = await chat.http.post(
            f"{API}/sessions/{chat_id}/messages",
            json={"text": text, "images": [{"media_type": "image/png" if image is PNG else "image/jpeg",
                                            "data": image}] * (2 if text == "second" else 1)},
            headers=chat.a.headers(Role.ENGINEER),
        )
        assert response.status_code == 200, response.text
    for cached in (True, False):
        if not cached:
            chat.state.chat_contexts.forget(uuid.UUID(chat_id))
        await chat.send(chat_id, "and now?")
        first, second = [m for m in chat.model.seen[-1] if m.role == "user"][:2]
        assert first.images == ()
        assert second.images == (ImagePart("image/jpeg", JPEG),) * 2


async def test_ss045_a_regenerated_reply_answers_the_message_with_its_images(vision_chat: ChatApp) -> None:
    chat = vision_chat
    chat_id = await chat.new_chat()
    chat.model.add("A printer dialog.", "The spooler's error dialog.")
    sent = await chat.http.post(f"{API}/sessions/{chat_id}/messages",
                                json={"text": "What is this?", "images": [{"media_type": "image/png", "data": PNG}]},
                                headers=chat.a.headers(Role.ENGINEER))
    assert sent.status_code == 200, sent.text
    again = await chat.http.post(f"{API}/sessions/{chat_id}/regenerate", headers=chat.a.headers(Role.ENGINEER))
    assert again.status_code == 200, again.text
    asked = chat.model.seen[-1][-1]
    assert (asked.role, asked.images) == ("user", (ImagePart("image/png", PNG),))


async def _send_only_an_image(chat: ChatApp, chat_id: str) -> httpx.Response:
    return await chat.http.post(f"{API}/sessions/{chat_id}/messages",
                                json={"images": [{"media_type": "image/png", "data": PNG}]},
                                headers=chat.a.headers(Role.ENGINEER))


async def test_uc003_a_message_may_be_images_only(vision_chat: ChatApp) -> None:
    chat = vision_chat
    chat_id = await chat.new_chat()
    chat.model.add("A certificate warning from the VPN client.")

    response = await _send_only_an_image(chat, chat_id)

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "complete"
    current = chat.model.seen[0][-1]
    assert (current.content, len(current.images)) == ("", 1)
    detail = await chat.detail(chat_id)
    assert detail["messages"][0]["content"] == "[1 image attached]"
    assert detail["session"]["problem_summary"] is None  # nothing to summarise from an image alone


async def test_uc002_ss038_after_an_images_only_first_message_the_first_words_name_the_chat(
    vision_chat: ChatApp,
) -> None:
    chat = vision_chat
    chat.model.title = "VPN certificate warning"
    chat_id = await chat.new_chat()
    chat.model.add("A certificate warning from the VPN client.")
    response = await _send_only_an_image(chat, chat_id)
    assert response.status_code == 200, response.text
    assert (await chat.detail(chat_id))["session"]["title"] == "New Chat"  # nothing yet to name it by

    chat.model.add("Then check the certificate's expiry date.")
    await chat.send(chat_id, "The VPN client says the server certificate is untrusted")
    session = (await chat.detail(chat_id))["session"]
    assert session["title"] == "VPN certificate warning"
    assert session["problem_summary"].startswith("The VPN client says")

    chat.model.title = "Something else entirely"
    chat.model.add("Good.")
    await chat.send(chat_id, "It expired yesterday")
    assert (await chat.detail(chat_id))["session"]["title"] == "VPN certificate warning"  # named once


async def test_uc003_bad_images_are_refused_and_store_nothing(vision_chat: ChatApp) -> None:
    chat = vision_chat
    chat_id = await chat.new_chat()
    url, engineer = f"{API}/sessions/{chat_id}/messages", chat.a.headers(Role.ENGINEER)

    async def send(*images: dict[str, str], text: str = "see") -> Any:
        return await chat.http.post(url, json={"text": text, "images": list(images)}, headers=engineer)

    body = problem(await send({"media_type": "image/png", "data": "not base64!"}), 422, "image_invalid")
    assert body["detail"].startswith("Image 1 is not valid base64")
    problem(await send({"media_type": "image/png", "data": PNG}, {"media_type": "image/png", "data": JPEG}), 422,
            "image_invalid")  # JPEG bytes labelled PNG
    oversized = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * (MAX_IMAGE_BASE64_CHARS * 3 // 4)).decode()
    body = problem(await send({"media_type": "image/png", "data": oversized}), 422, "image_too_large")
    assert body["image"] == 1
    problem(await send(*[{"media_type": "image/png", "data": PNG}] * 5), 422, "validation_failed")
    problem(await send({"media_type": "image/bmp", "data": PNG}), 422, "validation_failed")
    problem(await send(text="  "), 422, "message_empty")
    assert (await chat.detail(chat_id))["messages"] == []
    assert chat.model.requests == []


async def test_the_sessions_lifecycle_routes_serve_chats_too(chat: ChatApp) -> None:
    """`POST /sessions/{id}/{pause|resume|resolve|abandon|escalate|pickup}` act on a chat as on a guided session."""
    engineer, lead = chat.a.headers(Role.ENGINEER), chat.a.headers(Role.LEAD)
    chat_id = await chat.new_chat()
    paused = await chat.http.post(f"{API}/sessions/{chat_id}/pause", headers=engineer)
    assert (paused.status_code, paused.json()["status"], paused.json()["kind"]) == (200, "paused", "chat")
    resumed = await chat.http.post(f"{API}/sessions/{chat_id}/resume", headers=engineer)
    assert resumed.json()["status"] == "active"
    problem(await chat.http.post(f"{API}/sessions/{chat_id}/pickup", headers=lead), 403, "session_access_denied")
    escalated = await chat.http.post(f"{API}/sessions/{chat_id}/escalate", json={"reason": "Out of ideas"},
                                     headers=engineer)
    assert escalated.json()["status"] == "requesting_escalation"
    picked = await chat.http.post(f"{API}/sessions/{chat_id}/pickup", headers=lead)
    assert picked.json()["status"] == "active"
    resolved = await chat.http.post(f"{API}/sessions/{chat_id}/resolve",
                                    json={"resolution_summary": "DHCP scope widened"}, headers=lead)
    assert resolved.json()["status"] == "resolved"
    async with chat.state.db.system_session() as db:
        stored = await db.get(PilotSession, uuid.UUID(chat_id))
        assert stored is not None
        assert stored.resolution_summary == "DHCP scope widened"
    # The guided rules hold: a resolved chat cannot be abandoned (FP-031).
    problem(await chat.http.post(f"{API}/sessions/{chat_id}/abandon", headers=lead), 409, "invalid_session_state")
    other = await chat.new_chat()
    abandoned = await chat.http.post(f"{API}/sessions/{other}/abandon", json={"reason": "Duplicate"},
                                     headers=engineer)
    assert abandoned.json()["status"] == "abandoned"
    # Another account sees nothing.
    problem(await chat.http.post(f"{API}/sessions/{other}/pause", headers=chat.b.headers(Role.OWNER)), 404,
            "session_not_found")


async def test_a_chat_can_be_renamed_and_keeps_the_engineers_title_over_a_generated_one(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    engineer = chat.a.headers(Role.ENGINEER)
    renamed = await chat.http.patch(f"{API}/chats/{chat_id}", json={"title": "  VPN   drops  "}, headers=engineer)
    assert (renamed.status_code, renamed.json()["title"]) == (200, "VPN drops")
    chat.model.add("Let's look.")
    await chat.send(chat_id, "Client laptops drop the VPN")  # the model also proposes a title on a first turn
    assert (await chat.detail(chat_id))["session"]["title"] == "VPN drops"
    for bad in ({"title": ""}, {"title": "   "}, {"title": "x" * 101}, {"title": "ok", "extra": 1}):
        problem(await chat.http.patch(f"{API}/chats/{chat_id}", json=bad, headers=engineer), 422,
                "validation_failed")
    problem(await chat.http.patch(f"{API}/chats/{chat_id}", json={"title": "Mine"},
                                  headers=chat.b.headers(Role.OWNER)), 404, "chat_session_not_found")
    assert (await chat.http.patch(f"{API}/chats/{chat_id}", json={"title": "Mine"},
                                  headers=chat.a.headers(Role.VIEWER))).status_code == 403
