"""Measurement 2: one chat turn in process with a zero-latency scripted model: send_message + wait_for_turn.

The reply is bench._chat_fake's (prose, [QUESTIONS], [PROMOTE]) in the same 20 chunks, so the task lane and
the facts are written each turn. SQLite file and, when it answers, a throwaway PostgreSQL database; the backends
alternate round by round. The model's calls are recorded in llm_calls (SqlRecorder), as the app does.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url

from bench._chat_fake import CHAT_TOKENS, TITLE, TITLE_TOKENS, chat_reply, pieces
from bench._pilot_common import Phases, Tenant, as_row, count_statements, median, percentile, prepare
from deskpilot.chat import effects
from deskpilot.chat import service as chat
from deskpilot.chat.context import ContextCache
from deskpilot.chat.schemas import ChatCreate, MessageIn, TurnOut
from deskpilot.chat.stream import TurnStreams
from deskpilot.diagnosis import service as diagnosis
from deskpilot.knowledge import service as knowledge
from deskpilot.llm import LLM, Message, RequestParams, StreamEvent
from deskpilot.llm.recording import SqlRecorder
from deskpilot.llm.testing import FunctionModel, Reply
from deskpilot.pilot import similar
from deskpilot.security.crypto import SecretBox
from deskpilot.settings import DEV_ENCRYPTION_KEY
from deskpilot.storage import Database

MESSAGE = MessageIn(text="Client laptops drop the VPN several times a day since the firewall update.")
TITLE_ANSWER = Reply(text=TITLE, input_tokens=TITLE_TOKENS[0], output_tokens=TITLE_TOKENS[1])
_replies = itertools.count(1)


def _answer(_messages: Sequence[Message], params: RequestParams) -> Reply:
    """A numbered chat reply (each promotes a new fact) for a request offering tools; the title otherwise."""
    if not params.tools:
        return TITLE_ANSWER
    return Reply(text=chat_reply(next(_replies)), input_tokens=CHAT_TOKENS[0], output_tokens=CHAT_TOKENS[1])


class ChunkedModel(FunctionModel):
    """The function model, streamed in the fake server's 20 chunks instead of word by word."""

    def __init__(self) -> None:
        super().__init__(_answer, name="test:chat-bench")

    async def request_stream(
        self, messages: Sequence[Message], params: RequestParams
    ) -> AsyncGenerator[StreamEvent, None]:
        reply = await self._next(messages, params, stream=True)
        for piece in pieces(reply.text):
            await asyncio.sleep(0)  # a network stream yields to the loop between chunks
            yield piece
        yield self._completion(reply, messages)


# (module, attribute, label): the functions a turn passes through, wrapped to time them without editing src/.
PHASES = (
    (chat, "send_message", "send_message: head read, prompt context (kept, else read), ask the model, commit turn + 2 "
     "messages"),
    (chat, "_read_in", "prompt context read (a missed ContextCache in send_message; the next turn's in finalize)"),
    (effects, "session_state", "  session_state (task lane, facts, active fix)"),
    (chat, "_retrieve", "knowledge retrieval (first turn: before the model; later: once the reply streams)"),
    (knowledge, "find_matches", "  knowledge.find_matches (flows)"),
    (similar, "find_similar", "  similar.find_similar"),
    (knowledge, "top_templates_for_prompt", "  knowledge.top_templates_for_prompt"),
    (chat, "_finalize", "finalize: parse markers, side effects, store reply + llm_calls, commit"),
    (diagnosis, "apply_turn", "  diagnosis.apply_turn ([QUESTIONS], [PROMOTE])"),
)


class ChatTurns:
    """Chats of one tenant, driven as the API route does: send_message in a request session, then the turn."""

    def __init__(self, db: Database, tenant: Tenant) -> None:
        self.db = db
        self.tenant = tenant
        llm = LLM.for_model(ChunkedModel(), recorder=SqlRecorder(db))
        # As the server's: the prompt context each turn leaves is kept per session version (ContextCache).
        self.deps = chat.ChatDeps(database=db, llm=llm, streams=TurnStreams(), secrets=SecretBox([DEV_ENCRYPTION_KEY]),
                                  contexts=ContextCache())

    async def new_chat(self) -> uuid.UUID:
        async with self.db.session(self.tenant.account_id) as session:
            return (await chat.create_chat(session, self.tenant.caller, ChatCreate())).id

    async def turn(self, chat_id: uuid.UUID) -> TurnOut:
        async with self.db.session(self.tenant.account_id) as session:
            stream = await chat.send_message(session, self.deps, self.tenant.caller, chat_id, MESSAGE)
        done = await chat.wait_for_turn(self.deps, stream, self.tenant.account_id)
        if done.status != "complete":
            raise RuntimeError(f"the turn ended {done.status} ({done.error_code})")
        return done


@dataclass
class Backend:
    label: str
    turns: ChatTurns
    p50: list[float] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)
    statements: str = ""
    effects: str = ""
    phases: Phases = field(default_factory=lambda: Phases("whole turn"))


async def _round(backend: Backend, chats: int, turns: int, *, record: bool) -> None:
    samples = []
    with backend.phases.wrapped(PHASES) if record else _nothing():
        for _ in range(chats):
            chat_id = await backend.turns.new_chat()
            for _ in range(turns):
                started = time.perf_counter()
                await backend.turns.turn(chat_id)
                samples.append((time.perf_counter() - started) * 1000.0)
                if record:
                    backend.phases.end_turn(samples[-1])
    if record:
        backend.p50.append(median(samples))
        backend.samples += samples


@contextmanager
def _nothing() -> Iterator[None]:
    yield


async def _inspect(backend: Backend) -> None:
    """Statements of a fresh chat's 2nd turn (no title call), and the parts that show the markers were applied."""
    chat_id = await backend.turns.new_chat()
    await backend.turns.turn(chat_id)
    with count_statements(backend.turns.db) as counted:
        done = await backend.turns.turn(chat_id)
    backend.statements = f"{counted['statements']} SQL statements, {counted['commits']} commits per turn"
    kinds = [str(p.get("type", "")).removeprefix("data-") for p in done.parts]
    if "task-lane" not in kinds or "facts" not in kinds:
        raise RuntimeError(f"the reply's markers were not applied: parts {kinds}")
    backend.effects = "parts: " + ", ".join(kinds)


@asynccontextmanager
async def _postgres() -> AsyncIterator[tuple[str | None, str]]:
    """A throwaway PostgreSQL database next to the test one (created, then dropped), or None and the reason."""
    from tests.services import TestServices, _tcp_problem, pg_database

    base = TestServices().test_database_url
    parsed = make_url(base)
    problem = _tcp_problem(parsed.host or "127.0.0.1", parsed.port or 5432)
    if problem:
        yield None, f"PostgreSQL not reachable at {parsed.render_as_string()}: {problem}"
        return
    async with pg_database(base) as url:
        yield url, ""


async def _measure(folder: Path, *, rounds: int, chats: int, turns: int, postgres: bool) -> tuple[list[Backend], str]:
    async with AsyncExitStack() as stack:
        sqlite_db = Database(f"sqlite+aiosqlite:///{folder / 'chat-turns.db'}")
        stack.push_async_callback(sqlite_db.dispose)
        await stack.enter_async_context(sqlite_db.checkpoints())  # as the server runs it
        backends = [Backend("deskpilot chat turn, SQLite WAL + NORMAL", ChatTurns(sqlite_db, await prepare(sqlite_db)))]
        pg_problem = "not run with --quick"
        if postgres:
            pg_url, pg_problem = await stack.enter_async_context(_postgres())
            if pg_url is not None:
                pg_db = Database(pg_url)
                stack.push_async_callback(pg_db.dispose)
                backends.append(Backend("deskpilot chat turn, PostgreSQL", ChatTurns(pg_db, await prepare(pg_db))))
        for backend in backends:
            await _round(backend, max(1, chats // 2), turns, record=False)  # warm-up
            await _inspect(backend)
        for rnd in range(rounds):
            shift = rnd % len(backends)
            for backend in backends[shift:] + backends[:shift]:
                await _round(backend, chats, turns, record=True)
    return backends, pg_problem


def measure(folder: Path, *, rounds: int, chats: int, turns: int, postgres: bool = True) -> list[dict[str, str]]:
    backends, pg_problem = asyncio.run(_measure(folder, rounds=rounds, chats=chats, turns=turns, postgres=postgres))
    rows = []
    for backend in backends:
        rows.append(
            as_row(
                measure="2. turn p50 / p99 ms, zero-latency model",
                system=backend.label,
                result=f"{median(backend.p50):.2f} / {percentile(backend.samples, 0.99):.2f}",
                vs_reference="-",
                detail=(
                    f"send_message + wait_for_turn; {rounds} interleaved rounds × {chats} chats × {turns} turns "
                    f"({len(backend.samples)} turns; p50: median of the rounds' p50, p99: over all turns; each chat's "
                    f"1st turn also asks for a title); {backend.statements}; {backend.effects}"
                ),
            )
        )
    for backend in backends:
        spent = backend.phases.spent
        phases = "; ".join(f"{label.strip()} {median(spent[label]):.2f}" for _, _, label in PHASES if label in spent)
        rows.append(
            as_row(
                measure="2. where a turn's time goes, p50 ms",
                system=backend.label,
                result=f"whole turn {median(spent['whole turn']):.2f}",
                vs_reference="-",
                detail=phases + " (indented phases are inside the one before; the model streams in 20 chunks)",
            )
        )
    if len(backends) == 1:
        rows.append(
            as_row(
                measure="2. turn p50 / p99 ms, zero-latency model",
                system="deskpilot chat turn, PostgreSQL",
                result="skipped",
                vs_reference="-",
                detail=pg_problem,
            )
        )
    return rows
