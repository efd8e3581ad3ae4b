"""A short-lived in-process cache of API-token authentications: one query saved on nearly every API request.

Keyed by the token's hash (never the secret), bounded in size, and holding successes only: a failed
authentication is never cached. Revoking a token or changing its user drops the entries at once in this process,
and in every server process that shares the pub/sub (Redis) as soon as the change is committed and announced
(`announce_invalidation`); a process that missed the announcement sees the change at most `ttl_s` later.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

V = TypeVar("V")

DEFAULT_TTL_S: Final = 30.0
DEFAULT_MAX_ENTRIES: Final = 4096


@dataclass(frozen=True, slots=True)
class _Entry(Generic[V]):
    expires: float
    token_id: uuid.UUID
    user_id: uuid.UUID
    value: V


class TokenCache(Generic[V]):
    """Values (the authenticated principal) per token hash for `ttl_s` seconds, at most `max_entries`."""

    def __init__(
        self,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, _Entry[V]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token_hash: str) -> V | None:
        entry = self._entries.get(token_hash)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            self._entries.pop(token_hash, None)
            return None
        return entry.value

    def put(self, token_hash: str, *, token_id: uuid.UUID, user_id: uuid.UUID, value: V) -> None:
        if self.ttl_s <= 0 or self.max_entries <= 0:
            return
        self._entries.pop(token_hash, None)
        while len(self._entries) >= self.max_entries:
            # Insertion order is expiry order (one TTL for all): the first entry is the oldest.
            self._entries.pop(next(iter(self._entries)))
        self._entries[token_hash] = _Entry(self._clock() + self.ttl_s, token_id, user_id, value)

    def forget_token(self, token_id: uuid.UUID) -> None:
        for key in [k for k, e in self._entries.items() if e.token_id == token_id]:
            del self._entries[key]

    def forget_user(self, user_id: uuid.UUID) -> None:
        for key in [k for k, e in self._entries.items() if e.user_id == user_id]:
            del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()


# The process's cache of API-token authentications (filled by the API's auth dependency).
token_cache: TokenCache[object] = TokenCache()


# Where a process announces that cached authentications of a token or a user are void (`api.state` listens; with
# Redis, every server process hears it).
INVALIDATIONS_CHANNEL: Final = "identity:token-cache"


def invalidation(*, token_id: uuid.UUID | None = None, user_id: uuid.UUID | None = None) -> dict[str, str]:
    """The message that voids the cached authentications of a token or of every token of a user."""
    message = {}
    if token_id is not None:
        message["token_id"] = str(token_id)
    if user_id is not None:
        message["user_id"] = str(user_id)
    return message


def apply_invalidation(cache: TokenCache[V], message: Mapping[str, object]) -> None:
    """Drop what `message` (from `invalidation`) names; a malformed message drops nothing and is not an error."""
    for key, forget in (("token_id", cache.forget_token), ("user_id", cache.forget_user)):
        value = message.get(key)
        if isinstance(value, str):
            try:
                forget(uuid.UUID(value))
            except ValueError:
                continue
