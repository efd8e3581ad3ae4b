"""The images of chat messages, kept with them: written with the turn, shown to the model again, served back."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from deskpilot.chat.models import MessageImage
from deskpilot.llm.messages import ImagePart
from deskpilot.storage.batch import Write, insert_row

# The newest images of the conversation that go to the model again with their messages; older ones are only the
# note in their message's text (each image costs about a thousand input tokens on every turn it is sent).
IMAGES_IN_HISTORY: Final = 4


def image_writes(
    account_id: uuid.UUID, session_id: uuid.UUID, message_id: uuid.UUID, images: Sequence[ImagePart], now: datetime
) -> list[Write]:
    """The rows keeping `images` (checked already: strict base64 of an accepted media type) with their message."""
    return [
        insert_row(MessageImage, {
            "id": uuid.uuid4(), "account_id": account_id, "session_id": session_id, "message_id": message_id,
            "position": position, "media_type": image.media_type, "size": len(image.raw), "sha256": image.sha256,
            "data": image.raw, "created_at": now,
        })
        for position, image in enumerate(images, start=1)
    ]


async def history_images(
    db: AsyncSession, message_ids: Sequence[uuid.UUID], limit: int | None = None
) -> dict[uuid.UUID, tuple[ImagePart, ...]]:
    """The newest `limit` (IMAGES_IN_HISTORY) images of the messages `message_ids` (given newest first), by message,
    each message's in order.

    The rows' sizes are read first and only the chosen images' data after, so a long conversation full of
    screenshots costs no more memory than `limit` images.
    """
    limit = IMAGES_IN_HISTORY if limit is None else limit
    if not message_ids or limit <= 0:
        return {}
    rank = {message_id: index for index, message_id in enumerate(message_ids)}
    found = (await db.execute(
        select(MessageImage.id, MessageImage.message_id, MessageImage.position)
        .where(MessageImage.message_id.in_(message_ids))
    )).all()
    # Newest message first; within a message, its last images first (they are the closest to the reply).
    chosen = sorted(found, key=lambda row: (rank[row.message_id], -row.position))[:limit]
    if not chosen:
        return {}
    rows = (await db.execute(
        select(MessageImage.message_id, MessageImage.position, MessageImage.media_type, MessageImage.data)
        .where(MessageImage.id.in_([row.id for row in chosen]))
        .order_by(MessageImage.message_id, MessageImage.position)
    )).all()
    images: dict[uuid.UUID, list[ImagePart]] = {}
    for row in rows:
        images.setdefault(row.message_id, []).append(ImagePart.from_bytes(row.media_type, row.data))
    return {message_id: tuple(parts) for message_id, parts in images.items()}


async def image_counts(db: AsyncSession, session_id: uuid.UUID) -> dict[uuid.UUID, int]:
    """How many images each message of the session has (messages without any are left out)."""
    rows = await db.execute(
        select(MessageImage.message_id, func.count()).where(MessageImage.session_id == session_id)
        .group_by(MessageImage.message_id)
    )
    return {message_id: count for message_id, count in rows}


async def stored_image(
    db: AsyncSession, session_id: uuid.UUID, message_id: uuid.UUID, position: int
) -> MessageImage | None:
    """One image as stored (its bytes and media type), if the session's message has it."""
    return await db.scalar(select(MessageImage).where(
        MessageImage.session_id == session_id, MessageImage.message_id == message_id,
        MessageImage.position == position,
    ))
