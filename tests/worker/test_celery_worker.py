"""The Celery backend end to end: real Redis broker, real worker process, results read from its SQLite file."""

from __future__ import annotations

import os
import time
import uuid
from collections import defaultdict

import pytest

from deskpilot.jobs.celery_backend import CeleryBackend
from deskpilot.storage import Database
from tests.worker import handlers
from tests.worker.conftest import Worker

pytestmark = pytest.mark.redis


def new_key() -> str:
    return uuid.uuid4().hex


async def test_a_job_runs_in_the_worker_process(celery_jobs: CeleryBackend, worker_db: Database) -> None:
    key = new_key()
    job_id = await celery_jobs.enqueue("tests.record", {"key": key})

    async def done() -> bool:
        return await handlers.work_done(worker_db, key) == 1

    await handlers.eventually(done)
    [delivery] = await handlers.deliveries(worker_db, key)
    assert delivery.job_id == job_id
    assert delivery.attempt == 1
    assert delivery.pid != os.getpid()


async def test_failures_are_retried_with_exponential_backoff(celery_jobs: CeleryBackend, worker_db: Database) -> None:
    key = new_key()
    job_id = await celery_jobs.enqueue("tests.flaky", {"key": key, "succeed_on": 3})

    async def done() -> bool:
        return await handlers.work_done(worker_db, key) == 1

    await handlers.eventually(done)
    attempts = await handlers.deliveries(worker_db, key)
    assert [d.attempt for d in attempts] == [1, 2, 3]
    assert {d.job_id for d in attempts} == {job_id}
    # QUICK_RETRY: 0.05 s after the first failure, 0.1 s after the second.
    assert attempts[1].at - attempts[0].at >= 0.045
    assert attempts[2].at - attempts[1].at >= 0.09


async def test_a_user_error_is_not_retried_and_the_worker_goes_on(
    celery_jobs: CeleryBackend, worker_db: Database, celery_worker: Worker
) -> None:
    failing, after = new_key(), new_key()
    job_id = await celery_jobs.enqueue("tests.missing_row", {"key": failing})

    async def given_up() -> bool:
        return f"({job_id}) failed on attempt 1 and will not be retried" in celery_worker.output()

    await handlers.eventually(given_up)
    await celery_jobs.enqueue("tests.record", {"key": after})

    async def next_done() -> bool:
        return await handlers.work_done(worker_db, after) == 1

    await handlers.eventually(next_done)
    assert len(await handlers.deliveries(worker_db, failing)) == 1


async def test_a_message_delivered_twice_does_the_work_once(celery_jobs: CeleryBackend, worker_db: Database) -> None:
    key = new_key()
    await celery_jobs.enqueue("tests.record", {"key": key})
    await celery_jobs.enqueue("tests.record", {"key": key})

    async def both_delivered() -> bool:
        return len(await handlers.deliveries(worker_db, key)) == 2

    await handlers.eventually(both_delivered)
    assert await handlers.work_done(worker_db, key) == 1


async def test_a_worker_process_dying_before_the_ack_gets_the_job_redelivered(
    celery_jobs: CeleryBackend, worker_db: Database, celery_worker: Worker
) -> None:
    """acks_late + reject_on_worker_lost: the job comes back, and the idempotency key keeps the work single."""
    key = new_key()
    job_id = await celery_jobs.enqueue("tests.record", {"key": key, "crash_after_work": True})

    async def redelivered() -> bool:
        return len(await handlers.deliveries(worker_db, key)) == 2

    await handlers.eventually(redelivered, timeout_s=20)
    first, second = await handlers.deliveries(worker_db, key)
    assert first.job_id == second.job_id == job_id
    assert first.pid != second.pid or first.at < second.at
    assert await handlers.work_done(worker_db, key) == 1
    assert "WorkerLostError" in celery_worker.output() or "exited with" in celery_worker.output()


async def test_each_worker_process_keeps_one_event_loop_and_one_engine(
    celery_jobs: CeleryBackend, worker_db: Database
) -> None:
    keys = [new_key() for _ in range(12)]
    for key in keys:
        await celery_jobs.enqueue("tests.record", {"key": key})

    async def all_done() -> bool:
        return all([await handlers.work_done(worker_db, key) == 1 for key in keys])

    await handlers.eventually(all_done)
    loops: dict[int, set[int]] = defaultdict(set)
    engines: dict[int, set[int]] = defaultdict(set)
    for key in keys:
        [delivery] = await handlers.deliveries(worker_db, key)
        loops[delivery.pid].add(delivery.loop_id)
        engines[delivery.pid].add(delivery.engine_id)
    assert all(len(ids) == 1 for ids in loops.values()), loops
    assert all(len(ids) == 1 for ids in engines.values()), engines


async def test_delay_postpones_the_job(celery_jobs: CeleryBackend, worker_db: Database) -> None:
    key = new_key()
    sent = time.time()
    await celery_jobs.enqueue("tests.record", {"key": key}, delay_s=0.3)

    async def done() -> bool:
        return await handlers.work_done(worker_db, key) == 1

    await handlers.eventually(done)
    [delivery] = await handlers.deliveries(worker_db, key)
    assert delivery.at - sent >= 0.29
