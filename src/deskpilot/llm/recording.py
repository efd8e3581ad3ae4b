"""Recording of every LLM exchange: the Recorder seam and its null, in-memory and SQL implementations."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel
from pydantic_core import to_json
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from deskpilot.llm.messages import Message, ToolCall
from deskpilot.storage import Database
from deskpilot.storage.tenancy import ALL_ACCOUNTS, SCOPE_KEY

if TYPE_CHECKING:
    from deskpilot.llm.models import LLMCall

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CallContext:
    """What an exchange belongs to, so cost can be summed per client and per session/run."""

    client_id: uuid.UUID | None = None
    subject_type: str | None = None
    subject_id: uuid.UUID | str | None = None


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One exchange with a model, as handed to a Recorder.

    Messages and the parsed value are kept as objects; `messages_json()`/`parsed_json()` convert them only
    for recorders that store them, so calls recorded nowhere pay nothing for serialisation.
    """

    id: uuid.UUID
    account_id: uuid.UUID | None
    purpose: str
    model: str
    fallback_used: bool
    messages: tuple[Message, ...]
    output_text: str
    tool_calls: tuple[ToolCall, ...]
    parsed: BaseModel | None
    error: str | None
    error_code: str | None
    input_tokens: int
    output_tokens: int
    latency_ms: float
    created_at: datetime
    context: CallContext | None = None

    @property
    def raw_output(self) -> str:
        """The reply as text; a reply that asked for tools is stored as JSON with its calls."""
        if not self.tool_calls:
            return self.output_text
        return to_json({"text": self.output_text, "tool_calls": [c.to_dict() for c in self.tool_calls]}).decode()

    def messages_json(self) -> list[dict[str, object]]:
        return [m.to_dict() for m in self.messages]

    def parsed_json(self) -> dict[str, object] | None:
        return None if self.parsed is None else self.parsed.model_dump(mode="json")


class Recorder(Protocol):
    """Where exchanges go. The facade logs and swallows a recorder's failures: recording never breaks a call."""

    async def record(self, call: CallRecord) -> None: ...


class NullRecorder:
    """Records nothing (benchmarks, one-off checks)."""

    async def record(self, call: CallRecord) -> None:
        return None


class MemoryRecorder:
    """Keeps records in a list, for tests."""

    def __init__(self) -> None:
        self.calls: list[CallRecord] = []

    async def record(self, call: CallRecord) -> None:
        self.calls.append(call)

    @property
    def last(self) -> CallRecord:
        return self.calls[-1]


def record_row(call: CallRecord) -> LLMCall:
    """The `llm_calls` row of one exchange, for a caller to add to its own session (needs `account_id`)."""
    # Imported here so that importing deskpilot.llm alone does not put llm_calls (and its foreign key to
    # accounts) into Base.metadata; deskpilot.all_models imports the table for migrations.
    from deskpilot.llm.models import LLMCall

    if call.account_id is None:
        raise ValueError(f"LLM call {call.id} has no account; it has no llm_calls row")
    context = call.context
    return LLMCall(
        id=call.id,
        account_id=call.account_id,
        created_at=call.created_at,
        purpose=call.purpose,
        model=call.model,
        fallback_used=call.fallback_used,
        messages=call.messages_json(),
        raw_output=call.raw_output,
        parsed=call.parsed_json(),
        error=call.error,
        error_code=call.error_code,
        input_tokens=call.input_tokens,
        output_tokens=call.output_tokens,
        latency_ms=round(call.latency_ms),
        client_id=context.client_id if context else None,
        subject_type=context.subject_type if context else None,
        subject_id=str(context.subject_id) if context and context.subject_id is not None else None,
    )


class SqlRecorder:
    """Inserts one `llm_calls` row per exchange, in one transaction of a session scoped to the call's account.

    Inside `LLM.deferred_recording()` the records are handed to the caller instead, to be written in the
    caller's own transaction (`DeferredRecords.add_to`); what the caller does not store is recorded here.
    """

    def __init__(self, database: Database) -> None:
        self._database = database

    @property
    def database(self) -> Database:
        return self._database

    async def record(self, call: CallRecord) -> None:
        if call.account_id is None:
            logger.debug("LLM call %s has no account; not stored", call.id)
            return
        row = record_row(call)
        async with self._database.session(call.account_id) as session:
            session.add(row)
            await session.commit()


class DeferredRecords:
    """The records of the exchanges made inside one `LLM.deferred_recording()` block, not yet stored.

    Call `add_to(session)` just before committing the caller's transaction and `stored()` once that commit
    succeeded; records never marked stored (the block failed, the commit was rolled back, another account or
    database) go to the LLM's recorder when the block ends, so none is lost.
    """

    __slots__ = ("_added", "_engine", "_pending")

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._pending: list[CallRecord] = []
        self._added: list[CallRecord] = []

    @property
    def pending(self) -> tuple[CallRecord, ...]:
        """The records not stored yet, oldest first."""
        return tuple(self._pending)

    def collect(self, call: CallRecord) -> None:
        self._pending.append(call)

    def add_to(self, session: AsyncSession) -> int:
        """Add the pending records this session can hold (same database, account in its scope) as rows.

        May be called again after a rollback (which discards the rows added before); returns how many were
        added.
        """
        scope: Any = session.info.get(SCOPE_KEY)
        if session.bind is not self._engine:
            self._added = []
            return 0
        self._added = [
            r for r in self._pending if r.account_id is not None and (scope is ALL_ACCOUNTS or r.account_id == scope)
        ]
        for call in self._added:
            session.add(record_row(call))
        return len(self._added)

    def stored(self) -> None:
        """The transaction holding the rows of the last `add_to` was committed."""
        done = {r.id for r in self._added}
        self._pending = [r for r in self._pending if r.id not in done]
        self._added = []

    def take(self) -> list[CallRecord]:
        """Remove and return the records still pending (for the recorder)."""
        pending, self._pending, self._added = self._pending, [], []
        return pending
