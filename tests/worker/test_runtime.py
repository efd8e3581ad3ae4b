"""Worker pieces that need no broker: the per-process loop, the runtime, the Celery app and its command line."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from celery.signals import worker_shutdown

from deskpilot.errors import NotConfigured, UpstreamError
from deskpilot.events.pubsub import InProcessPubSub, JsonObject, PubSubClosed
from deskpilot.jobs import Job, JobContext, JobRegistry, RetryPolicy, registry
from deskpilot.jobs.celery_backend import DISPATCH_TASK, CeleryBackend, broker_url
from deskpilot.settings import Settings
from deskpilot.storage import Database
from deskpilot.worker import make_celery, run_worker
from deskpilot.worker.runtime import LoopThread, WorkerRuntime

BROKER = {"jobs": {"backend": "celery", "broker_url": "redis://127.0.0.1:1/0"}}


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    runner = LoopThread()
    yield runner
    runner.stop()


async def _loop_id() -> int:
    return id(asyncio.get_running_loop())


def test_the_loop_outlives_each_call(loop_thread: LoopThread) -> None:
    assert not loop_thread.started
    first = loop_thread.run(_loop_id())
    assert loop_thread.started
    assert loop_thread.run(_loop_id()) == first


def test_a_coroutines_exception_reaches_the_caller(loop_thread: LoopThread) -> None:
    async def fail() -> None:
        raise LookupError("nope")

    with pytest.raises(LookupError):
        loop_thread.run(fail())
    assert loop_thread.run(_loop_id())


def test_calls_from_several_threads_share_the_loop(loop_thread: LoopThread) -> None:
    ids: list[int] = []
    lock = threading.Lock()

    def call() -> None:
        value = loop_thread.run(_loop_id())
        with lock:
            ids.append(value)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(ids) == 8
    assert len(set(ids)) == 1


def test_stopping_twice_is_harmless_and_a_later_call_starts_a_new_loop(loop_thread: LoopThread) -> None:
    loop_thread.run(_loop_id())
    loop_thread.stop()
    loop_thread.stop()
    assert not loop_thread.started
    loop_thread.run(_loop_id())
    assert loop_thread.started


class ContextFactory:
    """Counts how often the runtime builds a context (once per process is the point)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.built: list[JobContext] = []

    def __call__(self, settings: Settings) -> JobContext:
        context = JobContext(settings=settings, database=Database(self.database_url), pubsub=InProcessPubSub())
        self.built.append(context)
        return context


def test_the_runtime_builds_its_context_once_and_closes_it(tmp_path: Path) -> None:
    jobs = JobRegistry()
    seen: list[tuple[int, int]] = []

    @jobs.job("probe")
    async def probe(ctx: JobContext, payload: JsonObject) -> None:
        seen.append((id(ctx.database), id(asyncio.get_running_loop())))

    factory = ContextFactory(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    runtime = WorkerRuntime(Settings.model_validate({}), jobs, factory)
    for n in range(3):
        assert runtime.run(Job(id=str(n), name="probe")).status == "done"
    runtime.close()
    runtime.close()
    assert len(factory.built) == 1
    assert len(set(seen)) == 1
    with pytest.raises(PubSubClosed):
        asyncio.run(factory.built[0].pubsub.publish("c", {}))


def test_the_celery_app_is_configured_for_at_least_once_json_delivery() -> None:
    app = make_celery(Settings.model_validate(BROKER), queue="q1")
    assert isinstance(app, Celery)
    assert app.conf.broker_url == "redis://127.0.0.1:1/0"
    assert app.conf.task_serializer == "json"
    assert app.conf.accept_content == ["json"]
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.task_default_queue == "q1"
    task = app.tasks[DISPATCH_TASK]
    assert task.acks_late is True
    assert task.reject_on_worker_lost is True
    assert task.max_retries is None


def test_the_broker_falls_back_to_the_redis_url_and_is_required() -> None:
    assert broker_url(Settings.model_validate({"redis": {"url": "redis://r:6379/2"}})) == "redis://r:6379/2"
    with pytest.raises(NotConfigured):
        broker_url(Settings.model_validate({"jobs": {"backend": "celery"}}))


def test_the_dispatch_task_runs_handlers_and_retries(tmp_path: Path) -> None:
    """Run eagerly in this process (Celery re-applies retries at once): the task's own logic, no broker."""
    jobs = JobRegistry()
    attempts: list[int] = []

    @jobs.job("flaky", retry=RetryPolicy(max_retries=3, backoff_s=0.01, jitter=False))
    async def flaky(ctx: JobContext, payload: JsonObject) -> None:
        attempts.append(ctx.attempt)
        if ctx.attempt < int(str(payload["succeed_on"])):
            raise RuntimeError("again")

    factory = ContextFactory(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    app = make_celery(Settings.model_validate(BROKER), job_registry=jobs, context_factory=factory)
    app.tasks[DISPATCH_TASK].apply(args=("flaky", {"succeed_on": 3}), task_id="job-1")
    assert attempts == [1, 2, 3]
    # The worker's shutdown signal closes the runtime (and its loop thread).
    worker_shutdown.send(sender=None)
    with pytest.raises(PubSubClosed):
        asyncio.run(factory.built[0].pubsub.publish("c", {}))


def test_run_worker_imports_handlers_and_starts_celery(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[list[str]] = []
    monkeypatch.setattr(Celery, "worker_main", lambda self, argv=None: started.append(argv))
    run_worker(
        Settings.model_validate(BROKER),
        concurrency=3,
        loglevel="DEBUG",
        queue="q2",
        imports=["tests.worker.handlers"],
        discover=False,
    )
    [argv] = started
    assert argv[0] == "worker"
    for flag in ("--concurrency=3", "--loglevel=DEBUG", "--queues=q2", "--pool=prefork", "--without-mingle"):
        assert flag in argv
    assert "tests.record" in registry


async def test_an_unreachable_broker_fails_at_start() -> None:
    backend = CeleryBackend(Settings.model_validate(BROKER), registry, connect_timeout_s=1)
    with pytest.raises(UpstreamError):
        await backend.start()
    await backend.stop()
