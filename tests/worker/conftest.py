"""A real Celery worker process on real Redis, one per test module, with its own queue and SQLite file."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from deskpilot.jobs import registry
from deskpilot.jobs.celery_backend import CeleryBackend
from deskpilot.settings import Settings
from deskpilot.storage import Database
from tests.services import require_redis
from tests.worker import handlers

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Worker:
    process: subprocess.Popen[bytes]
    queue: str
    settings: Settings
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _wait_ready(worker: Worker, timeout_s: float) -> None:
    """Send a probe job with the plain Celery client and wait for its row: the worker consumes."""
    key = f"ready-{uuid.uuid4().hex}"
    backend = CeleryBackend(worker.settings, registry, queue=worker.queue)
    backend.app.send_task("deskpilot.jobs.dispatch", args=("tests.record", {"key": key}), queue=worker.queue)
    backend.app.close()

    async def probe() -> None:
        database = Database(worker.settings.database.url)
        try:
            await handlers.eventually(lambda: _has_work(database, key), timeout_s=timeout_s, every_s=0.05)
        finally:
            await database.dispose()

    try:
        asyncio.run(probe())
    except AssertionError:
        raise AssertionError(f"worker not ready within {timeout_s}s:\n{worker.output()}") from None


async def _has_work(database: Database, key: str) -> bool:
    return await handlers.work_done(database, key) == 1


def start_worker(tmp: Path, redis_url: str, *, concurrency: int = 2, pool: str = "prefork") -> Worker:
    database_url = f"sqlite+aiosqlite:///{tmp / 'jobs.db'}"

    async def create() -> None:
        database = Database(database_url)
        await handlers.create_tables(database)
        await database.dispose()

    asyncio.run(create())
    queue = f"deskpilot-test-{uuid.uuid4().hex[:10]}"
    config = {
        "DESKPILOT_ENVIRONMENT": "test",
        "DESKPILOT_DATABASE__URL": database_url,
        "DESKPILOT_JOBS__BACKEND": "celery",
        "DESKPILOT_JOBS__BROKER_URL": redis_url,
        "DESKPILOT_REDIS__URL": redis_url,
    }
    # The child needs PATH and friends, plus the repository on sys.path to import tests.worker.handlers.
    env = {**os.environ, **config, "PYTHONPATH": str(REPO)}  # noqa: TID251
    log = tmp / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "deskpilot.worker",
                "--import=tests.worker.handlers",
                "--no-discover",
                f"--queue={queue}",
                f"--concurrency={concurrency}",
                f"--pool={pool}",
                "--loglevel=INFO",
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    settings = Settings.model_validate(
        {
            "environment": "test",
            "database": {"url": database_url},
            "jobs": {"backend": "celery", "broker_url": redis_url},
            "redis": {"url": redis_url},
        }
    )
    worker = Worker(process=process, queue=queue, settings=settings, log=log)
    try:
        _wait_ready(worker, timeout_s=30)
    except BaseException:
        stop_worker(worker, redis_url)
        raise
    return worker


def stop_worker(worker: Worker, redis_url: str) -> None:
    process = worker.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # warm shutdown: running jobs finish, then exit
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
    client = redis.Redis.from_url(redis_url)
    try:
        # The queue and kombu's bindings for it: nothing of a throwaway queue stays in Redis.
        client.delete(worker.queue, f"_kombu.binding.{worker.queue}", f"_kombu.binding_permanent.{worker.queue}")
    finally:
        client.close()


@pytest.fixture(scope="module")
def celery_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    redis_url = require_redis()
    worker = start_worker(tmp_path_factory.mktemp("celery-worker"), redis_url)
    yield worker
    stop_worker(worker, redis_url)


@pytest.fixture
async def celery_jobs(celery_worker: Worker) -> AsyncIterator[CeleryBackend]:
    backend = CeleryBackend(celery_worker.settings, registry, queue=celery_worker.queue)
    await backend.start()
    yield backend
    await backend.stop()
    assert celery_worker.process.poll() is None, f"worker died:\n{celery_worker.output()}"


@pytest.fixture
async def worker_db(celery_worker: Worker) -> AsyncIterator[Database]:
    database = Database(celery_worker.settings.database.url)
    yield database
    await database.dispose()
