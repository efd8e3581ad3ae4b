"""Start a Celery worker that runs deskpilot's jobs: what `deskpilot worker` calls."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Sequence

from deskpilot.jobs.base import discover_job_modules
from deskpilot.jobs.celery_backend import DEFAULT_QUEUE
from deskpilot.settings import Settings
from deskpilot.worker.celery_app import make_celery

logger = logging.getLogger(__name__)


def worker_argv(*, concurrency: int, loglevel: str, queue: str, pool: str) -> list[str]:
    """The `celery worker` command line."""
    return [
        "worker",
        f"--concurrency={concurrency}",
        f"--loglevel={loglevel}",
        f"--queues={queue}",
        f"--pool={pool}",
        # Mingle and gossip sync revoked ids and clock between workers; unused here, and mingle
        # alone adds a second to every start.
        "--without-mingle",
        "--without-gossip",
        # Unique per process, so several workers on one host do not clash in remote control.
        f"--hostname=deskpilot-{os.getpid()}@%h",
    ]


def run_worker(
    settings: Settings,
    *,
    concurrency: int | None = None,
    loglevel: str = "INFO",
    queue: str = DEFAULT_QUEUE,
    pool: str = "prefork",
    imports: Sequence[str] = (),
    discover: bool = True,
) -> None:
    """Run a Celery worker in this process until it is told to stop (SIGTERM: finish current jobs).

    Args:
        settings: broker from `settings.jobs.broker_url`, else `settings.redis.url`.
        concurrency: processes (prefork) or threads; defaults to `settings.jobs.concurrency`.
        loglevel: Celery's log level, which also configures the root logger.
        queue: the queue to consume; producers must use the same one.
        pool: `prefork` (a crashed job takes down only its process), `threads` (jobs share one
            event loop and database pool per process) or `solo`.
        imports: extra modules that register job handlers.
        discover: import every `deskpilot.<domain>.jobs` module.
    """
    for module in imports:
        importlib.import_module(module)
    if discover:
        discover_job_modules()
    app = make_celery(settings, queue=queue)
    argv = worker_argv(concurrency=concurrency or settings.jobs.concurrency, loglevel=loglevel, queue=queue, pool=pool)
    logger.info("starting celery worker: %s", " ".join(argv))
    app.worker_main(argv)
