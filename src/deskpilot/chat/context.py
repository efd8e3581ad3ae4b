"""What a chat turn's prompt is built from, and a process-local cache of it per session version."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

from deskpilot.chat import prompts
from deskpilot.llm import Message

CACHED_CHATS: Final = 1024
# The characters all kept contexts may hold together (a message may be 100,000 characters and a history 60 of
# them): the least recently used go first, and a context over an eighth of this is not kept at all.
CACHED_CHARS: Final = 32_000_000


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


class ContextCache:
    """The prompt context of recently answered chats, each valid for exactly one `state_version` of its session.

    Every change to what a chat prompt shows (a message, the task lane, a fact, the fix, the branch) bumps the
    session's `state_version` in the same transaction, so an entry whose version is the session's current one is
    what the database would return; any other entry is ignored. A turn stores the context of the conversation it
    leaves behind; the next message on this process then asks the model without reading it again. Process-local:
    another server process simply reads the database.
    """

    def __init__(self, size: int = CACHED_CHATS, max_chars: int = CACHED_CHARS) -> None:
        self._size = size
        self._max_chars = max_chars
        self._chars = 0
        self._entries: OrderedDict[uuid.UUID, tuple[int, uuid.UUID | None, TurnContext, int]] = OrderedDict()

    def get(self, session_id: uuid.UUID, version: int, branch_id: uuid.UUID | None) -> TurnContext | None:
        entry = self._entries.get(session_id)
        if entry is None or entry[0] != version or entry[1] != branch_id:
            return None
        self._entries.move_to_end(session_id)
        return entry[2]

    def put(self, session_id: uuid.UUID, version: int, branch_id: uuid.UUID | None, context: TurnContext) -> None:
        self.forget(session_id)
        chars = _chars(context)
        if chars > self._max_chars // 8:
            return
        self._entries[session_id] = (version, branch_id, context, chars)
        self._chars += chars
        while len(self._entries) > self._size or self._chars > self._max_chars:
            _, (_, _, _, dropped) = self._entries.popitem(last=False)
            self._chars -= dropped

    def forget(self, session_id: uuid.UUID) -> None:
        entry = self._entries.pop(session_id, None)
        if entry is not None:
            self._chars -= entry[3]

    @property
    def chars(self) -> int:
        """The characters the kept contexts hold together."""
        return self._chars

    def __len__(self) -> int:
        return len(self._entries)


def _chars(context: TurnContext) -> int:
    knowledge = sum(len(snippet) for snippet in context.knowledge[0]) if context.knowledge else 0
    return sum(len(message.content) for message in context.history) + knowledge + len(context.siblings)
