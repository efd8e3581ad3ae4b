"""In-process job backend: a bounded pool of tasks on the server's own event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Literal

from pydantic import JsonValue

from deskpilot.jobs.base import (
    Job,
    JobBackend,
    JobBackendStopped,
    JobContext,
    JobRegistry,
    encode_payload,
    new_job_id,
)
from deskpilot.jobs.runner import execute

logger = logging.getLogger(__name__)


class InProcessBackend(JobBackend):
    """Runs jobs on the running event loop, at most `concurrency` at a time.

    Jobs live only in memory: a crash or restart loses queued ones. That is acceptable because the
    database row of the work is the source of truth, and its domain re-enqueues unfinished rows
    on startup (the same recovery a Celery deployment needs after a lost broker).
    """

    def __init__(self, registry: JobRegistry, context: JobContext, *, concurrency: int = 8) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._registry = registry
        self._context = context
        self._concurrency = concurrency
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._state: Literal["new", "running", "stopping", "stopped"] = "new"
        self._running = 0
        # Jobs queued, running or waiting for a delay or retry: `join` waits for zero.
        self._outstanding = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def running(self) -> int:
        """Handlers running now."""
        return self._running

    @property
    def outstanding(self) -> int:
        """Jobs not finished yet: queued, running, or waiting for their delay or retry."""
        return self._outstanding

    async def start(self) -> None:
        if self._state == "running":
            return
        if self._state != "new":
            raise JobBackendStopped("the in-process job backend was stopped and cannot be restarted")
        self._state = "running"
        self._workers = [
            asyncio.create_task(self._work(), name=f"deskpilot-job-worker-{i}") for i in range(self._concurrency)
        ]
        logger.info("in-process jobs started with concurrency %d", self._concurrency)

    async def enqueue(
        self, name: str, payload: Mapping[str, JsonValue] | None = None, *, delay_s: float | None = None
    ) -> str:
        if self._state in ("stopping", "stopped"):
            raise JobBackendStopped(f"cannot enqueue {name!r}: the job backend is stopping")
        self._registry.get(name)
        job = Job(id=new_job_id(), name=name, payload=encode_payload(name, payload))
        self._outstanding += 1
        self._idle.clear()
        self._submit(job, delay_s)
        return job.id

    async def stop(self, *, drain: bool = True, timeout_s: float = 30.0) -> None:
        """Stop: let queued and running jobs finish for up to `timeout_s` (or not, without `drain`), then cancel.

        Delayed jobs and pending retries are dropped; their rows remain the source of truth.
        """
        if self._state == "stopped":
            return
        self._state = "stopping"
        self._drop_timers("shutdown")
        if drain and self._workers:
            try:
                await asyncio.wait_for(self._queue.join(), timeout_s)
            except TimeoutError:
                logger.warning(
                    "jobs not drained within %.1fs: cancelling %d running, dropping %d queued",
                    timeout_s,
                    self._running,
                    self._queue.qsize(),
                )
        elif self._queue.qsize():
            logger.warning("%d queued job(s) dropped at shutdown", self._queue.qsize())
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        self._drop_timers("shutdown")
        self._state = "stopped"
        logger.info("in-process jobs stopped")

    async def join(self, timeout_s: float | None = None) -> None:
        """Wait until every job enqueued so far has finished (including its retries)."""
        await asyncio.wait_for(self._idle.wait(), timeout_s)

    def _submit(self, job: Job, delay_s: float | None) -> None:
        if delay_s is None or delay_s <= 0:
            self._queue.put_nowait(job)
            return
        loop = asyncio.get_running_loop()
        self._timers[job.id] = loop.call_later(delay_s, self._release, job)

    def _release(self, job: Job) -> None:
        self._timers.pop(job.id, None)
        self._queue.put_nowait(job)

    def _drop_timers(self, why: str) -> None:
        if not self._timers:
            return
        logger.warning("%d delayed job(s) or retries dropped at %s", len(self._timers), why)
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    def _finished(self) -> None:
        self._outstanding -= 1
        if self._outstanding == 0:
            self._idle.set()

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            self._running += 1
            try:
                outcome = await execute(self._registry, self._context, job)
            except Exception:
                # execute() contains handler errors; this guards the worker against a bug of its own.
                logger.exception("job %r (%s) crashed the runner", job.name, job.id)
                outcome = None
            finally:
                self._running -= 1
                self._queue.task_done()
            if outcome is not None and outcome.status == "retry" and self._state in ("new", "running"):
                self._submit(replace(job, attempt=job.attempt + 1), outcome.retry_in_s)
            else:
                if outcome is not None and outcome.status == "retry":
                    logger.warning("retry of job %r (%s) dropped: the backend is stopping", job.name, job.id)
                self._finished()
