"""Measurement 3: N guided sessions at once, 5 turns each, over HTTP against one server; the model answers in 1 s."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from bench import _pilot_floor as floor
from bench._pilot_common import INTAKE, RESPONSE, Tenant, as_row, median, percentile, prepare
from bench._pilot_fake import API_KEY, LAST_STEP_REQUEST
from bench._pilot_turn import DeskpilotTurns
from deskpilot.llm.eager_writes import install_eager_body_writes
from deskpilot.pilot import service
from deskpilot.storage import Database

REPO = Path(__file__).resolve().parent.parent
# The start makes two model calls (triage, first step); each turn one.
START_CALLS = 2
WARMUP_SESSIONS = 5
# Larger levels are not run once a level has errors or falls below this: they only take longer to fail.
GIVE_UP_BELOW = 0.5
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The machine's Redis: several server processes publish live events through it (deskpilot serve --workers).
REDIS_URL = "redis://127.0.0.1:6379/15"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + system) used so far by a child process, or by this one."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its children (uvicorn's worker processes under `--workers`)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(child) for child in (task / "children").read_text().split()]
    return _cpu_s(pid) + sum(_cpu_s(child) for child in children)


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    # The parent's DESKPILOT_* settings (a developer's Redis or Celery, say) must not leak into the server.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESKPILOT_")}  # noqa: TID251 - PATH and friends
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return {**env, **extra}


@dataclass
class FakeModel:
    """The delayed OpenAI-compatible server's process: started first, waited for once the server is up too."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def wait_ready(self) -> None:
        assert self.process.stdout is not None
        if not self.process.stdout.readline().strip():
            raise RuntimeError(f"the fake model did not start: {self.log.read_text()[-2000:]}")


@contextmanager
def _fake_model(tmp: Path, delay_s: float) -> Iterator[FakeModel]:
    """The fake model in its own process, on a port chosen here so that the server can start alongside."""
    port = _free_port()
    log_path = tmp / "fake-model.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench._pilot_fake", f"--delay={delay_s}", f"--port={port}"],
            cwd=tmp, env=_child_env({}), stdout=subprocess.PIPE, stderr=log, start_new_session=True,
        )
    try:
        yield FakeModel(process, port, log_path)
    finally:
        _stop(process)


@contextmanager
def _server(
    tmp: Path, database_url: str, model_url: str, *, launcher: tuple[str, ...] = ("-m", "uvicorn"), workers: int = 1
) -> Iterator[tuple[str, int]]:
    """`deskpilot.api.app:create_app` under uvicorn in its own process (settings from the environment).

    `launcher` replaces `-m uvicorn` (bench._pilot_profile runs the server under cProfile this way). With
    `workers` > 1 uvicorn runs that many server processes, which share events through the local Redis.
    """
    several = {"DESKPILOT_REDIS__URL": REDIS_URL} if workers > 1 else {}
    env = {
        **several,
        "DESKPILOT_DATABASE__URL": database_url,
        "DESKPILOT_LLM__DEFAULT_MODEL": "openai:gpt-4o-mini",
        "DESKPILOT_LLM__OPENAI__API_KEY": API_KEY,
        "DESKPILOT_LLM__OPENAI__BASE_URL": model_url,
        "DESKPILOT_LLM__TIMEOUT_S": "120",
        "DESKPILOT_JOBS__BACKEND": "inprocess",
    }
    with _uvicorn(tmp, "deskpilot.api.app:create_app", env, launcher=launcher, workers=workers) as served:
        yield served


@contextmanager
def _uvicorn(
    tmp: Path, app: str, env: dict[str, str], *, launcher: tuple[str, ...] = ("-m", "uvicorn"), workers: int = 1
) -> Iterator[tuple[str, int]]:
    """The ASGI app factory `app` under uvicorn in its own process, serving until the block ends; waits for
    GET /healthz to answer 200 and yields the base URL and the process id."""
    port = _free_port()
    command = [
        sys.executable, *launcher, app, "--factory", "--host=127.0.0.1",
        # Keep-alive longer than a level lasts: a connection the server closed while idle between levels would
        # otherwise fail the load generator's next request on it (httpx ReadError).
        f"--port={port}", "--log-level=warning", "--no-access-log", "--backlog=4096", "--timeout-keep-alive=120",
        f"--workers={workers}",
    ]
    log_path = tmp / "server.log"
    with log_path.open("ab") as log:
        # cwd is the temporary folder: no developer's .env is read.
        process = subprocess.Popen(command, cwd=tmp, env=_child_env(env), stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        yield base, process.pid
    finally:
        _stop(process)


@dataclass
class Level:
    """One load level: N sessions at once; `started` False means they existed before and only answer turns."""

    sessions: int
    turns: int
    started: bool
    delay_s: float
    wall_s: float = 0.0
    turn_ms: list[float] = field(default_factory=list)
    start_ms: list[float] = field(default_factory=list)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    # The first answer of each kind of failure, to show what went wrong.
    samples: dict[str, str] = field(default_factory=dict)
    cpu_ms: dict[str, float] = field(default_factory=dict)
    # The body of the latest answer to a turn (the floor answers with one of the same size).
    last_reply: bytes = b""

    def failed(self, what: str, status: int, text: str) -> None:
        key = f"{what} {status}"
        self.errors[key] += 1
        self.samples.setdefault(key, text[:400])

    def broke(self, what: str, error: Exception) -> None:
        """A request that got no answer at all (the connection dropped): counted as an error, not a crash."""
        key = f"{what} {type(error).__name__}"
        self.errors[key] += 1
        self.samples.setdefault(key, str(error)[:400] or type(error).__name__)

    @property
    def ideal_s(self) -> float:
        return self.delay_s * ((START_CALLS if self.started else 0) + self.turns)

    @property
    def efficiency(self) -> float:
        return self.ideal_s / self.wall_s

    @property
    def requests(self) -> int:
        return len(self.turn_ms) + len(self.start_ms)


@dataclass
class Open:
    """A session the load generator continues: its id and the step waiting for an answer."""

    session_id: str
    step_id: str


async def _post(client: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
    async with client.post(path, json=body) as reply:
        return reply.status, await reply.read()


async def _turns(client: aiohttp.ClientSession, level: Level, session: Open) -> None:
    for _ in range(level.turns):
        answer = {**RESPONSE.model_dump(mode="json", exclude_defaults=True), "step_id": session.step_id}
        started = time.perf_counter()
        try:
            status, content = await _post(client, f"/api/v1/sessions/{session.session_id}/responses", answer)
        except aiohttp.ClientError as e:
            level.broke("respond", e)
            return
        if status != 200:
            level.failed("respond", status, content.decode(errors="replace"))
            return
        level.turn_ms.append((time.perf_counter() - started) * 1000.0)
        level.last_reply = content
        session.step_id = json.loads(content)["next_step"]["step_id"]


async def _session(client: aiohttp.ClientSession, level: Level) -> None:
    started = time.perf_counter()
    try:
        status, content = await _post(client, "/api/v1/sessions", INTAKE.model_dump(mode="json", exclude_defaults=True))
    except aiohttp.ClientError as e:
        level.broke("start", e)
        return
    if status != 201:
        level.failed("start", status, content.decode(errors="replace"))
        return
    level.start_ms.append((time.perf_counter() - started) * 1000.0)
    body = json.loads(content)
    await _turns(client, level, Open(body["session_id"], body["first_step"]["step_id"]))


class Load:
    """The load generator: one aiohttp session (a lean client: its CPU shares the 2 cores with the server), CPU
    accounting of the three processes per level."""

    def __init__(self, client: aiohttp.ClientSession, pids: dict[str, int | None]) -> None:
        self.client = client
        self.pids = pids

    async def run(self, level: Level, existing: list[Open]) -> Level:
        before = {name: self._cpu(pid) for name, pid in self.pids.items()}
        started = time.perf_counter()
        if level.started:
            await asyncio.gather(*(_session(self.client, level) for _ in range(level.sessions)))
        else:
            await asyncio.gather(*(_turns(self.client, level, session) for session in existing))
        level.wall_s = time.perf_counter() - started
        done = max(level.requests, 1)
        level.cpu_ms = {name: (self._cpu(pid) - before[name]) * 1000.0 / done for name, pid in self.pids.items()}
        return level

    @staticmethod
    def _cpu(pid: int | None) -> float:
        return _cpu_s() if pid is None else _tree_cpu_s(pid)


async def _start_here(db: Database, tenant: Tenant, count: int) -> list[Open]:
    """Sessions started in this process (zero-latency model) for the turns-only levels."""
    ours = DeskpilotTurns(db, tenant)
    opened = []
    for _ in range(count):
        async with db.session(tenant.account_id) as session:
            started = await service.start_session(session, ours.deps, tenant.caller, INTAKE)
        opened.append(Open(str(started.session_id), str(started.first_step.step_id)))
    return opened


def _give_up(level: Level) -> bool:
    return bool(level.errors) or level.efficiency < GIVE_UP_BELOW


async def _floor(
    tmp: Path, fake: FakeModel, levels: tuple[int, ...], turns: int, delay_s: float, turn_reply: bytes
) -> list[Level]:
    """The turns-only levels again against the bare forwarder (bench._pilot_floor), with deskpilot's bytes."""
    async with aiohttp.ClientSession() as client, client.get(f"http://127.0.0.1:{fake.port}{LAST_STEP_REQUEST}") as got:
        model_request = await got.read()
    (tmp / "floor-request.json").write_bytes(model_request)
    (tmp / "floor-reply.json").write_bytes(turn_reply)
    config = {"model_url": fake.url, "api_key": API_KEY, "request": str(tmp / "floor-request.json"),
              "reply": str(tmp / "floor-reply.json")}
    (tmp / "floor.json").write_text(json.dumps(config))
    env = {floor.CONFIG_ENV: str(tmp / "floor.json")}
    results: list[Level] = []
    with _uvicorn(tmp, "bench._pilot_floor:create_app", env) as (base, pid):
        async with aiohttp.ClientSession(
            base_url=base, timeout=aiohttp.ClientTimeout(total=300),
            connector=aiohttp.TCPConnector(limit=max(levels) + 16, keepalive_timeout=120),
        ) as client:
            load = Load(client, {"server": pid, "fake model": fake.process.pid, "load generator": None})
            await load.run(Level(min(WARMUP_SESSIONS, *levels), 1, started=False, delay_s=delay_s),
                           _made_up(min(WARMUP_SESSIONS, *levels)))
            for sessions in levels:
                await asyncio.sleep(1.0)
                results.append(await load.run(Level(sessions, turns, started=False, delay_s=delay_s),
                                              _made_up(sessions)))
                if _give_up(results[-1]):
                    break
    return results


def _made_up(count: int) -> list[Open]:
    """Sessions for the forwarder, which keeps none: any ids do."""
    return [Open(str(uuid.uuid4()), str(uuid.uuid4())) for _ in range(count)]


async def _measure(
    tmp: Path, levels: tuple[int, ...], turns: int, delay_s: float, workers: int = 1
) -> tuple[list[Level], list[Level], list[Level]]:
    # The load generator is an aiohttp client too: its requests leave at once, not at the end of its loop's turn.
    install_eager_body_writes(asyncio.get_running_loop())
    path = tmp / "capacity.db"
    url = f"sqlite+aiosqlite:///{path}"
    db = Database(url)
    tenant = await prepare(db)
    whole: list[Level] = []
    turns_only: list[Level] = []
    bare: list[Level] = []
    connector_limit = max(levels) + 16
    headers = {"Authorization": f"Bearer {tenant.token}"}
    try:
        with _fake_model(tmp, delay_s) as fake, _server(tmp, url, fake.url, workers=workers) as (base, pid):
            fake.wait_ready()
            async with aiohttp.ClientSession(
                base_url=base, headers=headers, timeout=aiohttp.ClientTimeout(total=300),
                connector=aiohttp.TCPConnector(limit=connector_limit, keepalive_timeout=120),
            ) as client:
                load = Load(client, {"server": pid, "fake model": fake.process.pid, "load generator": None})
                await load.run(Level(min(WARMUP_SESSIONS, *levels), 1, started=True, delay_s=delay_s), [])
                for sessions in levels:
                    await asyncio.sleep(1.0)  # let the previous level's connections close
                    whole.append(await load.run(Level(sessions, turns, started=True, delay_s=delay_s), []))
                    if _give_up(whole[-1]):
                        break
                for sessions in levels:
                    # Fresh sessions each level (the server is idle meanwhile; SQLite WAL takes both writers).
                    existing = await _start_here(db, tenant, sessions)
                    await asyncio.sleep(1.0)
                    level = Level(sessions, turns, started=False, delay_s=delay_s)
                    turns_only.append(await load.run(level, existing))
                    if _give_up(level):
                        break
            replied = [level.last_reply for level in turns_only if level.last_reply]
            if workers == 1 and replied:
                bare = await _floor(tmp, fake, levels, turns, delay_s, replied[-1])
    finally:
        await db.dispose()
    return whole, turns_only, bare


FLOOR_LABEL = " (floor: bare forwarder)"


def _row(level: Level, label: str = "") -> dict[str, str]:
    errors = ", ".join(f"{n} × {what}" for what, n in level.errors.items()) or "no errors"
    if level.errors:
        errors += f" (first: {next(iter(level.samples.values()))[:200]})"
    latency = (
        f"turn p50 {median(level.turn_ms):.0f} ms / p99 {percentile(level.turn_ms, 0.99):.0f} ms"
        if level.turn_ms else "no turn completed"
    )
    if level.start_ms:
        latency += f", start p50 {median(level.start_ms):.0f} ms"
    cpu = ", ".join(f"{name} {ms:.1f}" for name, ms in level.cpu_ms.items())
    what = "start + " if level.started else "existing sessions, "
    plural = "" if level.turns == 1 else "s"
    return as_row(
        measure="3. capacity over HTTP" + label + ("" if level.started else ", turns only"),
        system=f"{level.sessions} sessions: {what}{level.turns} turn{plural} each, all at once",
        result=f"efficiency {level.efficiency:.3f} (wall {level.wall_s:.1f} s, ideal {level.ideal_s:g} s)",
        vs_reference="goal ≥ 0.9",
        detail=f"{latency} (model {level.delay_s:g} s a call); CPU ms per request: {cpu}; {errors}",
    )


def _skipped(levels: tuple[int, ...], ran: list[Level], label: str) -> list[dict[str, str]]:
    return [
        as_row(measure="3. capacity over HTTP" + label, system=f"{n} sessions", result="not run",
               vs_reference="goal ≥ 0.9", detail="a smaller level already had errors or efficiency < 0.5")
        for n in levels[len(ran):]
    ]


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _server_log(tmp: Path) -> str:
    """What the server logged (warnings and errors: uvicorn runs at WARNING), counted by message."""
    path = tmp / "server.log"
    if not path.exists():
        return ""
    messages: collections.Counter[str] = collections.Counter()
    for line in path.read_text(errors="replace").splitlines():
        if line and not line[0].isspace() and not line.startswith("Traceback"):
            messages[_UUID.sub("…", line)[:160]] += 1
    return "; ".join(f"{n} × {message}" for message, n in messages.most_common(6))


def _best(levels: list[Level]) -> int | None:
    good = [lv.sessions for lv in levels if not lv.errors and lv.efficiency >= 0.9]
    return max(good) if good else None


def measure(
    tmp: Path, *, levels: tuple[int, ...], turns: int, delay_s: float, workers: int = 1
) -> list[dict[str, str]]:
    """Whole sessions (start + turns, all at once) per level, then turns alone on sessions started beforehand.

    The wall time runs from the first request to the last answer. Levels stop growing after the first one
    with errors or an efficiency below 0.5, so that a failing server does not make the benchmark long. With
    `workers` > 1 the server is that many processes (`deskpilot serve --workers`): a comparison, the goal being
    for one.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    whole, turns_only, bare = asyncio.run(_measure(tmp, levels, turns, delay_s, workers))
    label = "" if workers == 1 else f", {workers} server processes"
    rows = [_row(level, label) for level in whole] + _skipped(levels, whole, label)
    rows += [_row(level, label) for level in turns_only] + _skipped(levels, turns_only, label + ", turns only")
    if bare:
        rows += [_row(level, FLOOR_LABEL) for level in bare] + _skipped(levels, bare, FLOOR_LABEL + ", turns only")
    server = "in 1 process" if workers == 1 else f"in {workers} processes (uvicorn --workers, Redis for events)"
    setup = (
        f"uvicorn + create_app (SQLite file) {server}, the fake model in another, the load generator in this "
        f"one; levels {', '.join(str(n) for n in levels)}; 1-min load average before {load_before:.1f} on "
        f"{os.cpu_count()} CPUs"
    )
    logged = _server_log(tmp)
    if logged:
        rows.append(as_row(measure="3. capacity: server log" + label, system="warnings and errors of the server",
                           result="see detail", vs_reference="-", detail=logged))
    for kind, results in (("start + turns", whole), ("turns only", turns_only)):
        best = _best(results)
        goal = f"goal N ≥ 300: {'met' if best is not None and best >= 300 else 'NOT met'}"
        rows.append(as_row(
            measure=f"3. capacity: largest N with efficiency ≥ 0.9, {kind}",
            system="one server process" if workers == 1 else f"{workers} server processes",
            result=str(best) if best is not None else f"< {min(levels)}",
            vs_reference=goal if workers == 1 else "comparison (the goal is for one process)",
            detail=setup,
        ))
    if bare:
        best = _best(bare)
        rows.append(as_row(
            measure="3. capacity: largest N with efficiency ≥ 0.9, turns only" + FLOOR_LABEL,
            system="bench._pilot_floor in one process",
            result=str(best) if best is not None else f"< {min(levels)}",
            vs_reference="reference: no server of this stack does better on this machine",
            detail="uvicorn + a bare ASGI forwarder (no framework, authentication, database or validation) "
                   "sending deskpilot's model request of this run and answering with its turn reply; same fake "
                   "model and load generator, right after deskpilot's levels",
        ))
    return rows


if __name__ == "__main__":
    import argparse
    import tempfile

    from bench.run import markdown_table

    parser = argparse.ArgumentParser(description="The capacity measure alone (bench_pilot runs it with the rest).")
    parser.add_argument("--levels", type=int, nargs="+", default=[100, 300], help="sessions at once, per level")
    parser.add_argument("--workers", type=int, default=1, help="server processes (uvicorn --workers)")
    parser.add_argument("--turns", type=int, default=5)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-capacity-") as folder:
        print(markdown_table(measure(Path(folder), levels=tuple(options.levels), turns=options.turns, delay_s=1.0,
                                     workers=options.workers)))
