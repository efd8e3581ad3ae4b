"""A process-local cache of what was read for a row, each value valid for exactly one version of that row."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Final, Generic, TypeVar

V = TypeVar("V")

CACHED_ROWS: Final = 1024
# The weight (characters, say) all kept values may have together: the least recently used go first, and a value
# over an eighth of this is not kept at all.
CACHED_WEIGHT: Final = 32_000_000


class VersionedCache(Generic[V]):
    """Values derived from a row (a session's prompt context or conversation), kept with the row's version and a
    variant of it (a branch).

    A value is only returned for the exact version and variant it was stored with: the writer of every change to
    what the value shows moves the version in the same transaction, so a kept value whose version is the row's
    current one is what the database would return, and any other is ignored. Process-local: another process reads
    the database. Bounded by count and by total weight, least recently used first.
    """

    def __init__(
        self, weigh: Callable[[V], int], size: int = CACHED_ROWS, max_weight: int = CACHED_WEIGHT
    ) -> None:
        self._weigh = weigh
        self._size = size
        self._max_weight = max_weight
        self._weight = 0
        self._entries: OrderedDict[uuid.UUID, tuple[int, uuid.UUID | None, V, int]] = OrderedDict()

    def get(self, key: uuid.UUID, version: int, variant: uuid.UUID | None) -> V | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] != version or entry[1] != variant:
            return None
        self._entries.move_to_end(key)
        return entry[2]

    def put(self, key: uuid.UUID, version: int, variant: uuid.UUID | None, value: V) -> None:
        self.forget(key)
        weight = self._weigh(value)
        if weight > self._max_weight // 8:
            return
        self._entries[key] = (version, variant, value, weight)
        self._weight += weight
        while len(self._entries) > self._size or self._weight > self._max_weight:
            _, (_, _, _, dropped) = self._entries.popitem(last=False)
            self._weight -= dropped

    def forget(self, key: uuid.UUID) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._weight -= entry[3]

    @property
    def weight(self) -> int:
        """What the kept values weigh together."""
        return self._weight

    def __len__(self) -> int:
        return len(self._entries)
