"""ContextCache: an entry is used only for the exact session version and branch it was kept for; old ones go first."""

from __future__ import annotations

import uuid

from deskpilot.chat.context import ContextCache, TurnContext
from deskpilot.chat.prompts import SessionFacts
from deskpilot.llm import Message


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


def _long(chars: int) -> TurnContext:
    context = _context("long")
    context.history = [Message.user("x" * chars)]
    return context


def test_the_cache_holds_a_bounded_number_of_characters() -> None:
    cache = ContextCache(size=100, max_chars=8_000)
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    cache.put(first, 1, None, _long(900))
    cache.put(second, 1, None, _long(900))
    assert cache.chars == 1_800
    cache.put(first, 2, None, _long(500))  # a newer version replaces the entry and its size
    assert cache.chars == 1_400
    cache.put(third, 1, None, _long(1_001))  # over an eighth of the budget: not kept
    assert cache.get(third, 1, None) is None
    assert cache.chars == 1_400
    for n in range(20):  # the least recently used go first once the budget is full
        cache.put(uuid.uuid4(), 1, None, _long(900))
    assert cache.chars <= 8_000
    assert cache.get(second, 1, None) is None
    cache.forget(first)
    assert cache.chars == sum(900 for _ in range(len(cache)))
