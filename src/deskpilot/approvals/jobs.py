"""Approvals job handlers: expiring the requests nobody decided in time (for a periodic trigger)."""

from __future__ import annotations

import logging

from deskpilot.approvals import service
from deskpilot.events.pubsub import JsonObject
from deskpilot.jobs import JobContext, registry

logger = logging.getLogger(__name__)

EXPIRE_JOB = "approvals.expire_overdue"


@registry.job(EXPIRE_JOB)
async def expire_overdue(ctx: JobContext, payload: JsonObject) -> None:
    """No payload. Idempotent: only requests still pending and past their expiry change."""
    async with ctx.database.system_session() as session:
        count = await service.expire_overdue(session)
        await session.commit()
    logger.info("approvals: %d overdue requests expired", count)
