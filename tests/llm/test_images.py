"""Images in user messages: the adapters' wire formats, the vision capability gate, and placeholders in records."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from deskpilot.identity.models import Account
from deskpilot.llm import (
    LLM,
    CallContext,
    LLMNotConfigured,
    MemoryRecorder,
    Message,
    SqlRecorder,
    reconstruct_messages,
)
from deskpilot.llm.messages import ImagePart
from deskpilot.llm.models import LLMCall, LLMPrompt
from deskpilot.llm.routing import accepts_images
from deskpilot.llm.testing import ScriptedModel
from deskpilot.settings import DEFAULT_VISION_MODELS, LLMSettings, Settings
from deskpilot.storage import Base, Database
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer, text_reply

PNG_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8  # 2,056 bytes
PNG = ImagePart("image/png", base64.b64encode(PNG_BYTES).decode())
JPEG = ImagePart("image/jpeg", base64.b64encode(b"\xff\xd8\xff\xe0" + b"\x00" * 60).decode())


def _placeholder(image: ImagePart, raw: bytes) -> str:
    return f"[image {image.media_type}, {(len(raw) + 1023) // 1024} KB, sha256 {hashlib.sha256(raw).hexdigest()[:16]}]"


# --- the provider-neutral message -----------------------------------------------------------------


def test_a_user_message_without_images_is_what_it_was() -> None:
    message = Message.user("hello")
    assert message.images == ()
    assert message.to_dict() == {"role": "user", "content": "hello"}
    assert Message.user("hello") == Message("user", "hello")


def test_images_are_recorded_as_placeholders_never_as_data() -> None:
    message = Message.user("what is this error?", [PNG, JPEG])

    data = message.to_dict()

    assert data == {
        "role": "user",
        "content": "what is this error?",
        "images": [_placeholder(PNG, PNG_BYTES), _placeholder(JPEG, base64.b64decode(JPEG.data))],
    }
    assert PNG.placeholder == f"[image image/png, 3 KB, sha256 {hashlib.sha256(PNG_BYTES).hexdigest()[:16]}]"
    assert PNG.data not in json.dumps(data)
    assert PNG.data_url == f"data:image/png;base64,{PNG.data}"
    assert PNG.placeholder is PNG.placeholder  # computed once


def test_the_placeholder_of_data_that_does_not_decode_hashes_the_text() -> None:
    odd = ImagePart("image/png", "not base64!")
    assert odd.placeholder == f"[image image/png, 1 KB, sha256 {hashlib.sha256(b'not base64!').hexdigest()[:16]}]"


async def test_test_models_see_the_images() -> None:
    model = ScriptedModel(["a login dialog"])
    llm = LLM.for_model(model)

    await llm.text("chat", [Message.system("be brief"), Message.user("what is it?", [PNG])], account_id=None)

    (seen,) = model.requests
    assert seen.last_user_images == (PNG,)
    assert seen.last_user_text == "what is it?"


# --- the adapters' wire formats --------------------------------------------------------------------


async def test_openai_sends_text_then_image_url_parts(llm: LLM, openai_server: FakeOpenAIServer) -> None:
    openai_server.enqueue(text_reply("An expired certificate warning."), text_reply("A login prompt."))

    await llm.text("quick", [Message.system("be brief"), Message.user("what is this?", [PNG, JPEG])],
                   account_id=None)
    async with llm.stream("quick", [Message.user("", [PNG])], account_id=None) as stream:
        assert "".join([delta async for delta in stream]) == "A login prompt."

    plain, streamed = openai_server.requests
    assert plain.body["messages"] == [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG.data}"}},
                {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{JPEG.data}"}},
            ],
        },
    ]
    # An images-only message has no (empty) text part.
    assert streamed.body["messages"] == [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG.data}"}}]}
    ]


async def test_earlier_text_messages_stay_plain_strings(llm: LLM, openai_server: FakeOpenAIServer) -> None:
    openai_server.enqueue(text_reply("ok"))
    history = [Message.user("first"), Message.assistant("noted"), Message.user("and this?", [JPEG])]

    await llm.text("quick", history, account_id=None)

    messages = openai_server.last_request.body["messages"]
    assert messages[:2] == [{"role": "user", "content": "first"}, {"role": "assistant", "content": "noted"}]
    assert isinstance(messages[2]["content"], list)


async def test_anthropic_sends_base64_image_blocks_then_text(
    llm: LLM, anthropic_server: FakeAnthropicServer, recorder: MemoryRecorder
) -> None:
    anthropic_server.enqueue(text_reply("A DNS error page."), text_reply("Two screenshots of Outlook."))

    async with llm.stream("chat", [Message.system("be brief"), Message.user("what is this?", [PNG])],
                          account_id=None) as stream:
        assert "".join([delta async for delta in stream]) == "A DNS error page."
    await llm.text("chat", [Message.user("", [PNG, JPEG])], account_id=None)

    streamed, plain = anthropic_server.requests
    assert streamed.body["system"] == "be brief"
    assert streamed.body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG.data}},
                {"type": "text", "text": "what is this?"},
            ],
        }
    ]
    # The API refuses empty text blocks: an images-only message is image blocks alone.
    assert plain.body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG.data}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": JPEG.data}},
            ],
        }
    ]
    # What was sent is recorded with placeholders.
    first, second = recorder.calls
    assert first.messages_json()[1] == {"role": "user", "content": "what is this?", "images": [PNG.placeholder]}
    assert second.messages_json() == [{"role": "user", "content": "", "images": [PNG.placeholder, JPEG.placeholder]}]


# --- recording in SQL ------------------------------------------------------------------------------


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'llm.db'}")
    tables = [Base.metadata.tables[t.__tablename__] for t in (Account, LLMCall, LLMPrompt)]
    async with db.engine.begin() as conn:
        await conn.run_sync(lambda sync: Base.metadata.create_all(sync, tables=tables))
    yield db
    await db.dispose()


async def test_llm_calls_keep_placeholders_and_the_conversation_rebuilds_as_text(database: Database) -> None:
    account = Account(name="Acme IT", slug="acme-it")
    async with database.unscoped_session() as session:
        session.add(account)
        await session.commit()
    model = ScriptedModel(["A certificate warning.", "Renew it in the portal."])
    llm = LLM.for_model(model, recorder=SqlRecorder(database))
    context = CallContext(subject_type="chat", subject_id=uuid.uuid4())
    first = [Message.system("be brief"), Message.user("what is this?", [PNG])]
    one = await llm.text("chat", first, account_id=account.id, context=context)
    second = [*first, Message.assistant(one.value), Message.user("how do I fix it?")]
    two = await llm.text("chat", second, account_id=account.id, context=context)

    async with database.session(account.id) as session:
        rows = {r.id: r for r in (await session.execute(select(LLMCall))).scalars()}
        rebuilt = await reconstruct_messages(session, two.record_id)
    assert PNG.data not in json.dumps([r.messages for r in rows.values()])
    assert rows[one.record_id].messages == [{"role": "user", "content": "what is this?", "images": [PNG.placeholder]}]
    # The second call stores only what it added; the image's placeholder is part of the shared prefix.
    assert rows[two.record_id].prefix_call_id == one.record_id
    assert rebuilt == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "what is this?", "images": [PNG.placeholder]},
        {"role": "assistant", "content": "A certificate warning."},
        {"role": "user", "content": "how do I fix it?"},
    ]


# --- the capability gate ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "vision"),
    [
        ("openai:gpt-4o", True),
        ("openai:gpt-4o-mini", True),
        ("openai:gpt-4.1-nano", True),
        ("openai:gpt-5-mini", True),
        ("openai:o3", True),
        ("openai:o4-mini", True),
        ("openai:o1-2024-12-17", True),
        ("openai:o3-mini", False),
        ("openai:o1-mini", False),
        ("openai:gpt-3.5-turbo", False),
        ("anthropic:claude-sonnet-4-5", True),
        ("anthropic:claude-3-5-haiku-latest", True),
        ("ollama:llava", False),
        ("test:scripted", False),
    ],
)
def test_default_vision_models(name: str, vision: bool) -> None:
    assert accepts_images(LLMSettings(), name) is vision


def test_a_purpose_takes_images_only_when_its_whole_chain_does(settings: LLMSettings) -> None:
    llm = LLM(settings)
    assert llm.supports_images("chat") is True  # anthropic:claude-sonnet-4-5
    assert llm.supports_images("agent") is True  # gpt-4o-mini, then claude
    mixed = LLM(settings.model_copy(update={"routes": {"chat": ["openai:gpt-4o", "ollama:llama3.1"]}}))
    assert mixed.supports_images("chat") is False


def test_without_a_model_the_gate_says_what_to_configure() -> None:
    with pytest.raises(LLMNotConfigured):
        LLM(LLMSettings()).supports_images("chat")


def test_test_models_take_images_when_listed() -> None:
    assert LLM.for_model(ScriptedModel()).supports_images("chat") is False
    listed = LLM.for_model(ScriptedModel(), settings=LLMSettings(vision_models=["test:*"]))
    assert listed.supports_images("chat") is True


def test_vision_models_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None).llm.vision_models == list(DEFAULT_VISION_MODELS)
    monkeypatch.setenv("DESKPILOT_LLM__VISION_MODELS", '["ollama:llava*", "openai:gpt-4o*"]')
    monkeypatch.setenv("DESKPILOT_LLM__ROUTES__CHAT", '["ollama:llava:13b", "openai:gpt-4o"]')

    llm = LLM(Settings(_env_file=None).llm)

    assert llm.supports_images("chat") is True
    assert accepts_images(llm.settings, "anthropic:claude-sonnet-4-5") is False  # the list replaces the default


def test_a_part_made_from_its_bytes_is_the_part_of_its_base64_and_decodes_nothing_again() -> None:
    made = ImagePart.from_bytes("image/png", PNG_BYTES)
    assert made == PNG
    assert made.raw is PNG_BYTES
    assert made.sha256 == hashlib.sha256(PNG_BYTES).hexdigest()
    assert made.placeholder == PNG.placeholder
