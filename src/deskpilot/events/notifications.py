"""Per-user notifications: rows for the bell, pushed live on `user:<id>` only after they are committed."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection, Iterable
from typing import Final, Literal

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from deskpilot.errors import RunFailure, ValidationFailed
from deskpilot.events.models import Notification
from deskpilot.events.pubsub import PubSub, user_channel
from deskpilot.events.schemas import NotificationOut
from deskpilot.storage import utcnow

logger = logging.getLogger(__name__)

MAX_TITLE: Final = 300
MAX_KIND: Final = 60
MAX_LINK: Final = 500


def add_notification(
    session: AsyncSession,
    *,
    account_id: uuid.UUID,
    user_id: uuid.UUID,
    kind: str,
    title: str,
    body: str = "",
    link: str | None = None,
) -> NotificationOut:
    """Add a notification to the caller's transaction, without committing or publishing.

    For work that must commit together with other changes: commit, then pass the result to
    `publish_notification`. Announcing before the commit could show a row that then rolls back.
    """
    if not kind or len(kind) > MAX_KIND:
        raise ValidationFailed(f"notification kind must have 1 to {MAX_KIND} characters, got {kind!r}")
    if link is not None and len(link) > MAX_LINK:
        raise ValidationFailed(f"notification link is longer than {MAX_LINK} characters")
    if len(title) > MAX_TITLE:
        # Titles are often generated (a problem summary): shorten them rather than lose the notification.
        title = title[: MAX_TITLE - 1] + "…"
    # Id and timestamp are set here, not at flush, so the caller has the full record without a round trip.
    row = Notification(
        id=uuid.uuid4(),
        created_at=utcnow(),
        account_id=account_id,
        user_id=user_id,
        kind=kind,
        title=title,
        body=body,
        link=link,
        read_at=None,
    )
    session.add(row)
    return NotificationOut.model_validate(row)


async def publish_notification(pubsub: PubSub, notification: NotificationOut) -> None:
    """Push a committed notification to its user's channel as `{"type": "notification", ...}`.

    A failure is logged, not raised: the row is stored, and the console re-reads the bell on reconnect.
    """
    message = {"type": "notification", **notification.model_dump(mode="json")}
    try:
        await pubsub.publish(user_channel(notification.user_id), message)
    except RunFailure as e:
        logger.warning("notification %s stored but not pushed: %r", notification.id, e)


async def announce_read(pubsub: PubSub, user_id: uuid.UUID, unread: int) -> None:
    """Tell the user's other console tabs to refresh their bell; best effort like every push."""
    try:
        await pubsub.publish(user_channel(user_id), {"type": "notifications.read", "unread": unread})
    except RunFailure as e:
        logger.warning("read state of %s not pushed: %r", user_id, e)


async def notify(
    session: AsyncSession,
    pubsub: PubSub,
    *,
    account_id: uuid.UUID,
    user_id: uuid.UUID,
    kind: str,
    title: str,
    body: str = "",
    link: str | None = None,
) -> NotificationOut:
    """Store a notification for one user, COMMIT `session`, then publish it.

    The commit includes whatever else the caller added to `session`: call `notify` last, as the end
    of the unit of work. To notify inside a larger transaction, use `add_notification` and
    `publish_notification` around your own commit.
    """
    notification = add_notification(
        session, account_id=account_id, user_id=user_id, kind=kind, title=title, body=body, link=link
    )
    await session.commit()
    await publish_notification(pubsub, notification)
    return notification


async def notify_users(
    session: AsyncSession,
    pubsub: PubSub,
    *,
    account_id: uuid.UUID,
    user_ids: Iterable[uuid.UUID],
    kind: str,
    title: str,
    body: str = "",
    link: str | None = None,
) -> list[NotificationOut]:
    """Notify several users (e.g. a team's active members, from the identity service) in one commit, then publish.

    Commits `session` like `notify`.
    """
    notifications = [
        add_notification(session, account_id=account_id, user_id=uid, kind=kind, title=title, body=body, link=link)
        for uid in dict.fromkeys(user_ids)
    ]
    await session.commit()
    for notification in notifications:
        await publish_notification(pubsub, notification)
    return notifications


async def list_notifications(
    session: AsyncSession, user_id: uuid.UUID, *, unread_only: bool = False, limit: int = 50
) -> list[NotificationOut]:
    """A user's notifications, newest first."""
    stmt = select(Notification).where(Notification.user_id == user_id)
    if unread_only:
        stmt = stmt.where(Notification.read_at.is_(None))
    stmt = stmt.order_by(Notification.created_at.desc(), Notification.id.desc()).limit(limit)
    rows = await session.scalars(stmt)
    return [NotificationOut.model_validate(row) for row in rows]


async def unread_count(session: AsyncSession, user_id: uuid.UUID) -> int:
    count = await session.scalar(
        select(func.count())
        .select_from(Notification)
        .where(Notification.user_id == user_id, Notification.read_at.is_(None))
    )
    return int(count or 0)


async def mark_read(session: AsyncSession, user_id: uuid.UUID, ids: Collection[uuid.UUID] | Literal["all"]) -> int:
    """Mark the user's unread notifications `ids` (or `"all"`) read; returns how many changed. Does not commit.

    Ids of other users or accounts are silently not matched, so the count tells what was really changed.
    """
    stmt = update(Notification).where(Notification.user_id == user_id, Notification.read_at.is_(None))
    if ids != "all":
        if not ids:
            return 0
        stmt = stmt.where(Notification.id.in_(list(ids)))
    result = await session.execute(stmt.values(read_at=utcnow()))
    assert isinstance(result, CursorResult)
    return result.rowcount
