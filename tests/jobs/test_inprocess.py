"""In-process backend: bounded concurrency, delays, retries with backoff, graceful stop, idempotent redelivery."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from deskpilot.errors import Conflict, ValidationFailed
from deskpilot.events.pubsub import InProcessPubSub, JsonObject
from deskpilot.jobs import (
    InProcessBackend,
    JobBackendStopped,
    JobContext,
    JobRegistry,
    RetryPolicy,
    UnknownJob,
    make_job_backend,
    registry,
)
from deskpilot.jobs.celery_backend import CeleryBackend
from deskpilot.settings import Settings
from deskpilot.storage import Database
from tests.worker import handlers

FAST = RetryPolicy(max_retries=2, backoff_s=0.01, jitter=False)


@pytest.fixture
async def context(tmp_path: Path) -> AsyncIterator[JobContext]:
    settings = Settings.model_validate({"database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"}})
    database = Database(settings.database.url)
    pubsub = InProcessPubSub()
    await handlers.create_tables(database)
    yield JobContext(settings=settings, database=database, pubsub=pubsub)
    await pubsub.close()
    await database.dispose()


@pytest.fixture
def jobs() -> JobRegistry:
    return JobRegistry()


@pytest.fixture
async def backend(jobs: JobRegistry, context: JobContext) -> AsyncIterator[InProcessBackend]:
    runner = InProcessBackend(jobs, context, concurrency=3)
    await runner.start()
    yield runner
    await runner.stop(drain=False)


async def test_a_job_runs_with_its_context_and_a_copy_of_the_payload(
    jobs: JobRegistry, backend: InProcessBackend
) -> None:
    seen: list[tuple[str, str, int, JsonObject]] = []

    @jobs.job("echo")
    async def echo(ctx: JobContext, payload: JsonObject) -> None:
        seen.append((ctx.job_id, ctx.job_name, ctx.attempt, payload))

    payload: JsonObject = {"run_id": "r1", "nested": {"n": [1, 2]}}
    job_id = await backend.enqueue("echo", payload)
    await backend.join(timeout_s=5)
    assert seen == [(job_id, "echo", 1, payload)]
    assert seen[0][3] is not payload


async def test_at_most_concurrency_handlers_run_at_once(jobs: JobRegistry, backend: InProcessBackend) -> None:
    gate = asyncio.Event()
    running = 0
    peak = 0

    @jobs.job("wait")
    async def wait(ctx: JobContext, payload: JsonObject) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1

    for _ in range(10):
        await backend.enqueue("wait")
    await handlers.eventually(lambda: _true(backend.running == 3))
    assert backend.outstanding == 10
    gate.set()
    await backend.join(timeout_s=5)
    assert peak == 3
    assert backend.outstanding == 0


async def _true(value: bool) -> bool:
    return value


async def test_delay_postpones_the_start(jobs: JobRegistry, backend: InProcessBackend) -> None:
    loop = asyncio.get_running_loop()
    started: list[float] = []

    @jobs.job("later")
    async def later(ctx: JobContext, payload: JsonObject) -> None:
        started.append(loop.time())

    before = loop.time()
    await backend.enqueue("later", delay_s=0.1)
    await backend.join(timeout_s=5)
    assert started[0] - before >= 0.09


async def test_a_failing_handler_is_retried_with_backoff_then_given_up(
    jobs: JobRegistry, backend: InProcessBackend, caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.get_running_loop()
    attempts: list[tuple[int, float]] = []

    @jobs.job("boom", retry=FAST)
    async def boom(ctx: JobContext, payload: JsonObject) -> None:
        attempts.append((ctx.attempt, loop.time()))
        raise RuntimeError("provider down")

    with caplog.at_level(logging.WARNING, logger="deskpilot.jobs"):
        await backend.enqueue("boom")
        await backend.join(timeout_s=5)
    assert [a for a, _ in attempts] == [1, 2, 3]
    assert attempts[1][1] - attempts[0][1] >= 0.009
    assert attempts[2][1] - attempts[1][1] >= 0.019
    assert "retrying in 0.01s" in caplog.text
    assert "giving up" in caplog.text


async def test_user_errors_are_not_retried(jobs: JobRegistry, backend: InProcessBackend) -> None:
    attempts = 0

    @jobs.job("wrong_state", retry=FAST)
    async def wrong_state(ctx: JobContext, payload: JsonObject) -> None:
        nonlocal attempts
        attempts += 1
        raise Conflict("run is already finished")

    await backend.enqueue("wrong_state")
    await backend.join(timeout_s=5)
    assert attempts == 1


async def test_a_raising_handler_never_reaches_the_event_loop(jobs: JobRegistry, backend: InProcessBackend) -> None:
    loop = asyncio.get_running_loop()
    unhandled: list[object] = []
    loop.set_exception_handler(lambda _loop, ctx: unhandled.append(ctx))
    done: list[int] = []

    @jobs.job("bad", retry=RetryPolicy(max_retries=0))
    async def bad(ctx: JobContext, payload: JsonObject) -> None:
        raise KeyError("bug")

    @jobs.job("good")
    async def good(ctx: JobContext, payload: JsonObject) -> None:
        done.append(1)

    try:
        for _ in range(5):
            await backend.enqueue("bad")
        await backend.enqueue("good")
        await backend.join(timeout_s=5)
    finally:
        loop.set_exception_handler(None)
    assert done == [1]
    assert unhandled == []


async def test_enqueue_refuses_unknown_names_and_non_json_payloads(
    jobs: JobRegistry, backend: InProcessBackend
) -> None:
    @jobs.job("known")
    async def known(ctx: JobContext, payload: JsonObject) -> None:
        return None

    with pytest.raises(UnknownJob):
        await backend.enqueue("unknown")
    with pytest.raises(ValidationFailed):
        await backend.enqueue("known", {"at": object()})  # type: ignore[dict-item]
    assert backend.outstanding == 0


async def test_jobs_enqueued_before_start_run_after_it(jobs: JobRegistry, context: JobContext) -> None:
    ran = asyncio.Event()

    @jobs.job("early")
    async def early(ctx: JobContext, payload: JsonObject) -> None:
        ran.set()

    async with InProcessBackend(jobs, context) as runner:
        assert isinstance(runner, InProcessBackend)
        await runner.enqueue("early")
        await asyncio.wait_for(ran.wait(), 5)


async def test_stop_drains_queued_and_running_jobs(jobs: JobRegistry, context: JobContext) -> None:
    finished: list[int] = []

    @jobs.job("slow")
    async def slow(ctx: JobContext, payload: JsonObject) -> None:
        await asyncio.sleep(0.01)
        finished.append(1)

    runner = InProcessBackend(jobs, context, concurrency=2)
    await runner.start()
    for _ in range(6):
        await runner.enqueue("slow")
    await runner.stop(drain=True, timeout_s=5)
    assert len(finished) == 6
    with pytest.raises(JobBackendStopped):
        await runner.enqueue("slow")
    with pytest.raises(JobBackendStopped):
        await runner.start()


async def test_stop_without_drain_cancels_running_handlers(jobs: JobRegistry, context: JobContext) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    @jobs.job("forever")
    async def forever(ctx: JobContext, payload: JsonObject) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    runner = InProcessBackend(jobs, context)
    await runner.start()
    await runner.enqueue("forever")
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(runner.stop(drain=False), 5)
    assert cancelled.is_set()


async def test_a_drain_that_takes_too_long_ends_in_cancellation(
    jobs: JobRegistry, context: JobContext, caplog: pytest.LogCaptureFixture
) -> None:
    started = asyncio.Event()

    @jobs.job("stuck")
    async def stuck(ctx: JobContext, payload: JsonObject) -> None:
        started.set()
        await asyncio.Event().wait()

    runner = InProcessBackend(jobs, context)
    await runner.start()
    await runner.enqueue("stuck")
    await runner.enqueue("stuck", delay_s=60)
    await asyncio.wait_for(started.wait(), 5)
    with caplog.at_level(logging.WARNING, logger="deskpilot.jobs"):
        await asyncio.wait_for(runner.stop(drain=True, timeout_s=0.05), 5)
    assert "1 delayed job(s) or retries dropped" in caplog.text
    assert "not drained within 0.1s" in caplog.text


async def test_a_job_delivered_twice_does_its_work_once(context: JobContext) -> None:
    """The handler contract: at-least-once delivery is harmless when the work is keyed by an idempotency key."""
    async with InProcessBackend(registry, context, concurrency=2) as runner:
        assert isinstance(runner, InProcessBackend)
        await runner.enqueue("tests.record", {"key": "ticket-42"})
        await runner.enqueue("tests.record", {"key": "ticket-42"})
        await runner.join(timeout_s=5)
    delivered = await handlers.deliveries(context.database, "ticket-42")
    assert len(delivered) == 2
    assert len({d.job_id for d in delivered}) == 2
    assert await handlers.work_done(context.database, "ticket-42") == 1


async def test_the_settings_choose_the_backend(context: JobContext) -> None:
    backend = make_job_backend(context.settings, registry, context)
    assert isinstance(backend, InProcessBackend)
    celery_settings = Settings.model_validate({"jobs": {"backend": "celery", "broker_url": "redis://127.0.0.1:1/0"}})
    celery = make_job_backend(celery_settings, registry, context)
    assert isinstance(celery, CeleryBackend)
    await celery.stop()
