"""Where deskpilot's turn time goes: phases, round trips and cProfile in process, or in the HTTP server (`--http N`)."""

from __future__ import annotations

import asyncio
import collections
import cProfile
import os
import pstats
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import aiosqlite.core

from bench._pilot_common import INTAKE, RESPONSE, Phases, median, prepare, scripted_reply
from deskpilot.llm import LLM
from deskpilot.llm.recording import SqlRecorder
from deskpilot.llm.testing import FunctionModel
from deskpilot.pilot import engine, service
from deskpilot.security.crypto import SecretBox
from deskpilot.settings import DEV_ENCRYPTION_KEY
from deskpilot.storage import Database

COMMAND = ".venv/bin/python -m bench._pilot_profile [--http [N]]"

# (module, attribute, phase): the functions a turn passes through, wrapped to time them without editing src/.
PHASES = (
    (service, "load_turn", "1 load session + current step (SELECT … JOIN)"),
    (service, "turn_history", "2 branch conversation (kept by the previous turn on this process, else SELECT)"),
    (service, "commit_answer", "3 commit #1: answer (step CAS) + user message + session (one unit of work)"),
    (engine, "produce", "4 model call + validation"),
    (SqlRecorder, "record", "5 llm_calls INSERT + commit of its own (only when not deferred)"),
    (engine, "_store", "6 commit #2: assistant message + step + session + llm_calls (one unit of work)"),
)


@contextmanager
def count_round_trips() -> Iterator[collections.Counter[str]]:
    """Count the functions queued to aiosqlite's thread (each one is a thread round trip)."""
    counter: collections.Counter[str] = collections.Counter()
    original: Callable[..., Awaitable[Any]] = aiosqlite.core.Connection._execute

    async def counting(self: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        counter[getattr(fn, "__name__", type(fn).__name__)] += 1
        return await original(self, fn, *args, **kwargs)

    aiosqlite.core.Connection._execute = counting  # type: ignore[method-assign]
    try:
        yield counter
    finally:
        aiosqlite.core.Connection._execute = original  # type: ignore[method-assign]


async def _turns(db: Database, sessions: int, turns: int) -> tuple[Callable[[], Awaitable[None]], list[uuid.UUID]]:
    tenant = await prepare(db)
    llm = LLM.for_model(FunctionModel(scripted_reply), recorder=SqlRecorder(db))
    # The conversation cache, as the server's deps have it.
    deps = service.PilotDeps(
        llm=llm, secrets=SecretBox([DEV_ENCRYPTION_KEY]), conversations=engine.conversation_cache()
    )
    ids: list[uuid.UUID] = []
    for _ in range(sessions):
        async with db.session(tenant.account_id) as session:
            ids.append((await service.start_session(session, deps, tenant.caller, INTAKE)).session_id)
    pending = [sid for sid in ids for _ in range(turns)]

    async def one_turn() -> None:
        session_id = pending.pop()
        async with db.session(tenant.account_id) as session:
            await service.respond(session, deps, tenant.caller, session_id, RESPONSE)

    return one_turn, ids


async def profile(sessions: int = 40, turns: int = 10) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite+aiosqlite:///{Path(tmp) / 'profile.db'}")
        one_turn, _ = await _turns(db, sessions, turns)
        for _ in range(sessions):  # warm-up: each session's first answer
            await one_turn()
        with count_round_trips() as trips:
            await one_turn()
        print(f"aiosqlite thread round trips in one turn: {sum(trips.values())} {dict(trips)}")

        phases = Phases("total respond() incl. AsyncSession open/close")
        with phases.wrapped(PHASES):
            for _ in range(sessions * (turns - 1) // 2):
                started = time.perf_counter()
                await one_turn()
                phases.end_turn((time.perf_counter() - started) * 1000)
        print("\nphase medians, ms per turn:")
        for label in sorted(phases.spent):
            print(f"  {median(phases.spent[label]):7.3f}  {label}")

        profiler = cProfile.Profile()
        profiler.enable()
        remaining = sessions * (turns - 1) - sessions * (turns - 1) // 2 - 1
        for _ in range(remaining):
            await one_turn()
        profiler.disable()
        print(f"\ncProfile over {remaining} turns, top by own time:")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        await db.dispose()


def _serve_profiled(argv: list[str], out: Path) -> None:
    """uvicorn's CLI with a profiler that SIGUSR1 switches on, and off again (writing `out`)."""
    import uvicorn.main

    profiler = cProfile.Profile()
    enabled = False

    def toggle(_signum: int, _frame: object) -> None:
        nonlocal enabled
        if enabled:
            profiler.disable()
            profiler.dump_stats(out)
        else:
            profiler.enable()
        enabled = not enabled

    signal.signal(signal.SIGUSR1, toggle)
    sys.argv = ["uvicorn", *argv]
    uvicorn.main.main()


def _package(filename: str, function: str) -> str:
    if "site-packages/" in filename:
        return filename.split("site-packages/")[1].split("/")[0]
    if "/src/deskpilot/" in filename:
        return "deskpilot." + filename.split("/src/deskpilot/")[1].split("/")[0].removesuffix(".py")
    if filename.startswith("~"):
        return "builtin " + function.split(" of ")[0]
    if "/lib/python3" in filename:
        return "stdlib " + filename.rsplit("/lib/python3", 1)[1].split("/")[1]
    return filename


def by_package(stats: pstats.Stats, requests: int) -> None:
    """Own time (tottime) summed per package, per request: where the CPU goes, without cumulative confusion."""
    spent: collections.Counter[str] = collections.Counter()
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, function), (_cc, _nc, own, _cum, _callers) in raw.items():
        spent[_package(filename, function)] += own
    total = sum(spent.values())
    print(f"server main thread under cProfile: {total / requests * 1000:.2f} ms per request (profiler overhead "
          "included; aiosqlite's worker threads not profiled)")
    for name, own in spent.most_common(20):
        print(f"  {own / requests * 1000:7.3f} ms  {100 * own / total:5.1f} %  {name}")


async def profile_http(sessions: int) -> None:

    from bench import _pilot_capacity as capacity

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        out = folder / "server.prof"
        url = f"sqlite+aiosqlite:///{folder / 'profile.db'}"
        db = Database(url)
        tenant = await prepare(db)
        launcher = ("-m", "bench._pilot_profile", "--serve", str(out))
        with (
            capacity._fake_model(folder, 1.0) as fake,
            capacity._server(folder, url, fake.url, launcher=launcher) as (base, pid),
        ):
            fake.wait_ready()
            headers = {"Authorization": f"Bearer {tenant.token}"}
            async with aiohttp.ClientSession(
                base_url=base, headers=headers, timeout=aiohttp.ClientTimeout(total=300),
                connector=aiohttp.TCPConnector(limit=sessions + 16, keepalive_timeout=120),
            ) as client:
                load = capacity.Load(client, {"server": pid})
                await load.run(capacity.Level(5, 1, started=True, delay_s=1.0), [])
                existing = await capacity._start_here(db, tenant, sessions)
                os.kill(pid, signal.SIGUSR1)
                level = await load.run(capacity.Level(sessions, 5, started=False, delay_s=1.0), existing)
                os.kill(pid, signal.SIGUSR1)
                for _ in range(100):  # the server writes the profile when switched off
                    if out.exists():
                        break
                    await asyncio.sleep(0.2)
                await asyncio.sleep(1.0)  # let the dump finish
        await db.dispose()
        print(f"{sessions} sessions × 5 turns at once: efficiency {level.efficiency:.2f}, server CPU "
              f"{level.cpu_ms['server']:.1f} ms per request under the profiler, errors {dict(level.errors)}")
        stats = pstats.Stats(str(out))
        by_package(stats, level.requests)
        print("\ntop functions by own time:")
        stats.sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        _serve_profiled(sys.argv[3:], Path(sys.argv[2]))
    elif sys.argv[1:2] == ["--http"]:
        asyncio.run(profile_http(int(sys.argv[2]) if len(sys.argv) > 2 else 60))
    else:
        asyncio.run(profile())
