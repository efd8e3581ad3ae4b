"""The Celery app of `deskpilot worker`: configuration from settings and the one job-dispatch task."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_shutdown, worker_shutdown

from deskpilot.jobs.base import Job, JobRegistry, registry
from deskpilot.jobs.celery_backend import DEFAULT_QUEUE, DISPATCH_TASK, build_celery_app
from deskpilot.settings import Settings
from deskpilot.worker.runtime import ContextFactory, WorkerRuntime, default_context

logger = logging.getLogger(__name__)


def make_celery(
    settings: Settings,
    *,
    job_registry: JobRegistry | None = None,
    queue: str = DEFAULT_QUEUE,
    context_factory: ContextFactory = default_context,
) -> Celery:
    """Build the worker's Celery app (broker from `settings`) with the dispatch task registered.

    Every job travels as one `deskpilot.jobs.dispatch(name, payload)` message whose task id is the
    job id; the task runs the handler registered under `name` on the process's long-lived loop.
    Retries are re-published with exponential backoff from the handler's `RetryPolicy`.
    """
    runtime = WorkerRuntime(settings, job_registry or registry, context_factory)
    app = build_celery_app(settings, queue=queue)

    @app.task(
        name=DISPATCH_TASK,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        # The handler's RetryPolicy decides when to stop, not Celery's default of 3.
        max_retries=None,
        ignore_result=True,
        # Not shared: a shared task is added to every app finalized later in this process, and the
        # first app's dispatch (bound to its registry and runtime) would shadow any later one's.
        shared=False,
    )
    def dispatch(self: Task[Any, None], name: str, payload: dict[str, Any]) -> None:
        job = Job(id=str(self.request.id), name=name, payload=payload, attempt=self.request.retries + 1)
        outcome = runtime.run(job)
        if outcome.status == "retry":
            raise self.retry(countdown=outcome.retry_in_s)

    def close_runtime(**_: object) -> None:
        runtime.close()

    # Prefork children get worker_process_shutdown; solo and thread pools run tasks in the main process.
    worker_process_shutdown.connect(close_runtime, weak=False)
    worker_shutdown.connect(close_runtime, weak=False)
    return app
