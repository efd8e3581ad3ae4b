"""Celery job backend (producer side) and the Celery configuration shared with the worker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Final

from celery import Celery
from kombu.exceptions import OperationalError
from pydantic import JsonValue

from deskpilot.errors import NotConfigured, UpstreamError
from deskpilot.jobs.base import JobBackend, JobRegistry, encode_payload, new_job_id
from deskpilot.settings import Settings

logger = logging.getLogger(__name__)

DISPATCH_TASK: Final = "deskpilot.jobs.dispatch"
"""The one Celery task: it looks the job name up in the worker's registry and runs the handler."""

DEFAULT_QUEUE: Final = "deskpilot.jobs"

# With acks_late, Redis hands an unacknowledged message to another worker after this long. Retry
# backoff stays well below it; a longer `delay_s` may be delivered twice (harmless, handlers are
# idempotent), but the scheduler is the place for long delays.
VISIBILITY_TIMEOUT_S: Final = 3600


def broker_url(settings: Settings) -> str:
    url = settings.jobs.broker_url or settings.redis.url
    if not url:
        raise NotConfigured("the celery job backend needs DESKPILOT_JOBS__BROKER_URL or DESKPILOT_REDIS__URL")
    return url


def celery_config(settings: Settings, *, queue: str = DEFAULT_QUEUE) -> dict[str, object]:
    """Configuration for producer and worker alike, so both agree on serialisation and queue."""
    return {
        "broker_url": broker_url(settings),
        # JSON only: a pickle payload from the broker would be code execution.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # Acknowledge after the handler finished, and requeue when the worker process died:
        # at-least-once delivery, which idempotent handlers make safe.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # The database row is the result; no result backend.
        "task_ignore_result": True,
        "task_default_queue": queue,
        # Late acks with prefetching would let one busy process sit on jobs others could run.
        "worker_prefetch_multiplier": 1,
        # The ETA timer otherwise sleeps up to a second, which would stretch sub-second retry backoffs.
        "worker_timer_precision": 0.1,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT_S},
        "enable_utc": True,
        "timezone": "UTC",
    }


def build_celery_app(settings: Settings, *, queue: str = DEFAULT_QUEUE) -> Celery:
    """A configured Celery app without tasks: enough to send jobs."""
    app = Celery("deskpilot", set_as_current=False)
    app.conf.update(celery_config(settings, queue=queue))
    return app


class CeleryBackend(JobBackend):
    """Sends jobs to Celery workers through the broker; `deskpilot worker` runs them.

    Publishing is blocking network I/O in kombu, so it runs in a thread to keep the event loop free.
    """

    def __init__(
        self,
        settings: Settings,
        registry: JobRegistry,
        *,
        queue: str = DEFAULT_QUEUE,
        app: Celery | None = None,
        connect_timeout_s: int = 5,
    ) -> None:
        self._registry = registry
        self._queue = queue
        self._app = app or build_celery_app(settings, queue=queue)
        self._connect_timeout_s = connect_timeout_s

    @property
    def app(self) -> Celery:
        return self._app

    async def start(self) -> None:
        """Check that the broker answers, so a misconfiguration fails at startup rather than at first use."""
        await asyncio.to_thread(self._check_broker)

    async def enqueue(
        self, name: str, payload: Mapping[str, JsonValue] | None = None, *, delay_s: float | None = None
    ) -> str:
        self._registry.get(name)
        body = encode_payload(name, payload)
        job_id = new_job_id()
        countdown = delay_s if delay_s is not None and delay_s > 0 else None
        await asyncio.to_thread(self._send, name, body, job_id, countdown)
        return job_id

    async def stop(self) -> None:
        await asyncio.to_thread(self._app.close)

    def _check_broker(self) -> None:
        try:
            with self._app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, interval_start=0, timeout=self._connect_timeout_s)
            # Build the producer pool here, once, rather than racing to build it from several threads.
            _ = self._app.amqp.producer_pool
        except (OperationalError, OSError) as e:
            raise UpstreamError(f"job broker is unreachable: {e}") from e

    def _send(self, name: str, payload: Mapping[str, JsonValue], job_id: str, countdown: float | None) -> None:
        try:
            self._app.send_task(
                DISPATCH_TASK, args=(name, payload), task_id=job_id, countdown=countdown, queue=self._queue
            )
        except (OperationalError, OSError) as e:
            raise UpstreamError(f"could not enqueue job {name!r}: {e}") from e
        logger.debug("job %r (%s) sent to queue %r", name, job_id, self._queue)
