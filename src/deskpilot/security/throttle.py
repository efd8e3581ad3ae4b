"""Counting failures per key within a sliding window, in this process: the sign-in form's per-address limit."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable


class FailureWindow:
    """At most `limit` failures per key within `window_s`; a key at the limit is refused until its oldest
    failure leaves the window.

    Kept in memory, per process (a password spray from one address is slowed on each process it reaches); at
    most `max_keys` keys are remembered, the least recently failing forgotten first, so a flood of addresses
    cannot grow it without bound.
    """

    def __init__(
        self, limit: int, window_s: float, *, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("a failure window needs a limit of at least 1 and a positive length")
        self.limit = limit
        self.window_s = window_s
        self._max_keys = max_keys
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float] | None:
        failures = self._failures.get(key)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return None
        return failures

    def refused_for(self, key: str) -> float | None:
        """Seconds until `key` may try again, or None when it may now."""
        now = self._clock()
        failures = self._recent(key, now)
        if failures is None or len(failures) < self.limit:
            return None
        return failures[-self.limit] + self.window_s - now

    def fail(self, key: str) -> None:
        now = self._clock()
        failures = self._recent(key, now) or deque()
        failures.append(now)
        # Only the newest `limit` failures decide anything.
        while len(failures) > self.limit:
            failures.popleft()
        self._failures[key] = failures
        self._failures.move_to_end(key)
        while len(self._failures) > self._max_keys:
            self._failures.popitem(last=False)
