"""What a chat turn's prompt is built from, and a process-local cache of it per session version."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from deskpilot.chat import prompts
from deskpilot.llm import Message
from deskpilot.storage.versioned_cache import CACHED_ROWS, CACHED_WEIGHT, VersionedCache


@dataclass(slots=True)
class TurnContext:
    """What a turn reads before asking the model: the conversation, the session's state and its knowledge."""

    history: list[Message]
    state: prompts.SessionFacts
    team_id: uuid.UUID | None
    domain: str | None
    siblings: str = ""
    revival: str | None = None
    # Retrieval of an earlier turn, kept on the session: (prompt snippets, suggested flows).
    knowledge: tuple[list[str], list[dict[str, Any]]] | None = None


class ContextCache(VersionedCache[TurnContext]):
    """The prompt context of recently answered chats, each valid for exactly one `state_version` of its session
    and one branch.

    Every change to what a chat prompt shows (a message, the task lane, a fact, the fix, the branch) bumps the
    session's `state_version` in the same transaction. A turn stores the context of the conversation it leaves
    behind; the next message on this process then asks the model without reading it again.
    """

    def __init__(self, size: int = CACHED_ROWS, max_chars: int = CACHED_WEIGHT) -> None:
        super().__init__(_chars, size, max_chars)

    @property
    def chars(self) -> int:
        """The characters the kept contexts hold together."""
        return self.weight


def _chars(context: TurnContext) -> int:
    knowledge = sum(len(snippet) for snippet in context.knowledge[0]) if context.knowledge else 0
    # A kept image weighs its base64 text: a few screenshots outweigh many conversations.
    text = sum(len(message.content) + sum(len(image.data) for image in message.images) for message in context.history)
    return text + knowledge + len(context.siblings)
