"""The notification bell's data: unread count and the latest entries, with links made safe to render."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from deskpilot.events import notifications
from deskpilot.events.schemas import NotificationOut
from deskpilot.web.console import Console, safe_next

RECENT = 8


@dataclass(frozen=True, slots=True)
class BellItem:
    id: uuid.UUID
    title: str
    body: str
    href: str
    created_at: datetime
    read_at: datetime | None

    @classmethod
    def of(cls, n: NotificationOut) -> BellItem:
        # Links come from any producer; only same-site paths become hrefs (never javascript: or other hosts).
        href = safe_next(n.link, default="/notifications")
        return cls(id=n.id, title=n.title, body=n.body, href=href, created_at=n.created_at, read_at=n.read_at)


@dataclass(frozen=True, slots=True)
class Bell:
    unread: int
    recent: list[BellItem]


async def items(console: Console, *, limit: int) -> list[BellItem]:
    found = await notifications.list_notifications(console.session, console.principal.user_id, limit=limit)
    return [BellItem.of(n) for n in found]


async def load(console: Console) -> Bell:
    unread = await notifications.unread_count(console.session, console.principal.user_id)
    return Bell(unread=unread, recent=await items(console, limit=RECENT))
