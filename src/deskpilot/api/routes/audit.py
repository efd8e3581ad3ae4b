"""Read access to the account's audit log (admins)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from deskpilot.api.deps import AdminDep, SessionDep
from deskpilot.api.routing import JSONRoute
from deskpilot.events import audit

router = APIRouter(prefix="/api/v1", tags=["audit"], route_class=JSONRoute)


class AuditEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    created_at: datetime
    actor_user_id: uuid.UUID | None
    actor_label: str
    action: str
    resource_type: str
    resource_id: str | None
    details: dict[str, Any]
    request_id: str | None


@router.get("/audit-events", operation_id="list_audit_events")
async def list_audit_events(
    principal: AdminDep,
    session: SessionDep,
    resource_type: str | None = None,
    resource_id: str | None = None,
    action: str | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
) -> list[AuditEventOut]:
    events = await audit.list_events(
        session, resource_type=resource_type, resource_id=resource_id, action=action, limit=limit
    )
    return [AuditEventOut.model_validate(e) for e in events]
