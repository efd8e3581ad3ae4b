"""No transaction, so no pooled connection, is held while the model thinks; llm_calls rows join the commit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
from sqlalchemy import func, select

from deskpilot.llm import LLM, CallRecord, Message, RequestParams, SqlRecorder
from deskpilot.llm.models import LLMCall
from deskpilot.llm.testing import FunctionModel, Reply
from deskpilot.pilot import prompts, service
from deskpilot.pilot.schemas import SessionCreate, StepResponse
from deskpilot.settings import Settings
from deskpilot.storage import Database
from tests.pilot.conftest import Desk, action, classification, make_desk, question

CONCURRENT = 30
MODEL_DELAY_S = 0.2


@pytest.fixture
async def small_pool_desk(settings: Settings) -> AsyncIterator[Desk]:
    # Two connections and no overflow: a model call holding one would starve the others within seconds.
    db = Database(settings.database.url, pool_options={"pool_size": 2, "max_overflow": 0, "pool_timeout": 5})
    desk = await make_desk(db)
    yield desk
    await desk.pubsub.close()
    await db.dispose()


async def slow_answer(messages: Sequence[Message], params: RequestParams) -> Reply:
    await asyncio.sleep(MODEL_DELAY_S)
    if messages[0].content == prompts.CLASSIFICATION_PROMPT:
        return classification()
    if any(m.role == "assistant" for m in messages):
        return action()
    return question()


class CountingRecorder(SqlRecorder):
    """Counts the exchanges recorded in a transaction of the recorder's own."""

    def __init__(self, database: Database) -> None:
        super().__init__(database)
        self.own_transactions = 0

    async def record(self, call: CallRecord) -> None:
        self.own_transactions += 1
        await super().record(call)


async def llm_call_count(desk: Desk) -> int:
    async with desk.session() as s:
        return int(await s.scalar(select(func.count()).select_from(LLMCall)) or 0)


async def test_concurrent_starts_and_turns_share_a_small_pool(small_pool_desk: Desk) -> None:
    desk = small_pool_desk
    recorder = CountingRecorder(desk.db)
    deps = desk.deps(LLM.for_model(FunctionModel(slow_answer), recorder=recorder))

    started = await asyncio.gather(*(
        desk.call(service.start_session, deps, desk.engineer, SessionCreate(text=f"Outlook prompts, user {i}"))
        for i in range(CONCURRENT)
    ))
    assert all(s.first_step.content["type"] == "question" for s in started)
    assert await llm_call_count(desk) == 2 * CONCURRENT  # classification and first step of each

    turns = await asyncio.gather(*(
        desk.call(service.respond, deps, desk.engineer, s.session_id, StepResponse(selected_option="web"))
        for s in started
    ))
    assert all(t.next_step.content["type"] == "action" for t in turns)
    assert await llm_call_count(desk) == 3 * CONCURRENT
    # Every llm_calls row went into the commit of its session or step, none into a transaction of its own.
    assert recorder.own_transactions == 0
