"""The signed-in user's notifications: list, mark read, and a live stream (SSE) for the console bell."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Collection, Mapping
from typing import Annotated, Final, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from deskpilot.api.deps import PrincipalDep, SessionDep, StateDep
from deskpilot.api.routing import JSONRoute
from deskpilot.events import notifications as notification_service
from deskpilot.events.pubsub import PubSubClosed, user_channel
from deskpilot.events.schemas import NotificationOut

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/notifications", tags=["notifications"], route_class=JSONRoute)

# Proxies and load balancers drop connections that stay silent for about a minute.
HEARTBEAT_S: Final = 15.0
# How long a browser waits before reconnecting after the stream broke.
RETRY_MS: Final = 5000
_EVENT_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,59}$")


class MarkRead(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[uuid.UUID] | None = Field(default=None, max_length=500, description="Notifications to mark read.")
    all: bool = Field(default=False, description="Mark every unread notification read instead.")

    @model_validator(mode="after")
    def _one_of(self) -> MarkRead:
        if self.all == (self.ids is not None):
            raise ValueError("send either 'ids' or 'all': true")
        return self


class MarkedRead(BaseModel):
    marked: int = Field(description="How many notifications changed from unread to read.")
    unread: int = Field(description="Unread notifications left.")


def sse_event(message: Mapping[str, JsonValue]) -> str:
    """One server-sent event, named after the message's `type` when that is a plain word."""
    kind = message.get("type")
    name = kind if isinstance(kind, str) and _EVENT_NAME.match(kind) else "message"
    # json.dumps never emits a raw newline, so the payload fits on one `data:` line.
    return f"event: {name}\ndata: {json.dumps(dict(message), separators=(',', ':'))}\n\n"


@router.get("", operation_id="list_notifications")
async def list_notifications(
    principal: PrincipalDep,
    session: SessionDep,
    unread_only: bool = False,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[NotificationOut]:
    return await notification_service.list_notifications(
        session, principal.user_id, unread_only=unread_only, limit=limit
    )


@router.post("/read", operation_id="mark_notifications_read")
async def mark_notifications_read(
    body: MarkRead, principal: PrincipalDep, session: SessionDep, state: StateDep
) -> MarkedRead:
    ids: Collection[uuid.UUID] | Literal["all"] = "all" if body.all else (body.ids or [])
    marked = await notification_service.mark_read(session, principal.user_id, ids)
    await session.commit()
    unread = await notification_service.unread_count(session, principal.user_id)
    if marked:
        await notification_service.announce_read(state.pubsub, principal.user_id, unread)
    return MarkedRead(marked=marked, unread=unread)


@router.get(
    "/stream",
    operation_id="stream_notifications",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-sent events."}},
)
async def stream_notifications(principal: PrincipalDep, state: StateDep) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        # Starlette cancels this generator when the client disconnects, which leaves the subscription.
        async with state.pubsub.subscribe(user_channel(principal.user_id)) as subscription:
            # Counted after subscribing: the client compares it with what its page showed and re-reads the
            # bell if something arrived in between; later changes come as events.
            async with state.db.session(principal.account_id) as session:
                unread = await notification_service.unread_count(session, principal.user_id)
            yield f"retry: {RETRY_MS}\n" + sse_event({"type": "hello", "unread": unread})
            while True:
                try:
                    message = await subscription.get(timeout_s=HEARTBEAT_S)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                except PubSubClosed:
                    return
                yield sse_event(message)

    return StreamingResponse(
        events(), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
