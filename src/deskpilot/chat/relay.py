"""A live turn's frames copied to a Redis stream, so that a client reconnecting to another server process follows
the turn live."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from deskpilot.chat.stream import DONE, KEEP_FINISHED_S, TurnStream, frame, frame_data

logger = logging.getLogger(__name__)

KEY_PREFIX: Final = "deskpilot:chat-turn:"
# A turn's key outlives its end as long as its frames stay in the running process's memory.
KEEP_AFTER_END_S: Final = int(KEEP_FINISHED_S)
# A running turn's key goes away by itself if its process dies before the end (chat turns last minutes).
KEEP_WHILE_RUNNING_S: Final = 3600
# How long a reader waits for new frames before it asks whether the turn is still running.
BLOCK_MS: Final = 2000
READ_COUNT: Final = 1000

Part = Mapping[str, Any] | str


def turn_key(turn_id: uuid.UUID) -> str:
    return f"{KEY_PREFIX}{turn_id}"


class TurnRelay:
    """Copies each live turn's frames to a Redis stream (entry id `0-<frame id>`) and follows such a stream.

    The process running a turn stays the source of truth: copying is best effort (a Redis failure is logged and
    the rest of that turn is not copied), and a reader falls back to the turn's stored final state. Frames are
    copied in batches, one pipeline per batch: what a turn emits while the previous batch is on its way goes
    with the next one, in order.
    """

    def __init__(self, client: aioredis.Redis, *, block_ms: int = BLOCK_MS) -> None:
        self._client = client
        self._block_ms = block_ms
        self._flushing: set[asyncio.Task[None]] = set()

    @classmethod
    def from_url(cls, url: str, *, block_ms: int = BLOCK_MS) -> TurnRelay:
        return cls(aioredis.Redis.from_url(url), block_ms=block_ms)

    def attach(self, stream: TurnStream) -> None:
        """Copy `stream`'s frames from now on (call it before the first frame)."""
        copy = _Copy(self._client, stream.turn_id, self._flushing)
        stream.listener = copy.emitted

    async def follow(
        self, turn_id: uuid.UUID, after: int, still_running: Callable[[], Awaitable[bool]]
    ) -> AsyncIterator[tuple[int, str, bool]]:
        """(last frame id, encoded frames, ended) for the frames after `after`, as they are copied.

        Stops after [DONE], or when nothing new came for `block_ms` and `still_running()` says the turn is over
        (its process died, or its frames were never copied): the caller then tells the stored final state.
        """
        key, last = turn_key(turn_id), f"0-{max(after, 0)}"
        while True:
            try:
                reply = await self._client.xread({key: last}, count=READ_COUNT, block=self._block_ms)
            except (RedisError, OSError):
                logger.warning("chat turn %s: reading its frames from Redis failed", turn_id, exc_info=True)
                return
            if not reply:
                if not await still_running():
                    return
                continue
            frames: list[str] = []
            ended, frame_id = False, after
            for entry_id, fields in reply[0][1]:
                last = entry_id.decode()
                frame_id = int(last.split("-")[1])
                data = fields[b"p"].decode()
                frames.append(frame(frame_id, data))
                ended = data == DONE
                if ended:
                    break
            yield frame_id, "".join(frames), ended
            if ended:
                return

    async def close(self) -> None:
        """Let the batches on their way finish, then close the connection."""
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)
        await self._client.aclose()


class _Copy:
    """One turn's copying: the frames not yet sent, and the task sending them (one at a time, in order)."""

    __slots__ = ("_client", "_flushing", "_key", "_pending", "_task", "_turn_id", "failed")

    def __init__(self, client: aioredis.Redis, turn_id: uuid.UUID, flushing: set[asyncio.Task[None]]) -> None:
        self._client = client
        self._turn_id = turn_id
        self._key = turn_key(turn_id)
        self._flushing = flushing
        self._pending: list[tuple[int, str]] = []
        self._task: asyncio.Task[None] | None = None
        self.failed = False

    def emitted(self, first_id: int, parts: tuple[Part, ...]) -> None:
        if self.failed:
            return
        self._pending.extend((frame_id, frame_data(part)) for frame_id, part in enumerate(parts, start=first_id))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush(), name=f"chat-relay-{self._turn_id}")
            self._flushing.add(self._task)
            self._task.add_done_callback(self._flushing.discard)

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                pipe = self._client.pipeline(transaction=False)
                for frame_id, data in batch:
                    pipe.xadd(self._key, {"p": data}, id=f"0-{frame_id}")
                # In the same round trip: the key lives on while the turn does, and briefly after its end.
                pipe.expire(self._key, KEEP_AFTER_END_S if batch[-1][1] == DONE else KEEP_WHILE_RUNNING_S)
                await pipe.execute()
        except (RedisError, OSError):
            self.failed = True
            logger.warning("chat turn %s: frames no longer copied to Redis", self._turn_id, exc_info=True)
        finally:
            self._task = None
