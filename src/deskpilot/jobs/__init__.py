"""Background jobs, run in-process or by Celery at least once each: handlers must be idempotent (README.md)."""

from deskpilot.events.pubsub import JsonObject
from deskpilot.jobs.base import (
    Job,
    JobBackend,
    JobBackendStopped,
    JobContext,
    JobHandler,
    JobRegistry,
    JobSpec,
    RetryPolicy,
    UnknownJob,
    discover_job_modules,
    registry,
)
from deskpilot.jobs.factory import make_job_backend
from deskpilot.jobs.inprocess import InProcessBackend
from deskpilot.jobs.runner import Outcome, execute

__all__ = [
    "InProcessBackend",
    "Job",
    "JobBackend",
    "JobBackendStopped",
    "JobContext",
    "JobHandler",
    "JobRegistry",
    "JobSpec",
    "JsonObject",
    "Outcome",
    "RetryPolicy",
    "UnknownJob",
    "discover_job_modules",
    "execute",
    "make_job_backend",
    "registry",
]
