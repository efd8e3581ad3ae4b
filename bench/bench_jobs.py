"""Jobs: in-process no-op throughput, and Celery round trip on loopback Redis through a real worker process."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

from deskpilot.events.pubsub import InProcessPubSub, JsonObject, RedisPubSub, Subscription
from deskpilot.jobs import InProcessBackend, JobContext, RetryPolicy, registry
from deskpilot.jobs.celery_backend import CeleryBackend
from deskpilot.settings import Settings
from deskpilot.storage import Database

TITLE = "Background jobs: in-process throughput, Celery round trip"
COMMAND = "python -m bench.bench_jobs"

REPO = Path(__file__).resolve().parent.parent
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
NO_RETRY = RetryPolicy(max_retries=0)


@registry.job("bench.noop", retry=NO_RETRY)
async def noop(ctx: JobContext, payload: JsonObject) -> None:
    return None


@registry.job("bench.echo", retry=NO_RETRY)
async def echo(ctx: JobContext, payload: JsonObject) -> None:
    """Answers on the channel named in the payload: how the bench sees the job finish."""
    await ctx.pubsub.publish(str(payload["channel"]), {"seq": payload["seq"]})


def _row(measure: str, result: str, detail: str) -> dict[str, str]:
    return {"measure": measure, "result": result, "detail": detail}


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


async def _inprocess_rate(concurrency: int, jobs: int) -> float:
    settings = Settings.model_validate({"database": {"url": "sqlite+aiosqlite://"}})
    # Never connected: no-op jobs measure the runner, not the database.
    context = JobContext(settings=settings, database=Database(settings.database.url), pubsub=InProcessPubSub())
    backend = InProcessBackend(registry, context, concurrency=concurrency)
    await backend.start()
    started = time.perf_counter()
    for _ in range(jobs):
        await backend.enqueue("bench.noop", {"n": 1})
    await backend.join(timeout_s=120)
    elapsed = time.perf_counter() - started
    await backend.stop()
    await context.pubsub.close()
    await context.database.dispose()
    return jobs / elapsed


async def bench_inprocess(quick: bool) -> list[dict[str, str]]:
    jobs, repeats = (2_000, 1) if quick else (20_000, 5)
    rows = []
    for concurrency in (1, 8, 64):
        rates = [await _inprocess_rate(concurrency, jobs) for _ in range(repeats)]
        rows.append(
            _row(
                f"in-process no-op jobs, concurrency {concurrency}",
                f"{statistics.median(rates):,.0f} jobs/s",
                f"enqueue + run + join of {jobs:,} jobs, median of {repeats}",
            )
        )
    return rows


def _redis_reachable(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _start_worker(redis_url: str, queue: str, tmp: Path, concurrency: int) -> subprocess.Popen[bytes]:
    config = {
        "DESKPILOT_ENVIRONMENT": "test",
        "DESKPILOT_DATABASE__URL": f"sqlite+aiosqlite:///{tmp / 'bench.db'}",
        "DESKPILOT_JOBS__BROKER_URL": redis_url,
        "DESKPILOT_REDIS__URL": redis_url,
    }
    env = {**os.environ, **config, "PYTHONPATH": str(REPO)}  # noqa: TID251 - the child inherits PATH and friends
    with (tmp / "worker.log").open("wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "deskpilot.worker",
                "--import=bench.bench_jobs",
                "--no-discover",
                f"--queue={queue}",
                f"--concurrency={concurrency}",
                "--loglevel=WARNING",
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop_worker(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


async def _round_trip(backend: CeleryBackend, sub: Subscription, seq: int, timeout_s: float) -> float:
    started = time.perf_counter()
    await backend.enqueue("bench.echo", {"channel": sub.channel, "seq": seq})
    while True:
        message = await sub.get(timeout_s=timeout_s)
        if message.get("seq") == seq:
            return time.perf_counter() - started


async def bench_celery(quick: bool, redis_url: str) -> list[dict[str, str]]:
    trips, burst, workers = (50, 200, 2) if quick else (1_000, 2_000, 2)
    queue = f"deskpilot-bench-{uuid.uuid4().hex[:8]}"
    settings = Settings.model_validate({"jobs": {"backend": "celery", "broker_url": redis_url}})
    with tempfile.TemporaryDirectory() as tmp:
        process = _start_worker(redis_url, queue, Path(tmp), workers)
        backend = CeleryBackend(settings, registry, queue=queue)
        # The burst's answers arrive faster than they are read: room for all of them, none dropped.
        pubsub = RedisPubSub(redis_url, max_pending=burst + trips + 100)
        try:
            await backend.start()
            async with pubsub.subscribe(f"bench:{uuid.uuid4().hex}") as sub:
                # The first answer also waits for the worker to boot.
                await _round_trip(backend, sub, -1, timeout_s=60)
                for seq in range(20):
                    await _round_trip(backend, sub, seq, timeout_s=10)
                latencies = [await _round_trip(backend, sub, seq, timeout_s=10) for seq in range(trips)]

                started = time.perf_counter()
                await asyncio.gather(
                    *(backend.enqueue("bench.echo", {"channel": sub.channel, "seq": -2}) for _ in range(burst))
                )
                for _ in range(burst):
                    await sub.get(timeout_s=30)
                rate = burst / (time.perf_counter() - started)
        finally:
            await pubsub.close()
            await backend.stop()
            _stop_worker(process)
            client = redis.Redis.from_url(redis_url)
            # The queue and kombu's bindings for it: nothing of a throwaway queue stays in Redis.
            client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
            client.close()
    cuts = statistics.quantiles(latencies, n=100)
    return [
        _row(
            "Celery round trip, p50 / p99 ms",
            f"{_ms(statistics.median(latencies))} / {_ms(cuts[98])}",
            f"enqueue → worker ({workers} prefork processes) → handler publishes → subscriber; {trips} sequential",
        ),
        _row(
            "Celery throughput",
            f"{rate:,.0f} jobs/s",
            f"{burst} jobs enqueued concurrently from one process, until the last answer arrives",
        ),
    ]


async def _run(quick: bool) -> list[dict[str, str]]:
    rows = await bench_inprocess(quick)
    redis_url = Settings().redis.url or DEFAULT_REDIS
    if _redis_reachable(redis_url):
        rows += await bench_celery(quick, redis_url)
    else:
        rows.append(_row("Celery round trip", "skipped", f"Redis not reachable at {redis_url}"))
    return rows


def run(quick: bool = False) -> list[dict[str, str]]:
    """The table rows: in-process throughput at three concurrencies, Celery latency and throughput."""
    return asyncio.run(_run(quick))


if __name__ == "__main__":
    import argparse

    from bench.run import markdown_table

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer jobs and round trips, for a smoke run")
    print(markdown_table(run(quick=parser.parse_args().quick)))
