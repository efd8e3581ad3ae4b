"""Pick the job backend named in the settings."""

from __future__ import annotations

from typing import assert_never

from deskpilot.jobs.base import JobBackend, JobContext, JobRegistry
from deskpilot.jobs.inprocess import InProcessBackend
from deskpilot.settings import Settings


def make_job_backend(settings: Settings, registry: JobRegistry, context: JobContext) -> JobBackend:
    """The in-process backend (default) or the Celery producer, from `settings.jobs.backend`.

    With Celery, `context` is not used here: each worker process builds its own from the settings.
    """
    backend = settings.jobs.backend
    if backend == "inprocess":
        return InProcessBackend(registry, context, concurrency=settings.jobs.concurrency)
    if backend == "celery":
        # Imported here so that the in-process default works without the celery extra installed.
        from deskpilot.jobs.celery_backend import CeleryBackend

        return CeleryBackend(settings, registry)
    assert_never(backend)
