"""Tools the chat copilot may call; the ones that change something outside deskpilot need a human's approval."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Final

import httpx
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from deskpilot.approvals.tools import requires_approval
from deskpilot.llm import Tool, ToolContext
from deskpilot.psa import service as psa
from deskpilot.psa.schemas import NoteFlags
from deskpilot.security.crypto import SecretBox

SUBJECT_TYPE: Final = "chat"


@dataclass(frozen=True, slots=True)
class ToolDeps:
    """What a chat tool runs with: the account-scoped database session and the PSA's needs."""

    db: AsyncSession
    secrets: SecretBox
    session_id: uuid.UUID
    http_client: httpx.AsyncClient | None = None


class TicketNote(BaseModel):
    """Arguments of `post_ticket_note`."""

    ticket_id: str = Field(min_length=1, max_length=64, description="The PSA ticket number, e.g. 123456")
    text: str = Field(min_length=1, max_length=8000, description="The note, plain text, ready for the ticket")
    internal: bool = Field(default=True, description="Internal analysis (true) or visible to the client (false)")


async def post_ticket_note(ctx: ToolContext[ToolDeps], args: TicketNote) -> str:
    """Post a note to a ticket in the team's PSA (ConnectWise or the configured webhook)."""
    deps = ctx.deps
    result = await psa.record_and_push(
        deps.db, deps.secrets, connection_id=None, ticket_id=args.ticket_id, subject_type=SUBJECT_TYPE,
        subject_id=deps.session_id, note_text=args.text,
        flags=NoteFlags(internal=args.internal, detail=not args.internal), http_client=deps.http_client,
    )
    if result.status == "pushed":
        return f"The note was posted to ticket {args.ticket_id}."
    if result.status == "no_psa":
        return "No PSA connection is configured for this account; the note was not posted."
    return f"Posting the note to ticket {args.ticket_id} failed: {result.error}"


POST_TICKET_NOTE: Final = requires_approval(Tool(post_ticket_note))
CHAT_TOOLS: Final[tuple[Tool, ...]] = (POST_TICKET_NOTE,)
TOOLS_BY_NAME: Final = {t.name: t for t in CHAT_TOOLS}
