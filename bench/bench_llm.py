"""Overhead of one structured call through deskpilot.llm versus the raw openai SDK, same loopback fake server."""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any, Literal

import httpx
from openai import AsyncOpenAI
from pydantic import BaseModel

from deskpilot.identity.models import Account
from deskpilot.llm import LLM, Message, SqlRecorder
from deskpilot.llm.models import LLMCall, LLMPrompt
from deskpilot.llm.output import output_schema
from deskpilot.llm.testing import FunctionModel
from deskpilot.settings import LLMSettings
from deskpilot.storage import Base, Database

TITLE = "LLM layer: one structured call, deskpilot.llm vs raw openai SDK (loopback fake server)"
COMMAND = ".venv/bin/python -m bench.bench_llm"

API_KEY = "sk-bench"
MODEL = "gpt-4o-mini"


class Option(BaseModel):
    label: str
    value: str
    followup_hint: str | None


class Step(BaseModel):
    """One step of a guided troubleshooting session."""

    type: Literal["question", "action", "resolution_suggestion", "fork"]
    content: str
    reasoning: str
    context_message: str
    options: list[Option]
    allow_free_text: bool
    allow_skip: bool
    confidence: float


# A fixed reply of about 1.3 kB, the size PERF_NOTES measured its peers with.
REPLY = Step(
    type="question",
    content="Does the VPN disconnect at a regular interval, for example every 60 minutes, or at random moments?",
    reasoning=(
        "A fixed interval points to a rekey or idle-timeout setting on the gateway, while random drops point to "
        "the client's network (Wi-Fi roaming, power saving on the adapter) or to an overloaded concentrator."
    ),
    context_message=(
        "Knowing the pattern tells us whether to look at the firewall's IKE lifetime or at the laptop's adapter."
    ),
    options=[
        Option(label="Every hour, like clockwork", value="fixed_interval", followup_hint="check IKE/IPsec lifetime"),
        Option(label="Random, several times a day", value="random", followup_hint="check adapter power saving"),
        Option(label="Only on Wi-Fi, never on cable", value="wifi_only", followup_hint="check roaming settings"),
        Option(label="I don't know yet", value="unknown", followup_hint=None),
    ],
    allow_free_text=True,
    allow_skip=True,
    confidence=0.42,
)
REPLY_JSON = REPLY.model_dump_json()
PROMPT = [
    Message.system("You lead an IT engineer through a diagnosis, one step at a time. Answer in JSON."),
    Message.user("Client laptop VPN drops every now and then since the firewall firmware update last week."),
]
RAW_MESSAGES: list[Any] = [{"role": m.role, "content": m.content} for m in PROMPT]


def _serve(ports: multiprocessing.Queue[int], stop: Event) -> None:
    """Run the fake server in its own process, so it does not share the measured process's GIL."""
    from tests.fakes import FakeOpenAIServer, text_reply

    reply = text_reply(REPLY_JSON, input_tokens=60, output_tokens=300)
    with FakeOpenAIServer(api_key=API_KEY, default_reply=reply) as server:
        ports.put(server.port)
        stop.wait()


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


async def _measure(base_url: str, *, reps: int, calls: int, warmup: int) -> dict[str, list[float]]:
    schema = output_schema(Step)
    # The raw SDK call is written the way a careful hand would: schema built once, same options as ours.
    response_format: Any = {
        "type": "json_schema",
        "json_schema": {
            "name": schema.name,
            "description": schema.description,
            "schema": schema.json_schema,
            "strict": schema.strict,
        },
    }
    settings = LLMSettings.model_validate(
        {"openai": {"api_key": API_KEY, "base_url": base_url}, "default_model": f"openai:{MODEL}", "timeout_s": 30}
    )
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}")
        tables = [Base.metadata.tables[t.__tablename__] for t in (Account, LLMCall, LLMPrompt)]
        async with db.engine.begin() as conn:
            await conn.run_sync(lambda sync: Base.metadata.create_all(sync, tables=tables))
        account = Account(name="Bench", slug="bench")
        async with db.unscoped_session() as session:
            session.add(account)
            await session.commit()
        account_id = account.id

        async with (
            httpx.AsyncClient() as raw_http,
            httpx.AsyncClient() as ours_http,
            httpx.AsyncClient() as sql_http,
            AsyncOpenAI(api_key=API_KEY, base_url=base_url, max_retries=0, timeout=30, http_client=raw_http) as raw,
            LLM(settings, http_client=ours_http) as ours,
            LLM(settings, http_client=sql_http, recorder=SqlRecorder(db)) as ours_sql,
        ):
            in_process = LLM.for_model(FunctionModel(lambda _messages, _params: REPLY_JSON))

            async def raw_call() -> None:
                response = await raw.chat.completions.create(
                    model=MODEL, messages=RAW_MESSAGES, response_format=response_format, max_tokens=4096
                )
                Step.model_validate_json(response.choices[0].message.content or "")

            async def ours_call() -> None:
                await ours.structured("pilot_step", PROMPT, Step, account_id=None)

            async def sql_call() -> None:
                await ours_sql.structured("pilot_step", PROMPT, Step, account_id=account_id)

            async def in_process_call() -> None:
                await in_process.structured("pilot_step", PROMPT, Step, account_id=None)

            variants: dict[str, Callable[[], Awaitable[None]]] = {
                "raw": raw_call,
                "ours": ours_call,
                "sql": sql_call,
                "in_process": in_process_call,
            }
            for call in variants.values():
                for _ in range(warmup):
                    await call()
            samples: dict[str, list[float]] = {name: [] for name in variants}
            order = list(variants)
            for rep in range(reps):
                # Rotate the order so that no variant always runs first (warm caches) or last.
                for name in order[rep % len(order) :] + order[: rep % len(order)]:
                    call = variants[name]
                    timings = samples[name]
                    for _ in range(calls):
                        started = time.perf_counter()
                        await call()
                        timings.append((time.perf_counter() - started) * 1000.0)
        await db.dispose()
    return samples


def run(quick: bool = False) -> list[dict[str, str]]:
    """Measure all variants side by side in one run; rows for the results table."""
    reps, calls, warmup = (3, 100, 50) if quick else (7, 300, 200)
    ports: multiprocessing.Queue[int] = multiprocessing.Queue()
    stop = multiprocessing.Event()
    server = multiprocessing.Process(target=_serve, args=(ports, stop), daemon=True)
    server.start()
    try:
        port = ports.get(timeout=30)
        samples = asyncio.run(_measure(f"http://127.0.0.1:{port}/v1", reps=reps, calls=calls, warmup=warmup))
    finally:
        stop.set()
        server.join(10)
    raw_p50 = statistics.median(samples["raw"])
    labels = {
        "raw": "raw openai SDK: create() + model_validate_json",
        "ours": "deskpilot.llm structured(), NullRecorder",
        "sql": "deskpilot.llm structured(), SqlRecorder (SQLite WAL, one INSERT)",
        "in_process": "deskpilot.llm structured(), in-process FunctionModel (no HTTP)",
    }
    rows = []
    for name, label in labels.items():
        timings = samples[name]
        p50 = statistics.median(timings)
        rows.append(
            {
                "variant": label,
                "calls": str(len(timings)),
                "p50 ms": f"{p50:.3f}",
                "p99 ms": f"{_percentile(timings, 0.99):.3f}",
                "p50 ratio vs raw SDK": "-" if name in ("raw", "in_process") else f"{p50 / raw_p50:.3f}",
            }
        )
    return rows


def _markdown(rows: list[dict[str, str]]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(row[c] for c in columns) + " |" for row in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(f"### {TITLE}\n")
    print(_markdown(run(quick="--quick" in sys.argv)))
    print(f"\nCommand: `{COMMAND}`")
