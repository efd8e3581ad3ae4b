"""Pilot job handlers: the knowledge-flywheel analysis of a resolved session."""

from __future__ import annotations

import logging
import uuid
from contextlib import AsyncExitStack

from deskpilot.events.pubsub import JsonObject
from deskpilot.jobs import JobContext, RetryPolicy, registry
from deskpilot.llm import LLM, SqlRecorder
from deskpilot.pilot import flywheel
from deskpilot.pilot.service import ANALYSE_JOB

logger = logging.getLogger(__name__)


@registry.job(ANALYSE_JOB, retry=RetryPolicy(max_retries=3, backoff_s=30.0))
async def analyse_session(ctx: JobContext, payload: JsonObject) -> None:
    """Payload `{"account_id", "session_id"}`; the session row's `analysis_status` makes redelivery harmless."""
    account_id = uuid.UUID(str(payload["account_id"]))
    session_id = uuid.UUID(str(payload["session_id"]))
    async with AsyncExitStack() as stack:
        llm = ctx.llm
        if llm is None:
            # A worker process without the application's facade builds (and closes) its own.
            llm = await stack.enter_async_context(LLM(ctx.settings.llm, recorder=SqlRecorder(ctx.database)))
        db = await stack.enter_async_context(ctx.database.session(account_id))
        outcome = await flywheel.analyse_session(db, llm, session_id)
    logger.info("flywheel analysis of session %s: %s", session_id, outcome)
