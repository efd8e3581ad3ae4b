"""A live turn's frames through Redis for a reconnect served by another process (SS-034, SS-035), on the real Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from deskpilot.chat import relay as relay_module
from deskpilot.chat import stream
from deskpilot.chat.relay import TurnRelay, turn_key
from tests.services import require_redis

OPENING = stream.opening_parts(uuid.uuid4(), uuid.uuid4())
TEXT = [{"type": "text-start", "id": "text-1"}, {"type": "text-delta", "id": "text-1", "delta": "Check the VPN"},
        {"type": "text-end", "id": "text-1"}]


@pytest.fixture
def redis_url() -> str:
    return require_redis()


async def _collect(
    relay: TurnRelay, turn_id: uuid.UUID, after: int, running: bool = True
) -> list[tuple[int, str, bool]]:
    async def still_running() -> bool:
        return running

    return [item async for item in relay.follow(turn_id, after, still_running)]


async def test_ss034_ss035_another_process_follows_a_live_turn_from_its_last_event_id(redis_url: str) -> None:
    here, elsewhere = TurnRelay.from_url(redis_url), TurnRelay.from_url(redis_url, block_ms=200)
    turn = stream.TurnStream(uuid.uuid4())
    here.attach(turn)
    try:
        turn.emit(*OPENING)
        follower = asyncio.create_task(_collect(elsewhere, turn.turn_id, after=2))
        await asyncio.sleep(0.05)  # the follower is waiting for frames that are not there yet
        turn.emit(*TEXT)
        await asyncio.sleep(0.05)
        turn.emit(*stream.closing_parts())
        got = await asyncio.wait_for(follower, timeout=5)
    finally:
        await here.close()
        await elsewhere.close()
    expected = "".join(stream.encode(i, part) for i, part in enumerate(turn.parts, start=1) if i > 2)
    assert "".join(text for _, text, _ in got) == expected  # the same frames, ids and bytes as the live stream
    assert got[-1][0] == len(turn.parts)
    assert [ended for _, _, ended in got] == [False] * (len(got) - 1) + [True]
    assert len(got) >= 2  # frames arrived as they were emitted, not all at the end


async def test_a_finished_turns_frames_stay_for_a_while_then_expire(redis_url: str) -> None:
    here = TurnRelay.from_url(redis_url)
    turn = stream.TurnStream(uuid.uuid4())
    here.attach(turn)
    client = aioredis.Redis.from_url(redis_url)
    try:
        turn.emit(*OPENING)
        await asyncio.sleep(0.05)
        running_ttl = await client.ttl(turn_key(turn.turn_id))
        turn.emit(*stream.closing_parts())
        await asyncio.sleep(0.05)
        ended_ttl = await client.ttl(turn_key(turn.turn_id))
        replayed = await _collect(here, turn.turn_id, after=0)
    finally:
        await here.close()
        await client.aclose()
    assert relay_module.KEEP_AFTER_END_S < running_ttl <= relay_module.KEEP_WHILE_RUNNING_S
    assert 0 < ended_ttl <= relay_module.KEEP_AFTER_END_S
    assert "".join(text for _, text, _ in replayed) == "".join(
        stream.encode(i, part) for i, part in enumerate(turn.parts, start=1)
    )


async def test_a_turn_that_is_over_without_frames_ends_the_follow(redis_url: str) -> None:
    elsewhere = TurnRelay.from_url(redis_url, block_ms=100)
    try:
        # Nothing was copied (the turn ran before Redis, or its process died): the caller replays the stored state.
        assert await asyncio.wait_for(_collect(elsewhere, uuid.uuid4(), after=0, running=False), timeout=5) == []
    finally:
        await elsewhere.close()


async def test_a_redis_failure_never_reaches_the_turn(caplog: pytest.LogCaptureFixture) -> None:
    unreachable = TurnRelay.from_url("redis://127.0.0.1:1/0")
    turn = stream.TurnStream(uuid.uuid4())
    unreachable.attach(turn)
    turn.emit(*OPENING)
    await asyncio.sleep(0.2)
    turn.emit(*TEXT, *stream.closing_parts())  # after the failure: not tried again, the stream goes on
    await unreachable.close()
    assert [frame async for frame in turn.follow(0)] == [
        stream.encode(i, part) for i, part in enumerate(turn.parts, start=1)
    ]
    assert "no longer copied to Redis" in caplog.text
    reader = TurnRelay.from_url("redis://127.0.0.1:1/0")
    try:
        assert await _collect(reader, turn.turn_id, after=0) == []  # nothing to follow: the caller replays
    finally:
        await reader.close()
