"""Every exchange is recorded: in memory for tests, as llm_calls rows in SQL; recorder failures never break calls."""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import BaseModel
from sqlalchemy import func, select

from deskpilot.identity.models import Account
from deskpilot.llm import (
    LLM,
    CallContext,
    CallRecord,
    MemoryRecorder,
    ProviderRateLimited,
    SqlRecorder,
    StructuredOutputError,
    reconstruct_messages,
    record_row,
)
from deskpilot.llm.messages import Message
from deskpilot.llm.models import LLMCall, LLMPrompt
from deskpilot.llm.testing import Reply, ScriptedModel, tool_call
from deskpilot.llm.tools import tool
from deskpilot.storage import Base, Database


class Step(BaseModel):
    type: str
    content: str


GOOD = {"type": "question", "content": "Is the VPN client up to date?"}


@tool
async def ping() -> str:
    """Answers pong."""
    return "pong"


async def test_memory_recorder_sees_each_exchange(recorder: MemoryRecorder) -> None:
    model = ScriptedModel(["nope", Reply.json(GOOD, input_tokens=12, output_tokens=9)])
    llm = LLM.for_model(model, recorder=recorder)
    account_id = uuid.uuid4()
    context = CallContext(client_id=uuid.uuid4(), subject_type="pilot_session", subject_id=uuid.uuid4())

    result = await llm.structured("pilot_step", "VPN drops", Step, account_id=account_id, context=context)

    bad, good = recorder.calls
    assert bad.error_code == "llm_invalid_output"
    assert bad.error is not None
    assert "Invalid JSON" in bad.error
    assert bad.raw_output == "nope"
    assert bad.parsed is None
    assert good.id == result.record_id
    assert good.parsed_json() == GOOD
    assert good.error is None
    assert (good.purpose, good.model, good.account_id, good.context) == (
        "pilot_step",
        "test:scripted",
        account_id,
        context,
    )
    assert (good.input_tokens, good.output_tokens) == (12, 9)
    assert [m["role"] for m in good.messages_json()] == ["user", "assistant", "user"]
    assert good.created_at.tzinfo is not None


async def test_failures_and_tool_rounds_are_recorded(recorder: MemoryRecorder) -> None:
    llm = LLM.for_model(ScriptedModel([ProviderRateLimited("slow down", model="test:scripted")]), recorder=recorder)
    with pytest.raises(ProviderRateLimited):
        await llm.text("quick", "hi", account_id=None)
    assert recorder.last.error_code == "llm_rate_limited"
    assert recorder.last.error == "slow down"

    llm = LLM.for_model(ScriptedModel([Reply.calls(tool_call("ping", {}, id="c1")), "done"]), recorder=recorder)
    await llm.run_tools("agent", "go", [ping], account_id=None)
    asked, answered = recorder.calls[-2:]
    assert json.loads(asked.raw_output) == {
        "text": "",
        "tool_calls": [{"id": "c1", "name": "ping", "arguments": "{}"}],
    }
    assert answered.messages_json()[-1]["content"] == "pong"


async def test_a_failing_recorder_never_breaks_the_call(caplog: pytest.LogCaptureFixture) -> None:
    class BrokenRecorder:
        async def record(self, call: CallRecord) -> None:
            raise ConnectionError("database is down")

    llm = LLM.for_model(ScriptedModel(["fine"]), recorder=BrokenRecorder())
    with caplog.at_level(logging.WARNING, logger="deskpilot.llm.facade"):
        result = await llm.text("quick", "hi", account_id=None)

    assert result.value == "fine"
    assert "recording LLM call" in caplog.text
    assert "database is down" in caplog.text


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'llm.db'}")
    tables = [Base.metadata.tables[t.__tablename__] for t in (Account, LLMCall, LLMPrompt)]
    async with db.engine.begin() as conn:
        await conn.run_sync(lambda sync: Base.metadata.create_all(sync, tables=tables))
    yield db
    await db.dispose()


async def _account(db: Database, name: str) -> uuid.UUID:
    account = Account(name=name, slug=name.lower().replace(" ", "-"))
    async with db.unscoped_session() as session:
        session.add(account)
        await session.commit()
    return account.id


async def test_sql_recorder_stores_rows_per_account(database: Database) -> None:
    acme = await _account(database, "Acme IT")
    globex = await _account(database, "Globex")
    session_id = uuid.uuid4()
    client_id = uuid.uuid4()
    context = CallContext(client_id=client_id, subject_type="pilot_session", subject_id=session_id)
    model = ScriptedModel(
        [
            Reply('{"type": 1}', input_tokens=100, output_tokens=10),
            Reply.json(GOOD, input_tokens=120, output_tokens=20),
            Reply("not json", input_tokens=5, output_tokens=5),
            Reply("still not", input_tokens=5, output_tokens=5),
        ]
    )
    llm = LLM.for_model(model, recorder=SqlRecorder(database))

    result = await llm.structured("pilot_step", "VPN drops", Step, account_id=acme, context=context)
    with pytest.raises(StructuredOutputError):
        await llm.structured("quick", "classify", Step, account_id=globex)

    async with database.session(acme) as session:
        rows = (await session.execute(select(LLMCall))).scalars().all()
        spent = await session.scalar(
            select(func.sum(LLMCall.input_tokens + LLMCall.output_tokens)).where(
                LLMCall.subject_type == "pilot_session", LLMCall.subject_id == str(session_id)
            )
        )
    assert len(rows) == 2  # the other account's calls are invisible
    assert spent == 250
    good = next(r for r in rows if r.error is None)
    assert good.id == result.record_id
    assert good.parsed is None  # kept once, in raw_output
    assert good.parsed_value == GOOD
    assert good.purpose == "pilot_step"
    assert good.model == "test:scripted"
    assert good.client_id == client_id
    assert good.fallback_used is False
    # The corrective retry stores only what it added to the first exchange; the whole prompt is rebuilt.
    async with database.session(acme) as session:
        sent = await reconstruct_messages(session, good.id)
    assert sent[0] == {"role": "user", "content": "VPN drops"}
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert [m["role"] for m in good.messages] == ["assistant", "user"]
    assert good.created_at.tzinfo is not None
    bad = next(r for r in rows if r.error is not None)
    assert bad.error_code == "llm_invalid_output"
    assert bad.raw_output == '{"type": 1}'
    assert bad.parsed is None
    assert (good.prefix_call_id, good.prefix_len) == (bad.id, 1)
    assert bad.prefix_call_id is None

    async with database.session(globex) as session:
        codes = (await session.execute(select(LLMCall.error_code))).scalars().all()
    assert codes == ["llm_invalid_output", "llm_invalid_output"]


async def test_sql_recorder_skips_calls_without_account(database: Database) -> None:
    llm = LLM.for_model(ScriptedModel(["hi"]), recorder=SqlRecorder(database))
    await llm.text("quick", "hello", account_id=None)
    async with database.system_session() as session:
        assert await session.scalar(select(func.count()).select_from(LLMCall)) == 0


class _CountingRecorder(SqlRecorder):
    """A SqlRecorder that counts the transactions of its own it opens."""

    def __init__(self, database: Database) -> None:
        super().__init__(database)
        self.own_transactions = 0

    async def record(self, call: CallRecord) -> None:
        self.own_transactions += 1
        await super().record(call)


async def _llm_call_ids(db: Database, account_id: uuid.UUID) -> list[uuid.UUID]:
    async with db.session(account_id) as session:
        return list((await session.scalars(select(LLMCall.id).order_by(LLMCall.created_at))).all())


async def test_deferred_records_are_written_in_the_callers_transaction(database: Database) -> None:
    acme = await _account(database, "Acme IT")
    recorder = _CountingRecorder(database)
    llm = LLM.for_model(ScriptedModel(["not json", Reply.json(GOOD)]), recorder=recorder)

    async with database.session(acme) as session, llm.deferred_recording() as records:
        assert records is not None
        result = await llm.structured("pilot_step", "VPN drops", Step, account_id=acme)
        assert [r.id for r in records.pending][-1] == result.record_id
        assert records.add_to(session) == 2  # the corrective retry is its own exchange
        await session.commit()
        records.stored()
        assert records.pending == ()

    assert recorder.own_transactions == 0
    ids = await _llm_call_ids(database, acme)
    assert len(ids) == 2
    assert ids[-1] == result.record_id


async def test_deferred_records_not_stored_by_the_caller_go_to_the_recorder(database: Database) -> None:
    acme = await _account(database, "Acme IT")
    recorder = _CountingRecorder(database)
    llm = LLM.for_model(ScriptedModel([Reply.json(GOOD), Reply.json(GOOD)]), recorder=recorder)

    # The caller's transaction is rolled back: its rows are gone, the block's end records them after all.
    async with database.session(acme) as session, llm.deferred_recording() as records:
        assert records is not None
        first = await llm.structured("pilot_step", "one", Step, account_id=acme)
        records.add_to(session)
        await session.rollback()
    assert recorder.own_transactions == 1
    assert await _llm_call_ids(database, acme) == [first.record_id]

    # The block fails before the caller stores anything.
    made: list[uuid.UUID] = []

    async def failing_block() -> None:
        async with llm.deferred_recording():
            made.append((await llm.structured("pilot_step", "two", Step, account_id=acme)).record_id)
            raise RuntimeError("the caller failed")

    with pytest.raises(RuntimeError):
        await failing_block()
    assert recorder.own_transactions == 2
    assert await _llm_call_ids(database, acme) == [first.record_id, *made]


async def test_deferred_records_of_another_account_stay_with_the_recorder(database: Database) -> None:
    acme = await _account(database, "Acme IT")
    globex = await _account(database, "Globex")
    recorder = _CountingRecorder(database)
    llm = LLM.for_model(ScriptedModel([Reply.json(GOOD), Reply.json(GOOD)]), recorder=recorder)

    async with database.session(acme) as session, llm.deferred_recording() as records:
        assert records is not None
        mine = await llm.structured("pilot_step", "one", Step, account_id=acme)
        theirs = await llm.structured("pilot_step", "two", Step, account_id=globex)
        assert records.add_to(session) == 1
        await session.commit()
        records.stored()
        assert [r.id for r in records.pending] == [theirs.record_id]

    assert recorder.own_transactions == 1
    assert await _llm_call_ids(database, acme) == [mine.record_id]
    assert await _llm_call_ids(database, globex) == [theirs.record_id]


async def test_deferred_recording_changes_nothing_for_other_recorders() -> None:
    recorder = MemoryRecorder()
    llm = LLM.for_model(ScriptedModel(["hi"]), recorder=recorder)
    async with llm.deferred_recording() as records:
        assert records is None
        result = await llm.text("quick", "hello", account_id=None)
    assert recorder.last.id == result.record_id


def test_record_row_needs_an_account() -> None:
    llm_record = CallRecord(
        id=uuid.uuid4(), account_id=None, purpose="quick", model="test:scripted", fallback_used=False, messages=(),
        output_text="", tool_calls=(), parsed=None, error=None, error_code=None, input_tokens=0, output_tokens=0,
        latency_ms=0.0, created_at=datetime.now(UTC),
    )
    with pytest.raises(ValueError, match="no account"):
        record_row(llm_record)
    row = record_row(dataclasses.replace(llm_record, account_id=uuid.uuid4(), latency_ms=1.6))
    assert row.latency_ms == 2
    assert row.subject_id is None


class _WithDefaults(BaseModel):
    a: int
    b: str = "default"


@pytest.mark.parametrize(
    ("output", "stored"),
    [('{"a": 1}', None), ('{"a": 1, "b": "default"}', None), ('{"a": "1"}', {"a": 1, "b": "default"})],
)
def test_parsed_is_kept_only_when_it_is_not_the_reply_as_sent(output: str, stored: dict[str, object] | None) -> None:
    parsed = _WithDefaults.model_validate_json(output)
    llm_record = CallRecord(
        id=uuid.uuid4(), account_id=uuid.uuid4(), purpose="quick", model="test:scripted", fallback_used=False,
        messages=(), output_text=output, tool_calls=(), parsed=parsed, error=None, error_code=None,
        input_tokens=0, output_tokens=0, latency_ms=0.0, created_at=datetime.now(UTC),
    )
    row = record_row(llm_record)
    assert row.parsed == stored
    assert row.parsed_from_output is (stored is None)
    assert row.parsed_value is not None
    assert _WithDefaults.model_validate(row.parsed_value) == parsed


async def test_prompts_are_stored_once_even_by_recorders_that_do_not_know_them(migrated_database_url: str) -> None:
    """Two recorders (two workers) store the same system prompt: INSERT ... ON CONFLICT DO NOTHING, both dialects."""
    db = Database(migrated_database_url)
    try:
        acme = await _account(db, "Acme IT")
        system = Message.system("You are a careful IT assistant. " * 50)
        context = CallContext(subject_type="pilot_session", subject_id=uuid.uuid4())
        ids = []
        for _ in range(2):
            llm = LLM.for_model(ScriptedModel([Reply.json(GOOD), Reply.json(GOOD)]), recorder=SqlRecorder(db))
            async with db.session(acme) as session, llm.deferred_recording() as records:
                assert records is not None
                first = await llm.structured("pilot_step", [system, Message.user("one")], Step, account_id=acme,
                                             context=context)
                records.add_to(session)
                await session.commit()
                records.stored()
            second = await llm.structured(
                "pilot_step", [system, Message.user("one"), Message.assistant("ok"), Message.user("two")], Step,
                account_id=acme, context=context,
            )
            ids += [first.record_id, second.record_id]
        async with db.session(acme) as session:
            assert await session.scalar(select(func.count()).select_from(LLMPrompt)) == 1
            rows = {r.id: r for r in (await session.scalars(select(LLMCall))).all()}
            # Each recorder knows only its own calls: its first is stored in full, its second as a delta.
            assert [rows[i].prefix_call_id for i in ids] == [None, ids[0], None, ids[2]]
            assert rows[ids[1]].messages == [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "two"}]
            assert await reconstruct_messages(session, ids[3]) == [
                system.to_dict(), *(m.to_dict() for m in [Message.user("one"), Message.assistant("ok"),
                                                          Message.user("two")])]
    finally:
        await db.dispose()
