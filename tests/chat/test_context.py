"""ContextCache: an entry is used only for the exact session version and branch it was kept for; old ones go first."""

from __future__ import annotations

import uuid

from deskpilot.chat.context import ContextCache, TurnContext
from deskpilot.chat.prompts import SessionFacts


def _context(note: str) -> TurnContext:
    return TurnContext(history=[], state=SessionFacts(problem=note, domain=None, task_lane=[], facts=(),
                                                      active_fix=None), team_id=None, domain=None)


def test_an_entry_answers_only_its_version_and_branch() -> None:
    cache = ContextCache()
    chat, branch = uuid.uuid4(), uuid.uuid4()
    kept = _context("kept")
    cache.put(chat, 7, branch, kept)
    assert cache.get(chat, 7, branch) is kept
    assert cache.get(chat, 8, branch) is None  # the session changed since
    assert cache.get(chat, 6, branch) is None
    assert cache.get(chat, 7, None) is None  # another branch is another conversation
    assert cache.get(uuid.uuid4(), 7, branch) is None


def test_the_least_recently_used_chat_goes_first_and_forget_drops_one() -> None:
    cache = ContextCache(size=2)
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    cache.put(first, 1, None, _context("1"))
    cache.put(second, 1, None, _context("2"))
    assert cache.get(first, 1, None) is not None  # first is now the most recent
    cache.put(third, 1, None, _context("3"))
    assert cache.get(second, 1, None) is None
    assert cache.get(first, 1, None) is not None
    assert len(cache) == 2
    cache.forget(first)
    assert cache.get(first, 1, None) is None
    assert len(cache) == 1
