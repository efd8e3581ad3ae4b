"""Run one delivery of a job and decide what happens next; shared by every backend."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final, Literal

from deskpilot.errors import UserError
from deskpilot.jobs.base import Job, JobContext, JobRegistry, UnknownJob

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    """`done`, `failed` (no more attempts) or `retry` after `retry_in_s` seconds."""

    status: Literal["done", "retry", "failed"]
    retry_in_s: float = 0.0


DONE: Final = Outcome("done")
FAILED: Final = Outcome("failed")


async def execute(registry: JobRegistry, context: JobContext, job: Job) -> Outcome:
    """Run `job` once. Never raises for a handler's error: it is logged and turned into an outcome.

    A `UserError` (not found, wrong state, bad input) is not retried: running again cannot fix it.
    Anything else is retried with the handler's backoff until its `max_retries` are spent.
    """
    try:
        spec = registry.get(job.name)
    except UnknownJob:
        logger.error("job %s: no handler is registered as %r; dropped", job.id, job.name)
        return FAILED
    try:
        await spec.handler(context.for_job(job), job.payload)
    except UserError as e:
        logger.error("job %r (%s) failed on attempt %d and will not be retried: %r", job.name, job.id, job.attempt, e)
        return FAILED
    except Exception:
        if job.attempt > spec.retry.max_retries:
            logger.exception("job %r (%s) failed on attempt %d; giving up", job.name, job.id, job.attempt)
            return FAILED
        delay = spec.retry.delay_for(job.attempt)
        logger.warning(
            "job %r (%s) failed on attempt %d; retrying in %.2fs", job.name, job.id, job.attempt, delay, exc_info=True
        )
        return Outcome("retry", delay)
    return DONE
