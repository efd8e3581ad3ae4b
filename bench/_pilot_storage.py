"""Measurement 2: stored bytes per session after 5/10/20 turns, deskpilot's tables against LangGraph's checkpoints."""

from __future__ import annotations

import dataclasses
import itertools
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

from bench._pilot_common import as_row, kib, prepare
from bench._pilot_langgraph import LangGraphTurns, langgraph_turns
from bench._pilot_turn import DeskpilotTurns, GraphTurns
from deskpilot.pilot import engine
from deskpilot.pilot.models import PilotSession
from deskpilot.storage import Database

CONVERSATION_TABLES = ("sessions", "session_steps", "session_messages", "session_branches", "fork_points")
LLM_TABLES = ("llm_calls", "llm_prompts")
LANGGRAPH_TABLES = ("checkpoints", "writes")
CHECKPOINTS = (5, 10, 20)
GOAL_RATIO = 1.2


@dataclass(frozen=True)
class Sizes:
    """Bytes per session: row payload per table (dbstat), index payload, and the conversation's own bytes.

    `raw_turns` is the conversation as the model reads it (every history entry's text, user and assistant, UTF-8),
    counted from each system's own history: deskpilot's rebuilt branch history, LangGraph's `messages` state.
    """

    tables: dict[str, float]
    indexes: float
    raw_turns: float = 0.0
    system_prompt: float = 0.0

    def total(self, names: tuple[str, ...]) -> float:
        return sum(self.tables.get(n, 0.0) for n in names)


def _payload(path: Path, tables: tuple[str, ...], per: int) -> Sizes:
    """Row bytes as SQLite stores them (dbstat `payload`: record headers and values, no page slack)."""
    with sqlite3.connect(path) as conn:
        owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_schema WHERE type IN ('table', 'index')"))
        by_table: dict[str, float] = {}
        indexes = 0.0
        for name, payload in conn.execute("SELECT name, SUM(payload) FROM dbstat GROUP BY name"):
            table = owner.get(name, name)
            if table not in tables:
                continue
            if name == table:
                by_table[table] = payload / per
            else:
                indexes += payload / per
        system_prompt = 0.0
        if "sessions" in tables:
            system_prompt = conn.execute("SELECT SUM(LENGTH(CAST(system_prompt AS BLOB))) FROM sessions").fetchone()[0]
            system_prompt /= per
    return Sizes(by_table, indexes, 0.0, system_prompt)


async def _our_conversation(turns: DeskpilotTurns, threads: list[str]) -> float:
    """Bytes of deskpilot's conversations as the next model call would read them, per session."""
    total = 0
    async with turns.db.session(turns.tenant.account_id) as db:
        for thread in threads:
            session = await db.get(PilotSession, uuid.UUID(thread))
            assert session is not None
            branch = engine.active_branch(session, await engine.branch_rows(db, session))
            total += sum(len(str(m.content).encode()) for m in await engine.branch_history(db, session, branch))
    return total / len(threads)


async def _their_conversation(graph: LangGraphTurns, threads: list[str]) -> float:
    """Bytes of LangGraph's conversations (the `messages` of each thread's latest state), per session."""
    total = 0
    for thread in threads:
        state = await graph.graph.aget_state({"configurable": {"thread_id": thread}})
        total += sum(len(m["content"].encode()) for m in state.values["messages"])
    return total / len(threads)


async def measure(tmp: Path, *, sessions: int, turns: tuple[int, ...] = CHECKPOINTS) -> list[dict[str, str]]:
    """`sessions` conversations of the same script on each side, sizes read after 0 (start) and each checkpoint."""
    dp_path, lg_path = tmp / "storage-deskpilot.db", tmp / "storage-langgraph.db"
    db = Database(f"sqlite+aiosqlite:///{dp_path}")
    ours = DeskpilotTurns(db, await prepare(db))
    system_prompt, first_message = await ours.conversation_start()
    # The conversation that primed the prompt is not one of the measured ones.
    async with db.engine.begin() as conn:
        for table in ("session_steps", "session_messages", "llm_calls", "sessions"):
            await conn.execute(text(f"DELETE FROM {table}"))
    ours_sizes: dict[int, Sizes] = {}
    theirs_sizes: dict[int, Sizes] = {}
    async with langgraph_turns(lg_path, synchronous="NORMAL") as graph:
        theirs = GraphTurns(graph, system_prompt, first_message)
        dp_threads = [await ours.start() for _ in range(sessions)]
        lg_threads = [await theirs.start() for _ in range(sessions)]
        done = 0
        for target in (0, *turns):
            for _ in range(target - done):
                for thread in dp_threads:
                    await ours.respond(thread)
                for thread in lg_threads:
                    await theirs.respond(thread)
            done = target
            ours_sizes[target] = dataclasses.replace(
                _payload(dp_path, CONVERSATION_TABLES + LLM_TABLES, sessions),
                raw_turns=await _our_conversation(ours, dp_threads),
            )
            theirs_sizes[target] = dataclasses.replace(
                _payload(lg_path, LANGGRAPH_TABLES, sessions), raw_turns=await _their_conversation(graph, lg_threads)
            )
    await db.dispose()
    return _rows(ours_sizes, theirs_sizes, sessions)


def _per_turn(sizes: dict[int, float]) -> str:
    points = sorted(sizes)
    steps = [f"{a}→{b}: {kib((sizes[b] - sizes[a]) / (b - a))}" for a, b in itertools.pairwise(points)]
    return "added per turn " + ", ".join(steps)


def _rows(ours: dict[int, Sizes], theirs: dict[int, Sizes], sessions: int) -> list[dict[str, str]]:
    rows = []
    for n in CHECKPOINTS:
        o, t = ours[n], theirs[n]
        conversation = o.total(CONVERSATION_TABLES)
        calls = o.total(LLM_TABLES)
        steps_messages = o.total(("session_steps", "session_messages"))
        lg = t.total(LANGGRAPH_TABLES)
        rows.append(as_row(
            measure=f"2. storage per session, {n} turns",
            system="deskpilot: sessions + steps + messages; with llm_calls",
            result=f"{kib(conversation)}; {kib(conversation + calls)}",
            vs_reference=f"{conversation / lg:.3f}×; {(conversation + calls) / lg:.3f}× LangGraph",
            detail=(
                f"raw turns {kib(o.raw_turns)} (+ system prompt {kib(o.system_prompt)}); steps + messages "
                f"= {steps_messages / o.raw_turns:.2f}× raw turns; sessions + steps + messages = "
                f"{conversation / (o.raw_turns + o.system_prompt):.2f}× raw turns + prompt; "
                f"llm_calls {kib(calls)}; indexes {kib(o.indexes)}"
            ),
        ))
        rows.append(as_row(
            measure=f"2. storage per session, {n} turns",
            system="LangGraph AsyncSqliteSaver: checkpoints + writes",
            result=kib(lg),
            vs_reference="reference",
            detail=(
                f"checkpoints {kib(t.tables.get('checkpoints', 0.0))}, writes {kib(t.tables.get('writes', 0.0))}; "
                f"raw turns {kib(t.raw_turns)}; {lg / (t.raw_turns + o.system_prompt):.1f}× raw turns + prompt; "
                f"indexes {kib(t.indexes)}"
            ),
        ))
    growth = {
        "deskpilot sessions + steps + messages": {n: s.total(CONVERSATION_TABLES) for n, s in ours.items()},
        "deskpilot llm_calls": {n: s.total(LLM_TABLES) for n, s in ours.items()},
        "LangGraph checkpoints + writes": {n: s.total(LANGGRAPH_TABLES) for n, s in theirs.items()},
        "deskpilot steps + messages": {n: s.total(("session_steps", "session_messages")) for n, s in ours.items()},
        "raw turns (deskpilot's history)": {n: s.raw_turns for n, s in ours.items()},
        "raw turns (LangGraph's messages)": {n: s.raw_turns for n, s in theirs.items()},
    }
    for label, sizes in growth.items():
        rows.append(as_row(
            measure="2. growth per turn",
            system=label,
            result=_per_turn(sizes),
            vs_reference="-",
            detail=(
                "history bytes (UTF-8)" if label.startswith("raw turns") else "row payload (SQLite dbstat)"
            ) + f" per session, {sessions} sessions; turn 0 = after the start",
        ))
    rows.append(_goal_row(ours))
    return rows


def _goal_row(ours: dict[int, Sizes]) -> dict[str, str]:
    """Issue #3's goal: steps + messages grow linearly, at most 1.2 times the turns themselves (per turn and at 20)."""
    def stored(s: Sizes) -> float:
        return s.total(("session_steps", "session_messages"))

    last = CHECKPOINTS[-1]
    at_last = stored(ours[last]) / ours[last].raw_turns
    per_turn = [
        (stored(ours[b]) - stored(ours[a])) / (ours[b].raw_turns - ours[a].raw_turns)
        for a, b in itertools.pairwise(sorted(ours))
    ]
    met = at_last <= GOAL_RATIO and max(per_turn) <= GOAL_RATIO
    return as_row(
        measure=f"2. goal: steps + messages ≤ {GOAL_RATIO}× raw turns",
        system="deskpilot",
        result=f"{at_last:.2f}× at {last} turns; per turn " + ", ".join(f"{r:.2f}×" for r in per_turn),
        vs_reference="met" if met else "NOT met",
        detail="growth of session_steps + session_messages payload over growth of the history's bytes",
    )
