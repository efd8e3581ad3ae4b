"""Pub/sub for live updates: in-process by default, Redis pub/sub when several server processes share the work."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import Final

import redis.asyncio as aioredis
from pydantic import JsonValue
from redis.exceptions import RedisError

from deskpilot.errors import RunFailure, UpstreamError, ValidationFailed
from deskpilot.settings import Settings

logger = logging.getLogger(__name__)

JsonObject = dict[str, JsonValue]

# Enough for a burst of updates to one console tab; beyond it the oldest are dropped so that a
# stalled browser never holds memory or blocks a publisher.
DEFAULT_MAX_PENDING: Final = 1000


def user_channel(user_id: uuid.UUID) -> str:
    """The channel a user's console listens on (notification bell, personal updates)."""
    return f"user:{user_id}"


def account_channel(account_id: uuid.UUID) -> str:
    """The channel for account-wide events."""
    return f"account:{account_id}"


class PubSubClosed(RunFailure):
    """The pub/sub (or one subscription) was closed; nothing more will be delivered."""

    code = "pubsub_closed"
    title = "Pub/sub closed"


def encode_message(message: Mapping[str, JsonValue]) -> str:
    """Serialise a message once, so every implementation delivers the same JSON round trip."""
    try:
        return json.dumps(dict(message), separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValidationFailed(f"pub/sub message is not JSON: {e}") from e


class _End:
    """Queued after the last message of a subscription."""


_END: Final = _End()


class Subscription:
    """One listener on one channel.

    Use it as an async context manager; messages published after entry are delivered in order::

        async with pubsub.subscribe(user_channel(user.id)) as sub:
            async for message in sub:
                ...
    """

    def __init__(
        self,
        channel: str,
        *,
        attach: Callable[[Subscription], Awaitable[None]],
        detach: Callable[[Subscription], Awaitable[None]],
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self.channel = channel
        self._attach = attach
        self._detach = detach
        self._queue: asyncio.Queue[str | _End] = asyncio.Queue(maxsize=max_pending)
        self._state: str = "new"
        self.dropped = 0

    async def __aenter__(self) -> Subscription:
        if self._state != "new":
            raise RuntimeError(f"subscription to {self.channel!r} cannot be entered twice")
        await self._attach(self)
        self._state = "open"
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._state == "open":
            self._state = "closed"
            await self._detach(self)

    def __aiter__(self) -> AsyncIterator[JsonObject]:
        return self

    async def __anext__(self) -> JsonObject:
        try:
            return await self.get()
        except PubSubClosed:
            raise StopAsyncIteration from None

    async def get(self, timeout_s: float | None = None) -> JsonObject:
        """The next message; `TimeoutError` after `timeout_s`, `PubSubClosed` once the subscription ended.

        The timeout lets an SSE endpoint send keep-alive comments between messages.
        """
        if self._state == "new":
            raise RuntimeError(f"subscription to {self.channel!r} is used outside 'async with'")
        if self._state == "closed" or (self._state == "ended" and self._queue.empty()):
            raise PubSubClosed(f"subscription to {self.channel!r} has ended")
        if timeout_s is None:
            item = await self._queue.get()
        else:
            item = await asyncio.wait_for(self._queue.get(), timeout_s)
        if isinstance(item, _End):
            self._state = "ended"
            raise PubSubClosed(f"subscription to {self.channel!r} has ended")
        # Decoded per subscriber, so that no listener can mutate another one's message.
        decoded: JsonObject = json.loads(item)
        return decoded

    def _deliver(self, raw: str) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                logger.warning("subscriber of %r is too slow: %d message(s) dropped", self.channel, self.dropped)
        self._queue.put_nowait(raw)

    def _end(self) -> None:
        if self._state in ("ended", "closed"):
            return
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(_END)


class _Fanout:
    """Local subscribers by channel; both implementations deliver through it."""

    def __init__(self) -> None:
        self._by_channel: dict[str, set[Subscription]] = {}

    def add(self, sub: Subscription) -> bool:
        """Add a subscriber; True when it is the channel's first."""
        subs = self._by_channel.setdefault(sub.channel, set())
        subs.add(sub)
        return len(subs) == 1

    def remove(self, sub: Subscription) -> bool:
        """Remove a subscriber; True when the channel has none left."""
        subs = self._by_channel.get(sub.channel)
        if subs is None:
            return False
        subs.discard(sub)
        if subs:
            return False
        del self._by_channel[sub.channel]
        return True

    def has(self, channel: str) -> bool:
        return channel in self._by_channel

    def deliver(self, channel: str, raw: str) -> None:
        for sub in self._by_channel.get(channel, ()):
            sub._deliver(raw)

    def end_all(self) -> None:
        for subs in self._by_channel.values():
            for sub in subs:
                sub._end()
        self._by_channel.clear()


class PubSub(ABC):
    """Fire-and-forget messages on named channels; a subscriber sees what is published while it listens.

    Delivery is best effort (nothing is stored): a client that reconnects re-reads state from the
    database, and uses the channel only for what happens next.
    """

    @abstractmethod
    async def publish(self, channel: str, message: Mapping[str, JsonValue]) -> None:
        """Send `message` (a JSON object) to everyone subscribed to `channel` now."""

    @abstractmethod
    def subscribe(self, channel: str) -> Subscription:
        """A subscription to `channel`, active once entered with `async with`."""

    async def close(self) -> None:
        """End every subscription and release connections."""
        return None


class InProcessPubSub(PubSub):
    """Delivers within this process: the default for one server process."""

    def __init__(self, *, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        self._fanout = _Fanout()
        self._max_pending = max_pending
        self._closed = False

    async def publish(self, channel: str, message: Mapping[str, JsonValue]) -> None:
        self._check_open()
        self._fanout.deliver(channel, encode_message(message))

    def subscribe(self, channel: str) -> Subscription:
        self._check_open()
        return Subscription(channel, attach=self._attach, detach=self._detach, max_pending=self._max_pending)

    async def close(self) -> None:
        self._closed = True
        self._fanout.end_all()

    async def _attach(self, sub: Subscription) -> None:
        self._check_open()
        self._fanout.add(sub)

    async def _detach(self, sub: Subscription) -> None:
        self._fanout.remove(sub)

    def _check_open(self) -> None:
        if self._closed:
            raise PubSubClosed("pub/sub is closed")


class RedisPubSub(PubSub):
    """Redis pub/sub, so that any server process can stream what another one published.

    One Redis connection per process carries every subscription: the first local subscriber of a
    channel sends SUBSCRIBE, the last one leaving sends UNSUBSCRIBE, and a reader task fans
    messages out locally. Channel names get `prefix`, because Redis channels ignore the database
    number and several installations (or test runs) may share one server.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: aioredis.Redis | None = None,
        prefix: str = "deskpilot:",
        max_pending: int = DEFAULT_MAX_PENDING,
        subscribe_timeout_s: float = 5.0,
    ) -> None:
        if client is None:
            if url is None:
                raise ValueError("RedisPubSub needs a url or a client")
            client = aioredis.Redis.from_url(url)
            self._owns_client = True
        else:
            self._owns_client = False
        self._client = client
        self._prefix = prefix
        self._max_pending = max_pending
        self._subscribe_timeout_s = subscribe_timeout_s
        self._fanout = _Fanout()
        self._pubsub = client.pubsub()
        self._confirmed: dict[str, asyncio.Event] = {}
        # SUBSCRIBE/UNSUBSCRIBE for one channel must reach Redis in the order the refcount changed.
        self._lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    async def publish(self, channel: str, message: Mapping[str, JsonValue]) -> None:
        self._check_open()
        raw = encode_message(message)
        try:
            await self._client.publish(self._prefix + channel, raw)
        except RedisError as e:
            raise UpstreamError(f"could not publish to {channel!r}: {e}") from e

    def subscribe(self, channel: str) -> Subscription:
        self._check_open()
        return Subscription(channel, attach=self._attach, detach=self._detach, max_pending=self._max_pending)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._fanout.end_all()
        # Wake subscribers still waiting for Redis to confirm: their subscription has ended already.
        for confirmed in self._confirmed.values():
            confirmed.set()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        if self._owns_client:
            await self._client.aclose()

    async def _attach(self, sub: Subscription) -> None:
        self._check_open()
        channel = sub.channel
        try:
            async with self._lock:
                if self._fanout.add(sub):
                    confirmed = self._confirmed[channel] = asyncio.Event()
                    await self._pubsub.subscribe(self._prefix + channel)
                    self._ensure_reader()
                else:
                    confirmed = self._confirmed[channel]
            # Returning only once Redis confirmed means a message published after entry is received.
            await asyncio.wait_for(confirmed.wait(), self._subscribe_timeout_s)
        except BaseException as e:
            # __aexit__ never runs for a failed or cancelled __aenter__: undo the refcount here.
            await self._detach(sub)
            if isinstance(e, RedisError | TimeoutError):
                raise UpstreamError(f"could not subscribe to {channel!r}: {e!r}") from e
            raise

    async def _detach(self, sub: Subscription) -> None:
        async with self._lock:
            if not self._fanout.remove(sub) or self._closed:
                return
            self._confirmed.pop(sub.channel, None)
            try:
                await self._pubsub.unsubscribe(self._prefix + sub.channel)
            except RedisError as e:
                # Harmless: at worst Redis sends messages nobody here listens to, until reconnect.
                logger.warning("could not unsubscribe from %r: %r", sub.channel, e)

    def _ensure_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(), name="deskpilot-redis-pubsub-reader")

    async def _read(self) -> None:
        failures = 0
        while True:
            try:
                message = await self._pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as e:
                failures += 1
                # redis-py reconnects and re-subscribes on the next read; back off so an outage is not a busy loop.
                delay = min(5.0, 0.1 * 2**failures)
                logger.warning("redis pub/sub read failed (%r); retrying in %.1fs", e, delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: Mapping[str, object]) -> None:
        kind = message.get("type")
        channel = _text(message.get("channel"))
        if channel is None or not channel.startswith(self._prefix):
            return
        channel = channel[len(self._prefix) :]
        if kind == "message":
            data = _text(message.get("data"))
            if data is not None:
                self._fanout.deliver(channel, data)
        elif kind == "subscribe":
            event = self._confirmed.get(channel)
            if event is not None:
                event.set()

    def _check_open(self) -> None:
        if self._closed:
            raise PubSubClosed("pub/sub is closed")


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str):
        return value
    return None


def make_pubsub(settings: Settings) -> PubSub:
    """Redis pub/sub when `settings.redis.url` is set (several server processes), in-process otherwise."""
    if settings.redis.url:
        return RedisPubSub(settings.redis.url)
    return InProcessPubSub()
