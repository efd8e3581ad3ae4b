"""Recording of every LLM exchange: the Recorder seam and its null, in-memory and SQL implementations."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

import orjson
from pydantic import BaseModel
from pydantic_core import to_json
from sqlalchemy import bindparam, event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from deskpilot.llm.messages import Message, ToolCall
from deskpilot.storage import Database, utcnow
from deskpilot.storage.batch import Write, insert_row
from deskpilot.storage.tenancy import ALL_ACCOUNTS, SCOPE_KEY

if TYPE_CHECKING:
    from deskpilot.llm.models import LLMCall

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CallContext:
    """What an exchange belongs to, so cost can be summed per client and per session/run.

    `thread` names one line of conversation within the subject (a Pilot branch, say): the `llm_calls` row of
    a call stores only what it added to the previous call of the same subject and thread.
    """

    client_id: uuid.UUID | None = None
    subject_type: str | None = None
    subject_id: uuid.UUID | str | None = None
    thread: str | None = None


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
    """The self-contained `llm_calls` row of one exchange (all messages inline), for a caller to add to its own
    session (needs `account_id`). The SQL recorder stores rows compactly instead (`CallLog`)."""
    # Imported here so that importing deskpilot.llm alone does not put llm_calls (and its foreign key to
    # accounts) into Base.metadata; deskpilot.all_models imports the table for migrations.
    from deskpilot.llm.models import LLMCall

    return LLMCall(**_row(call, call.messages_json(), prompt_sha256=None, prefix=None))


def _row(
    call: CallRecord,
    messages: list[dict[str, object]],
    *,
    prompt_sha256: str | None,
    prefix: _Thread | None,
) -> dict[str, Any]:
    """The values of every column of the call's `llm_calls` row (a Core insert takes them as they are; the ORM
    path builds an object of them)."""
    if call.account_id is None:
        raise ValueError(f"LLM call {call.id} has no account; it has no llm_calls row")
    context = call.context
    raw_output = call.raw_output
    parsed = call.parsed_json()
    parsed_from_output: bool | None = None
    if call.parsed is not None and not call.tool_calls:
        # The reply is kept once: `parsed` is left out when it is `raw_output` validated, that is when the
        # fields the model set are exactly the reply's (no coercion), the rest being the type's defaults.
        try:
            parsed_from_output = orjson.loads(raw_output) == call.parsed.model_dump(mode="json", exclude_unset=True)
        except ValueError:
            parsed_from_output = False
        if parsed_from_output:
            parsed = None
    return {
        "id": call.id,
        "account_id": call.account_id,
        "created_at": call.created_at,
        "purpose": call.purpose,
        "model": call.model,
        "fallback_used": call.fallback_used,
        "messages": messages,
        "prompt_sha256": prompt_sha256,
        "prefix_call_id": None if prefix is None else prefix.call_id,
        "prefix_len": None if prefix is None else prefix.length,
        "raw_output": raw_output,
        "parsed": parsed,
        "parsed_from_output": parsed_from_output,
        "error": call.error,
        "error_code": call.error_code,
        "input_tokens": call.input_tokens,
        "output_tokens": call.output_tokens,
        "latency_ms": round(call.latency_ms),
        "client_id": context.client_id if context else None,
        "subject_type": context.subject_type if context else None,
        "subject_id": str(context.subject_id) if context and context.subject_id is not None else None,
    }


# --- compact storage -------------------------------------------------------------------------

_ThreadKey = tuple[uuid.UUID, str | None, str, str | None]
_PromptKey = tuple[uuid.UUID, str]
# Calls remembered per subject thread, newest first.
_RECENT_CALLS: Final = 4
# session.info key of the system prompts the next flush inserts (if missing) before the llm_calls rows.
_PROMPTS_KEY: Final = "deskpilot.llm.prompts"


@dataclass(frozen=True, slots=True)
class _Thread:
    """A stored call of one subject thread: its id, conversation length and the conversation's digest."""

    call_id: uuid.UUID
    length: int
    digest: bytes


@dataclass(slots=True)
class Batch:
    """Compact rows for some records, with what to remember once the transaction holding them commits."""

    # Column values of each `llm_calls` row.
    rows: list[dict[str, Any]]
    prompts: dict[_PromptKey, str]
    threads: dict[_ThreadKey, tuple[_Thread, ...]]


def _split_system(messages: tuple[Message, ...]) -> tuple[str | None, tuple[Message, ...]]:
    if messages:
        first = messages[0]
        if first.role == "system" and not first.tool_calls and first.tool_call_id is None and not first.is_error:
            return first.content, messages[1:]
    return None, messages


class CallLog:
    """Builds compact `llm_calls` rows: system prompts by hash (`llm_prompts`), conversations as deltas.

    A call's conversation is stored as the messages it added to a recent call of the same subject and thread
    (`CallContext`) whose conversation is a prefix of this one's (the longest such); otherwise in full. Which
    calls came before is known from memory only (a bounded LRU of calls whose rows were committed, filled
    by `committed()`): a subject unknown here (a restart, another worker, an evicted entry) is stored in full,
    so a row only ever refers to a committed row. The same goes for prompts known to be stored: unknown ones
    are inserted with INSERT ... ON CONFLICT DO NOTHING, which is idempotent under concurrency.
    """

    def __init__(self, max_threads: int = 4096, max_prompts: int = 1024) -> None:
        self._threads: OrderedDict[_ThreadKey, tuple[_Thread, ...]] = OrderedDict()
        self._prompts: OrderedDict[_PromptKey, None] = OrderedDict()
        self._max_threads = max_threads
        self._max_prompts = max_prompts

    def rows(self, calls: Iterable[CallRecord]) -> Batch:
        """Rows for `calls` (each with an account), to be stored together in one transaction, in this order."""
        batch = Batch([], {}, {})
        for call in calls:
            assert call.account_id is not None
            system, conversation = _split_system(call.messages)
            prompt_sha256 = None
            if system is not None:
                prompt_sha256 = hashlib.sha256(system.encode()).hexdigest()
                key = (call.account_id, prompt_sha256)
                if key not in self._prompts:
                    batch.prompts[key] = system
            thread_key = _thread_key(call)
            recent: tuple[_Thread, ...] = ()
            if thread_key is not None:
                recent = batch.threads.get(thread_key) or self._threads.get(thread_key) or ()
            # The longest conversation of a recent call of this thread that this one extends (a corrective retry
            # is extended by its turn's next call, but the turn after that extends the turn's first call).
            candidates = {c.length: c for c in reversed(recent) if c.length <= len(conversation)}
            hasher = hashlib.sha256()
            prefix = None
            for index, message in enumerate(conversation):
                candidate = candidates.get(index)
                if candidate is not None and hasher.copy().digest() == candidate.digest:
                    prefix = candidate
                hasher.update(_message_bytes(message))
            digest = hasher.digest()
            last = candidates.get(len(conversation))
            if last is not None and digest == last.digest:
                prefix = last
            start = 0 if prefix is None else prefix.length
            messages = [m.to_dict() for m in conversation[start:]]
            batch.rows.append(_row(call, messages, prompt_sha256=prompt_sha256, prefix=prefix))
            if thread_key is not None:
                batch.threads[thread_key] = (_Thread(call.id, len(conversation), digest), *recent)[:_RECENT_CALLS]
        return batch

    def committed(self, batch: Batch) -> None:
        """The transaction holding `batch`'s rows (and prompts) was committed: later calls may refer to them."""
        for key in batch.prompts:
            self._prompts[key] = None
            self._prompts.move_to_end(key)
        while len(self._prompts) > self._max_prompts:
            self._prompts.popitem(last=False)
        for thread_key, thread in batch.threads.items():
            self._threads[thread_key] = thread
            self._threads.move_to_end(thread_key)
        while len(self._threads) > self._max_threads:
            self._threads.popitem(last=False)
        # Prompts used by this batch but already known stay recent too.
        for row in batch.rows:
            if row["prompt_sha256"] is not None:
                key = (row["account_id"], row["prompt_sha256"])
                if key in self._prompts:
                    self._prompts.move_to_end(key)


def _thread_key(call: CallRecord) -> _ThreadKey | None:
    context = call.context
    if context is None or context.subject_id is None or call.account_id is None:
        return None
    return (call.account_id, context.subject_type, str(context.subject_id), context.thread)


def _message_bytes(message: Message) -> bytes:
    # JSON of one message plus a separator that JSON never ends in: an unambiguous encoding of the list.
    return to_json(message.to_dict()) + b"\x1e"


def _insert_prompts(dialect: str, prompts: dict[_PromptKey, str]) -> tuple[Any, list[dict[str, object]]]:
    from deskpilot.llm.models import LLMPrompt

    values: list[dict[str, object]] = [
        {"account_id": account_id, "sha256": sha256, "content": content, "created_at": utcnow()}
        for (account_id, sha256), content in prompts.items()
    ]
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(LLMPrompt).on_conflict_do_nothing(index_elements=["account_id", "sha256"]), values


_PROMPT_COLUMNS: Final = ("account_id", "sha256", "content", "created_at")
_PROMPT_INSERTS: dict[str, Any] = {}


def batch_writes(dialect: str, batch: Batch) -> list[Write]:
    """A batch as Core writes for `storage.batch.commit_writes`: its missing prompts (if absent), then its rows."""
    from deskpilot.llm.models import LLMCall, LLMPrompt

    writes: list[Write] = []
    if batch.prompts:
        statement = _PROMPT_INSERTS.get(dialect)
        if statement is None:
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            statement = _PROMPT_INSERTS[dialect] = (
                insert(LLMPrompt)
                .values({name: bindparam(name) for name in _PROMPT_COLUMNS})
                .on_conflict_do_nothing(index_elements=["account_id", "sha256"])
            )
        now = utcnow()
        writes += [
            Write(statement, {"account_id": account_id, "sha256": sha256, "content": content, "created_at": now})
            for (account_id, sha256), content in batch.prompts.items()
        ]
    writes += [insert_row(LLMCall, row) for row in batch.rows]
    return writes


def add_batch(session: AsyncSession, batch: Batch) -> None:
    """Add a batch's rows to `session`; its missing prompts are inserted by the session's next flush."""
    if batch.prompts:
        pending: dict[_PromptKey, str] = session.info.setdefault(_PROMPTS_KEY, {})
        pending.update(batch.prompts)
    from deskpilot.llm.models import LLMCall

    session.add_all([LLMCall(**row) for row in batch.rows])


@event.listens_for(Session, "before_flush")
def _flush_prompts(session: Session, _ctx: Any, _instances: Any) -> None:
    prompts: dict[_PromptKey, str] | None = session.info.pop(_PROMPTS_KEY, None)
    if not prompts:
        return
    connection = session.connection()
    statement, values = _insert_prompts(connection.dialect.name, prompts)
    connection.execute(statement, values)


async def reconstruct_messages(session: AsyncSession, call_id: uuid.UUID) -> list[dict[str, object]]:
    """The exact messages a recorded call sent (as `Message.to_dict()`), rebuilt from its compact row.

    Follows `prefix_call_id` back to a row stored in full, then adds the system prompt from `llm_prompts`.
    Raises LookupError when a row of the chain (or the prompt) is not visible from `session`.
    """
    from deskpilot.llm.models import LLMCall, LLMPrompt

    chain: list[Any] = []
    current: uuid.UUID | None = call_id
    seen: set[uuid.UUID] = set()
    while current is not None:
        if current in seen:
            raise LookupError(f"llm_calls {call_id}: its prefix chain loops at {current}")
        seen.add(current)
        row = (
            await session.execute(
                select(
                    LLMCall.account_id, LLMCall.messages, LLMCall.prompt_sha256, LLMCall.prefix_call_id,
                    LLMCall.prefix_len,
                ).where(LLMCall.id == current)
            )
        ).one_or_none()
        if row is None:
            raise LookupError(f"llm_calls {current} (in the chain of {call_id}) not found")
        chain.append(row)
        current = row.prefix_call_id
    conversation: list[dict[str, object]] = []
    for row in reversed(chain):
        if row.prefix_call_id is None:
            conversation = list(row.messages)
        else:
            conversation = conversation[: row.prefix_len] + list(row.messages)
    head = chain[0]
    if head.prompt_sha256 is None:
        return conversation
    content = await session.scalar(
        select(LLMPrompt.content).where(
            LLMPrompt.account_id == head.account_id, LLMPrompt.sha256 == head.prompt_sha256
        )
    )
    if content is None:
        raise LookupError(f"llm_prompts {head.prompt_sha256} (of llm_calls {call_id}) not found")
    return [Message.system(content).to_dict(), *conversation]


class SqlRecorder:
    """Inserts one `llm_calls` row per exchange, in one transaction of a session scoped to the call's account.

    Inside `LLM.deferred_recording()` the records are handed to the caller instead, to be written in the
    caller's own transaction (`DeferredRecords.add_to`); what the caller does not store is recorded here.
    """

    def __init__(self, database: Database, log: CallLog | None = None) -> None:
        self._database = database
        self._log = log or CallLog()

    @property
    def database(self) -> Database:
        return self._database

    @property
    def log(self) -> CallLog:
        """Builds the compact rows and remembers what was stored (shared with `DeferredRecords`)."""
        return self._log

    async def record(self, call: CallRecord) -> None:
        if call.account_id is None:
            logger.debug("LLM call %s has no account; not stored", call.id)
            return
        batch = self._log.rows([call])
        async with self._database.session(call.account_id) as session:
            add_batch(session, batch)
            await session.commit()
        self._log.committed(batch)


class DeferredRecords:
    """The records of the exchanges made inside one `LLM.deferred_recording()` block, not yet stored.

    Call `add_to(session)` just before committing the caller's transaction and `stored()` once that commit
    succeeded; records never marked stored (the block failed, the commit was rolled back, another account or
    database) go to the LLM's recorder when the block ends, so none is lost.
    """

    __slots__ = ("_added", "_batch", "_engine", "_log", "_pending")

    def __init__(self, engine: AsyncEngine, log: CallLog | None = None) -> None:
        self._engine = engine
        self._log = log or CallLog()
        self._pending: list[CallRecord] = []
        self._added: list[CallRecord] = []
        self._batch: Batch | None = None

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
            self._batch = None
            return 0
        self._added = [
            r for r in self._pending if r.account_id is not None and (scope is ALL_ACCOUNTS or r.account_id == scope)
        ]
        self._batch = self._log.rows(self._added)
        add_batch(session, self._batch)
        return len(self._added)

    def writes_for(self, session: AsyncSession) -> list[Write]:
        """As `add_to`, but the rows as Core writes for `storage.batch.commit_writes` (nothing is added to the
        session); `stored()` after their commit, as after `add_to`'s."""
        scope: Any = session.info.get(SCOPE_KEY)
        if session.bind is not self._engine:
            self._added = []
            self._batch = None
            return []
        self._added = [
            r for r in self._pending if r.account_id is not None and (scope is ALL_ACCOUNTS or r.account_id == scope)
        ]
        self._batch = self._log.rows(self._added)
        return batch_writes(self._engine.dialect.name, self._batch)

    def stored(self) -> None:
        """The transaction holding the rows of the last `add_to` (or `writes_for`) was committed."""
        done = {r.id for r in self._added}
        self._pending = [r for r in self._pending if r.id not in done]
        self._added = []
        if self._batch is not None:
            self._log.committed(self._batch)
            self._batch = None

    def take(self) -> list[CallRecord]:
        """Remove and return the records still pending (for the recorder)."""
        pending, self._pending, self._added, self._batch = self._pending, [], [], None
        return pending
