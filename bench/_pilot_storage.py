"""Measurement 2: stored bytes per session after 5/10/20 turns, deskpilot's tables against LangGraph's checkpoints."""

from __future__ import annotations

import itertools
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

from bench._pilot_common import as_row, kib, prepare
from bench._pilot_langgraph import langgraph_turns
from bench._pilot_turn import DeskpilotTurns, GraphTurns
from deskpilot.storage import Database

CONVERSATION_TABLES = ("sessions", "session_steps", "session_messages", "session_branches", "fork_points")
LLM_TABLES = ("llm_calls", "llm_prompts")
LANGGRAPH_TABLES = ("checkpoints", "writes")
CHECKPOINTS = (5, 10, 20)


@dataclass(frozen=True)
class Sizes:
    """Bytes per session: row payload per table (dbstat), index payload, and the conversation's own bytes."""

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
        raw = system_prompt = 0.0
        if "session_messages" in tables:
            raw = conn.execute("SELECT SUM(LENGTH(CAST(content AS BLOB))) FROM session_messages").fetchone()[0] / per
            system_prompt = conn.execute("SELECT SUM(LENGTH(CAST(system_prompt AS BLOB))) FROM sessions").fetchone()[0]
            system_prompt /= per
    return Sizes(by_table, indexes, raw, system_prompt)


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
            ours_sizes[target] = _payload(dp_path, CONVERSATION_TABLES + LLM_TABLES, sessions)
            theirs_sizes[target] = _payload(lg_path, LANGGRAPH_TABLES, sessions)
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
                f"{lg / (o.raw_turns + o.system_prompt):.1f}× raw turns + prompt; indexes {kib(t.indexes)}"
            ),
        ))
    growth = {
        "deskpilot sessions + steps + messages": {n: s.total(CONVERSATION_TABLES) for n, s in ours.items()},
        "deskpilot llm_calls": {n: s.total(LLM_TABLES) for n, s in ours.items()},
        "LangGraph checkpoints + writes": {n: s.total(LANGGRAPH_TABLES) for n, s in theirs.items()},
        "raw turns": {n: s.raw_turns for n, s in ours.items()},
    }
    for label, sizes in growth.items():
        rows.append(as_row(
            measure="2. growth per turn",
            system=label,
            result=_per_turn(sizes),
            vs_reference="-",
            detail=f"row payload (SQLite dbstat) per session, {sessions} sessions; turn 0 = after the start",
        ))
    return rows
