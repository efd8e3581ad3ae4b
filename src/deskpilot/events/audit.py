"""Audit log: record who did what to which resource."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from deskpilot.events.models import AuditEvent


@dataclass(frozen=True, slots=True)
class Actor:
    user_id: uuid.UUID | None
    label: str

    @classmethod
    def system(cls, what: str = "system") -> Actor:
        return cls(user_id=None, label=what)


def record(
    session: AsyncSession,
    *,
    account_id: uuid.UUID,
    actor: Actor,
    action: str,
    resource_type: str,
    resource_id: uuid.UUID | str | None = None,
    details: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> AuditEvent:
    """Add an audit event to the caller's transaction; it commits with the change it describes."""
    event = AuditEvent(
        account_id=account_id,
        actor_user_id=actor.user_id,
        actor_label=actor.label,
        action=action,
        resource_type=resource_type,
        resource_id=str(resource_id) if resource_id is not None else None,
        details=details or {},
        request_id=request_id,
    )
    session.add(event)
    return event


async def list_events(
    session: AsyncSession,
    *,
    resource_type: str | None = None,
    resource_id: str | None = None,
    action: str | None = None,
    limit: int = 100,
) -> Sequence[AuditEvent]:
    stmt = select(AuditEvent).order_by(AuditEvent.created_at.desc()).limit(limit)
    if resource_type:
        stmt = stmt.where(AuditEvent.resource_type == resource_type)
    if resource_id:
        stmt = stmt.where(AuditEvent.resource_id == resource_id)
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    return (await session.scalars(stmt)).all()
