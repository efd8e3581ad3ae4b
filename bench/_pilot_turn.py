"""Measurement 1: one durable guided turn, deskpilot (SQLite, PostgreSQL) against LangGraph, rounds interleaved."""

from __future__ import annotations

import collections
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.engine import make_url

from bench._pilot_common import (
    INTAKE,
    RESPONSE,
    Tenant,
    as_row,
    count_statements,
    fmt_ms,
    median,
    percentile,
    prepare,
    scripted_reply,
)
from bench._pilot_langgraph import LangGraphTurns, langgraph_turns
from bench._pilot_profile import count_round_trips
from deskpilot.llm import LLM
from deskpilot.llm.recording import SqlRecorder
from deskpilot.llm.testing import FunctionModel
from deskpilot.pilot import service
from deskpilot.pilot.models import PilotSession, SessionMessage
from deskpilot.security.crypto import SecretBox
from deskpilot.settings import DEV_ENCRYPTION_KEY
from deskpilot.storage import Database


class Turns(Protocol):
    """A system under test: start a conversation (not timed) and answer its current step (timed)."""

    async def start(self) -> str: ...

    async def respond(self, thread: str) -> None: ...


class DeskpilotTurns:
    """`service.start_session` and `service.respond`, each in its own account-scoped session as one request."""

    def __init__(self, db: Database, tenant: Tenant) -> None:
        self.db = db
        self.tenant = tenant
        # As the app builds it: every call recorded in llm_calls (the turn's usage), in the same database.
        llm = LLM.for_model(FunctionModel(scripted_reply), recorder=SqlRecorder(db))
        self.deps = service.PilotDeps(llm=llm, secrets=SecretBox([DEV_ENCRYPTION_KEY]))

    async def start(self) -> str:
        async with self.db.session(self.tenant.account_id) as session:
            started = await service.start_session(session, self.deps, self.tenant.caller, INTAKE)
        return str(started.session_id)

    async def respond(self, thread: str) -> None:
        async with self.db.session(self.tenant.account_id) as session:
            await service.respond(session, self.deps, self.tenant.caller, uuid.UUID(thread), RESPONSE)

    async def conversation_start(self) -> tuple[str, str]:
        """The system prompt and first message deskpilot built, so that LangGraph holds the same conversation."""
        session_id = uuid.UUID(await self.start())
        async with self.db.session(self.tenant.account_id) as session:
            found = await session.get(PilotSession, session_id)
            assert found is not None
            first = await session.scalar(
                select(SessionMessage.content)
                .where(SessionMessage.session_id == session_id)
                .order_by(SessionMessage.seq)
            )
        assert first is not None
        return found.system_prompt, first


class GraphTurns:
    """The same conversation through the LangGraph reference graph, one thread per session."""

    def __init__(self, graph: LangGraphTurns, system_prompt: str, first_message: str) -> None:
        self.graph = graph
        self.system_prompt = system_prompt
        self.first_message = first_message

    async def start(self) -> str:
        thread = str(uuid.uuid4())
        await self.graph.start(thread, self.system_prompt, self.first_message)
        return thread

    async def respond(self, thread: str) -> None:
        await self.graph.respond(thread, RESPONSE)


@dataclass
class System:
    key: str
    label: str
    turns: Turns
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    count: int = 0
    round_trips: str = ""
    start_p50: list[float] = field(default_factory=list)
    start_p99: list[float] = field(default_factory=list)


async def _round(system: System, sessions: int, turns: int, *, record: bool) -> None:
    threads: list[str] = []
    starts: list[float] = []
    for _ in range(sessions):
        started = time.perf_counter()
        threads.append(await system.turns.start())
        starts.append((time.perf_counter() - started) * 1000.0)
    samples: list[float] = []
    for thread in threads:
        for _ in range(turns):
            started = time.perf_counter()
            await system.turns.respond(thread)
            samples.append((time.perf_counter() - started) * 1000.0)
    if record:
        system.start_p50.append(median(starts))
        system.start_p99.append(percentile(starts, 0.99))
        system.p50.append(median(samples))
        system.p99.append(percentile(samples, 0.99))
        system.count += len(samples)


@contextmanager
def _statements(turns: Turns) -> Iterator[collections.Counter[str]]:
    """Deskpilot's statements and commits (LangGraph uses aiosqlite directly: nothing to count there)."""
    if isinstance(turns, DeskpilotTurns):
        with count_statements(turns.db) as counter:
            yield counter
    else:
        yield collections.Counter()


async def _trips(system: System) -> None:
    """Statements, commits and (on SQLite) aiosqlite thread round trips of one turn: a fresh session's 2nd turn."""
    thread = await system.turns.start()
    await system.turns.respond(thread)
    with count_round_trips() as trips, _statements(system.turns) as statements:
        await system.turns.respond(thread)
    parts = []
    if statements:
        parts.append(f"{statements['statements']} SQL statements, {statements['commits']} commits")
    if trips:
        parts.append(f"{sum(trips.values())} aiosqlite thread round trips ({trips['commit']} commits)")
    system.round_trips = "; ".join(parts) + " per turn"


@asynccontextmanager
async def _systems(tmp: Path, pg_url: str | None) -> AsyncIterator[list[System]]:
    async with AsyncExitStack() as stack:
        sqlite_db = Database(f"sqlite+aiosqlite:///{tmp / 'deskpilot.db'}")
        stack.push_async_callback(sqlite_db.dispose)
        # As the server runs (AppState.start): WAL checkpoints in the background, not in a turn's commit.
        await stack.enter_async_context(sqlite_db.checkpoints())
        ours = DeskpilotTurns(sqlite_db, await prepare(sqlite_db))
        system_prompt, first_message = await ours.conversation_start()
        systems = [System("dp_sqlite", "deskpilot respond(), SQLite WAL + NORMAL", ours)]
        if pg_url is not None:
            pg_db = Database(pg_url)
            stack.push_async_callback(pg_db.dispose)
            pg_turns = DeskpilotTurns(pg_db, await prepare(pg_db))
            systems.append(System("dp_pg", "deskpilot respond(), PostgreSQL", pg_turns))
        default = await stack.enter_async_context(langgraph_turns(tmp / "langgraph-full.db", synchronous=None))
        normal = await stack.enter_async_context(langgraph_turns(tmp / "langgraph-normal.db", synchronous="NORMAL"))
        systems.append(System(
            "lg_default", "LangGraph + AsyncSqliteSaver, defaults (WAL, synchronous FULL, durability async)",
            GraphTurns(default, system_prompt, first_message),
        ))
        systems.append(System(
            "lg_normal", "LangGraph + AsyncSqliteSaver, synchronous NORMAL",
            GraphTurns(normal, system_prompt, first_message),
        ))
        yield systems


@asynccontextmanager
async def _postgres() -> AsyncIterator[tuple[str | None, str]]:
    """A throwaway PostgreSQL database (dropped afterwards), or None with the reason when none answers."""
    from tests.services import TestServices, _tcp_problem, pg_database

    base = TestServices().test_database_url
    parsed = make_url(base)
    problem = _tcp_problem(parsed.host or "127.0.0.1", parsed.port or 5432)
    if problem:
        yield None, f"PostgreSQL not reachable at {parsed.render_as_string()}: {problem}"
        return
    async with pg_database(base) as url:
        yield url, ""


async def measure(tmp: Path, *, rounds: int, sessions: int, turns: int) -> list[dict[str, str]]:
    """Rounds alternate the systems (order rotated each round); each round starts new sessions."""
    async with _postgres() as (pg_url, pg_problem), _systems(tmp, pg_url) as systems:
        for system in systems:
            await _round(system, max(2, sessions // 4), turns, record=False)
            await _trips(system)
        for rnd in range(rounds):
            shift = rnd % len(systems)
            for system in systems[shift:] + systems[:shift]:
                await _round(system, sessions, turns, record=True)
    by_key = {s.key: s for s in systems}
    ref, normal = by_key["lg_default"], by_key["lg_normal"]
    rows = []
    for system in systems:
        p50, p99 = median(system.p50), median(system.p99)
        if system.key.startswith("dp"):
            versus = (
                f"{p50 / median(ref.p50):.2f}× / {p99 / median(ref.p99):.2f}× LangGraph default; "
                f"{p50 / median(normal.p50):.2f}× / {p99 / median(normal.p99):.2f}× LangGraph NORMAL"
            )
        else:
            versus = "reference"
        rows.append(as_row(
            measure="1. turn p50 / p99 ms",
            system=system.label,
            result=f"{fmt_ms(p50)} / {fmt_ms(p99)}",
            vs_reference=versus,
            detail=(
                f"medians of {rounds} interleaved rounds × {sessions} sessions × {turns} turns "
                f"({system.count} turns); {system.round_trips}"
            ),
        ))
    for system in systems:
        if system.key.startswith("dp"):
            rows.append(as_row(
                measure="1. start p50 / p99 ms",
                system=system.label.replace("respond()", "start_session()"),
                result=f"{fmt_ms(median(system.start_p50))} / {fmt_ms(median(system.start_p99))}",
                vs_reference="-",
                detail="triage call, flow match (full text), script templates, system prompt, first step; "
                       "the LangGraph graph has no equivalent",
            ))
    if pg_url is None:
        rows.append(as_row(measure="1. turn p50 / p99 ms", system="deskpilot respond(), PostgreSQL",
                           result="skipped", vs_reference="-", detail=pg_problem))
    dp = by_key["dp_sqlite"]
    goal_p50 = median(dp.p50) / median(ref.p50)
    goal_p99 = median(dp.p99) / median(ref.p99)
    met = "met" if goal_p50 <= 0.5 and goal_p99 <= 0.5 else "NOT met"
    rows.append(as_row(
        measure="1. goal: ≤ 0.5× LangGraph p50 and p99",
        system="deskpilot SQLite / LangGraph default",
        result=f"{goal_p50:.2f}× p50, {goal_p99:.2f}× p99",
        vs_reference=met,
        detail="same zero-latency function model and StepReply validation on both sides",
    ))
    return rows
