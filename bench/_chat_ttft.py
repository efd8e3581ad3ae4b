"""Measurement 1: time to the first streamed token, straight from the fake model against through deskpilot's server.

(a) an httpx streaming POST to the fake OpenAI-compatible server (its own process), until the first chunk with
content; (b) the same client posting a chat message to deskpilot under uvicorn (its own process, SQLite file,
the model pointed at the same fake), until the first `text-delta` frame. Samples alternate (a) and (b).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench._pilot_capacity import FakeModel, _child_env, _free_port, _server, _stop
from bench._pilot_common import as_row, median, percentile, prepare
from bench._pilot_fake import API_KEY
from deskpilot.storage import Database

GOAL_MS = 5.0
MESSAGE = {"text": "Client laptops drop the VPN several times a day since the firewall update."}


@contextmanager
def _fake_model(tmp: Path) -> Iterator[FakeModel]:
    port = _free_port()
    log_path = tmp / "chat-fake.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench._chat_fake", f"--port={port}"],
            cwd=tmp,
            env=_child_env({}),
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
    try:
        yield FakeModel(process, port, log_path)
    finally:
        _stop(process)


@dataclass
class Sample:
    """One request: time to its first token, and to the end of the stream; ms from the request's start."""

    first_ms: float
    total_ms: float
    # deskpilot only: the first frame (the message is stored, the turn is started) and suggested flows (the
    # turn's reads are done, the model is being asked).
    opened_ms: float | None = None
    context_ms: float | None = None


@dataclass
class Round:
    direct: list[Sample] = field(default_factory=list)
    deskpilot: list[Sample] = field(default_factory=list)


def _data(line: str) -> dict[str, object] | None:
    if not line.startswith("data: {"):
        return None
    value = json.loads(line[6:])
    return value if isinstance(value, dict) else None


async def _direct(client: httpx.AsyncClient, url: str, body: bytes) -> Sample:
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json", "X-Bench-Direct": "1"}
    first = None
    started = time.perf_counter()
    async with client.stream("POST", url, content=body, headers=headers) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if first is None:
                chunk = _data(line)
                choices = chunk.get("choices") if chunk else None
                if isinstance(choices, list) and choices and choices[0]["delta"].get("content"):
                    first = time.perf_counter()
    end = time.perf_counter()
    if first is None:
        raise RuntimeError("the fake model streamed no content")
    return Sample((first - started) * 1000.0, (end - started) * 1000.0)


async def _through(client: httpx.AsyncClient, url: str, token: str) -> Sample:
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    first = opened = context = None
    done = False
    started = time.perf_counter()
    async with client.stream("POST", url, json=MESSAGE, headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"deskpilot answered {response.status_code}: {response.text[:400]}")
        async for line in response.aiter_lines():
            if first is None:
                part = _data(line)
                if part is None:
                    continue
                now = time.perf_counter()
                opened = opened or now
                if part.get("type") == "data-suggested-flows":
                    context = now
                elif part.get("type") == "text-delta":
                    first = now
                elif part.get("type") == "error":
                    raise RuntimeError(f"the turn failed: {part}")
            elif line == "data: [DONE]":
                done = True
    end = time.perf_counter()
    if first is None or opened is None or not done:
        raise RuntimeError("deskpilot streamed no text or no [DONE]")

    def ms(at: float | None) -> float | None:
        return None if at is None else (at - started) * 1000.0

    return Sample((first - started) * 1000.0, (end - started) * 1000.0, ms(opened), ms(context))


class Driver:
    """One httpx client for both sides; a fresh chat every `turns` messages so that the history stays small."""

    def __init__(self, client: httpx.AsyncClient, base: str, fake_url: str, token: str, turns: int) -> None:
        self.client = client
        self.base = base
        self.fake_url = f"{fake_url}/chat/completions"
        self.replay_url = fake_url.removesuffix("/v1") + "/bench/last-turn-request"
        self.token = token
        self.turns = turns
        self.chat_id = ""
        self.sent = 0

    async def _chat(self) -> str:
        if self.sent % self.turns == 0:
            reply = await self.client.post(
                f"{self.base}/api/v1/chats", json={}, headers={"Authorization": f"Bearer {self.token}"}
            )
            if reply.status_code != 201:
                raise RuntimeError(f"could not create a chat: {reply.status_code} {reply.text[:400]}")
            self.chat_id = reply.json()["id"]
        self.sent += 1
        return f"{self.base}/api/v1/sessions/{self.chat_id}/messages"

    async def _same_request(self) -> bytes:
        """The chat-turn request deskpilot sent the fake last: the direct side sends the model the same prompt."""
        reply = await self.client.get(self.replay_url)
        reply.raise_for_status()
        return reply.content

    async def pair(self, rnd: Round, index: int) -> None:
        """One sample of each side; the order alternates so that neither always follows the other."""
        url = await self._chat()
        if index % 2:
            rnd.direct.append(await _direct(self.client, self.fake_url, await self._same_request()))
            rnd.deskpilot.append(await _through(self.client, url, self.token))
        else:
            rnd.deskpilot.append(await _through(self.client, url, self.token))
            rnd.direct.append(await _direct(self.client, self.fake_url, await self._same_request()))


async def _measure(tmp: Path, *, rounds: int, pairs: int, turns: int, warmup: int) -> list[Round]:
    url = f"sqlite+aiosqlite:///{tmp / 'chat-http.db'}"
    db = Database(url)
    try:
        tenant = await prepare(db)
    finally:
        await db.dispose()
    with _fake_model(tmp) as fake, _server(tmp, url, fake.url) as (base, _pid):
        fake.wait_ready()
        limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            driver = Driver(client, base, fake.url, tenant.token, turns)
            scratch = Round()
            for i in range(warmup):
                await driver.pair(scratch, i)
            results = []
            for _ in range(rounds):
                rnd = Round()
                for i in range(pairs):
                    await driver.pair(rnd, i)
                results.append(rnd)
    return results


def _fmt(value: float) -> str:
    return f"{value:.2f}"


def measure(tmp: Path, *, rounds: int, pairs: int, turns: int, warmup: int) -> list[dict[str, str]]:
    """p50 per round (the median of the rounds is reported) and p99 over all samples, for each side."""
    load_before = os.getloadavg()[0]
    results = asyncio.run(_measure(tmp, rounds=rounds, pairs=pairs, turns=turns, warmup=warmup))
    direct = [s for r in results for s in r.direct]
    ours = [s for r in results for s in r.deskpilot]

    def p50(pick: str, side: str) -> float:
        return median([median([getattr(s, pick) for s in getattr(r, side)]) for r in results])

    def p99(samples: list[Sample], pick: str) -> float:
        return percentile([getattr(s, pick) for s in samples], 0.99)

    a50, b50 = p50("first_ms", "direct"), p50("first_ms", "deskpilot")
    added = median(
        [median([s.first_ms for s in r.deskpilot]) - median([s.first_ms for s in r.direct]) for r in results]
    )
    paired = median([b.first_ms - a.first_ms for b, a in zip(ours, direct, strict=True)])
    how = (
        f"{len(direct)} samples each, alternating (a) and (b), {rounds} rounds × {pairs} (p50: median of the rounds' "
        f"p50; p99: over all samples); a fresh chat every {turns} turns (its first turn also asks for a title); "
        f"{warmup} pairs of warm-up; (a) sends the model the very request deskpilot sent it last (system prompt, "
        f"history, tools), 20 chunks out; 1-min load average before {load_before:.1f} on {os.cpu_count()} CPUs"
    )
    opened = median([median([s.opened_ms or 0.0 for s in r.deskpilot]) for r in results])
    with_context = [s for s in ours if s.context_ms is not None]
    context = median([s.context_ms for s in with_context if s.context_ms is not None]) if with_context else None
    split = f"first frame (auth + message stored + turn started) p50 {opened:.2f} ms"
    if context is not None:
        split += (
            f"; data-suggested-flows (the turn's reads done) p50 {context:.2f} ms "
            f"({len(with_context)}/{len(ours)} turns had flows)"
        )
    return [
        as_row(
            measure="1. time to first token, p50 / p99 ms",
            system="(a) straight from the fake model (httpx stream, deskpilot's own request replayed)",
            result=f"{_fmt(a50)} / {_fmt(p99(direct, 'first_ms'))}",
            vs_reference="reference",
            detail="POST /v1/chat/completions stream=true until the first chunk with content; " + how,
        ),
        as_row(
            measure="1. time to first token, p50 / p99 ms",
            system="(b) through deskpilot: uvicorn + create_app, SQLite file",
            result=f"{_fmt(b50)} / {_fmt(p99(ours, 'first_ms'))}",
            vs_reference=f"{b50 / a50:.1f}× (a)",
            detail="POST /api/v1/sessions/{id}/messages (Accept: text/event-stream) until the first text-delta "
            f"frame; {split}",
        ),
        as_row(
            measure="1. server-added time to first token, p50 ms",
            system="(b) − (a)",
            result=_fmt(added),
            vs_reference=f"goal ≤ {GOAL_MS:g} ms at p50: {'met' if added <= GOAL_MS else 'NOT met'}",
            detail=f"median over rounds of p50(b) − p50(a); median of paired differences {paired:.2f} ms",
        ),
        as_row(
            measure="1. whole turn, p50 / p99 ms",
            system="(b) through deskpilot: request to [DONE]",
            result=f"{_fmt(p50('total_ms', 'deskpilot'))} / {_fmt(p99(ours, 'total_ms'))}",
            vs_reference=f"(a) to its [DONE]: {_fmt(p50('total_ms', 'direct'))} / {_fmt(p99(direct, 'total_ms'))}",
            detail="includes storing the reply, the [QUESTIONS] and [PROMOTE] side effects and llm_calls",
        ),
    ]
