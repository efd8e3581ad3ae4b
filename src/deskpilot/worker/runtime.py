"""One long-lived event loop per worker process, on which every async job handler runs."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from deskpilot.events.pubsub import make_pubsub
from deskpilot.jobs.base import Job, JobContext, JobRegistry
from deskpilot.jobs.runner import Outcome, execute
from deskpilot.settings import Settings
from deskpilot.storage import Database

logger = logging.getLogger(__name__)

T = TypeVar("T")

ContextFactory = Callable[[Settings], JobContext]


class LoopThread:
    """An event loop running on a daemon thread, created lazily in the process that uses it.

    Celery calls tasks synchronously; `asyncio.run` per task would build and drop the database
    engine and its connections every time. This loop lives as long as the worker process, so
    pools are reused; tasks submit coroutines to it from any thread (prefork, solo or threads pool).
    """

    def __init__(self, name: str = "deskpilot-jobs-loop") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    @property
    def started(self) -> bool:
        """Whether this process has a running loop (a forked child inherits none)."""
        return self._loop is not None and self._pid == os.getpid()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run `coro` on the loop and wait for its result (its exception is re-raised here)."""
        loop = self._ensure()
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        return future.result(timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        with self._lock:
            if not self.started:
                return
            loop, thread = self._loop, self._thread
            self._loop = self._thread = self._pid = None
        assert loop is not None
        assert thread is not None
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout_s)
        if thread.is_alive():
            logger.warning("job event loop did not stop within %.1fs", timeout_s)
            return
        loop.close()

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is not None and self._pid == os.getpid():
                return self._loop
            # After a fork the parent's loop thread does not exist here: start afresh.
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=self._serve, args=(loop,), name=self._name, daemon=True)
            thread.start()
            self._loop, self._thread, self._pid = loop, thread, os.getpid()
            logger.debug("job event loop started in process %d", self._pid)
            return loop

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()


def default_context(settings: Settings) -> JobContext:
    """The context a worker process gives its handlers: its own database engine and pub/sub."""
    database = Database(settings.database.url, echo=settings.database.echo, pool_size=settings.database.pool_size)
    return JobContext(settings=settings, database=database, pubsub=make_pubsub(settings))


class WorkerRuntime:
    """Runs jobs for one worker process: lazily builds the context on the loop, closes both at exit.

    The runtime owns the context its factory builds: it disposes the database and closes pub/sub.
    """

    def __init__(
        self, settings: Settings, registry: JobRegistry, context_factory: ContextFactory = default_context
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._context_factory = context_factory
        self._loop = LoopThread()
        self._context: JobContext | None = None
        self._context_pid: int | None = None

    def run(self, job: Job) -> Outcome:
        """Run one delivery of `job` on the process's loop (blocking the calling thread)."""
        return self._loop.run(self._execute(job))

    def close(self) -> None:
        if not self._loop.started:
            return
        try:
            self._loop.run(self._close_context(), timeout_s=10.0)
        except Exception:
            logger.exception("closing the job context failed")
        finally:
            self._loop.stop()

    async def _execute(self, job: Job) -> Outcome:
        return await execute(self._registry, self._get_context(), job)

    def _get_context(self) -> JobContext:
        # Built on the loop, in the process that uses it: engines and clients are never shared across a fork.
        if self._context is None or self._context_pid != os.getpid():
            self._context = self._context_factory(self._settings)
            self._context_pid = os.getpid()
        return self._context

    async def _close_context(self) -> None:
        context, self._context = self._context, None
        if context is None or self._context_pid != os.getpid():
            return
        await context.pubsub.close()
        await context.database.dispose()
