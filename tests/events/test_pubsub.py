"""One conformance suite for every PubSub implementation: in-process and Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from deskpilot.errors import UpstreamError, ValidationFailed
from deskpilot.events.pubsub import (
    InProcessPubSub,
    JsonObject,
    PubSub,
    PubSubClosed,
    RedisPubSub,
    account_channel,
    make_pubsub,
    user_channel,
)
from deskpilot.settings import Settings
from tests.services import require_redis

PubSubFactory = Callable[..., PubSub]


@pytest.fixture(params=["inprocess", pytest.param("redis", marks=pytest.mark.redis)])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[PubSubFactory]:
    """Builds pub/subs of one implementation that share a bus (one Redis prefix per test), closing them after."""
    created: list[PubSub] = []
    if request.param == "inprocess":

        def factory(**kwargs: object) -> PubSub:
            pubsub = InProcessPubSub(**kwargs)  # type: ignore[arg-type]
            created.append(pubsub)
            return pubsub

    else:
        url = require_redis()
        prefix = f"test-{uuid.uuid4().hex[:10]}:"

        def factory(**kwargs: object) -> PubSub:
            pubsub = RedisPubSub(url, prefix=prefix, **kwargs)  # type: ignore[arg-type]
            created.append(pubsub)
            return pubsub

    yield factory
    for pubsub in created:
        await pubsub.close()


@pytest.fixture
def pubsub(make: PubSubFactory) -> PubSub:
    return make()


async def test_subscriber_receives_what_is_published_after_it_subscribed(pubsub: PubSub) -> None:
    message: JsonObject = {
        "type": "notification",
        "title": "Disk almost full — server ü",
        "n": 3,
        "tags": ["a"],
        "x": None,
    }
    async with pubsub.subscribe("user:1") as sub:
        await pubsub.publish("user:1", message)
        assert await sub.get(timeout_s=2) == message


async def test_messages_arrive_in_order(pubsub: PubSub) -> None:
    async with pubsub.subscribe("account:1") as sub:
        for i in range(50):
            await pubsub.publish("account:1", {"i": i})
        received = [(await sub.get(timeout_s=2))["i"] for _ in range(50)]
    assert received == list(range(50))


async def test_iteration_yields_messages(pubsub: PubSub) -> None:
    async with pubsub.subscribe("c") as sub:
        await pubsub.publish("c", {"i": 1})
        await pubsub.publish("c", {"i": 2})
        received = []
        async with asyncio.timeout(2):
            async for message in sub:
                received.append(message["i"])
                if len(received) == 2:
                    break
    assert received == [1, 2]


async def test_other_channels_are_not_delivered(pubsub: PubSub) -> None:
    async with pubsub.subscribe("user:a") as sub:
        await pubsub.publish("user:b", {"for": "b"})
        await pubsub.publish("user:a", {"for": "a"})
        assert await sub.get(timeout_s=2) == {"for": "a"}
        with pytest.raises(TimeoutError):
            await sub.get(timeout_s=0.05)


async def test_every_subscriber_of_a_channel_gets_its_own_copy(pubsub: PubSub) -> None:
    async with pubsub.subscribe("c") as first, pubsub.subscribe("c") as second:
        await pubsub.publish("c", {"items": [1]})
        one = await first.get(timeout_s=2)
        one["items"].append(2)  # type: ignore[union-attr]
        assert await second.get(timeout_s=2) == {"items": [1]}


async def test_nothing_published_before_subscribing_is_delivered(pubsub: PubSub) -> None:
    await pubsub.publish("c", {"early": True})
    async with pubsub.subscribe("c") as sub:
        await pubsub.publish("c", {"early": False})
        assert await sub.get(timeout_s=2) == {"early": False}


async def test_leaving_one_subscription_keeps_the_others_and_resubscribing_works(pubsub: PubSub) -> None:
    async with pubsub.subscribe("c") as staying:
        async with pubsub.subscribe("c") as leaving:
            await pubsub.publish("c", {"i": 1})
            assert await leaving.get(timeout_s=2) == {"i": 1}
        await pubsub.publish("c", {"i": 2})
        assert await staying.get(timeout_s=2) == {"i": 1}
        assert await staying.get(timeout_s=2) == {"i": 2}
    async with pubsub.subscribe("c") as again:
        await pubsub.publish("c", {"i": 3})
        assert await again.get(timeout_s=2) == {"i": 3}


async def test_get_times_out_when_nothing_arrives(pubsub: PubSub) -> None:
    async with pubsub.subscribe("quiet") as sub:
        with pytest.raises(TimeoutError):
            await sub.get(timeout_s=0.05)


async def test_a_non_json_message_is_refused(pubsub: PubSub) -> None:
    async with pubsub.subscribe("c") as sub:
        with pytest.raises(ValidationFailed):
            await pubsub.publish("c", {"when": object()})  # type: ignore[dict-item]
        with pytest.raises(ValidationFailed):
            await pubsub.publish("c", {"x": float("nan")})
        await pubsub.publish("c", {"ok": True})
        assert await sub.get(timeout_s=2) == {"ok": True}


async def test_close_ends_open_subscriptions_and_refuses_more(pubsub: PubSub) -> None:
    async with pubsub.subscribe("c") as sub:

        async def drain() -> list[object]:
            return [message async for message in sub]

        reader = asyncio.create_task(drain())
        await asyncio.sleep(0)
        await pubsub.close()
        assert await asyncio.wait_for(reader, 2) == []
        with pytest.raises(PubSubClosed):
            await sub.get(timeout_s=1)
    with pytest.raises(PubSubClosed):
        await pubsub.publish("c", {})
    with pytest.raises(PubSubClosed):
        pubsub.subscribe("c")


async def test_a_slow_subscriber_loses_the_oldest_messages_not_the_newest(make: PubSubFactory) -> None:
    pubsub = make(max_pending=3)
    async with pubsub.subscribe("c") as slow, pubsub.subscribe("c") as marker:
        for i in range(10):
            await pubsub.publish("c", {"i": i})
        # Once the marker saw the last message, the slow one has been offered all ten.
        for _ in range(3):
            last = await marker.get(timeout_s=2)
        assert last == {"i": 9}
        assert [(await slow.get(timeout_s=2))["i"] for _ in range(3)] == [7, 8, 9]
        assert slow.dropped == 7


@pytest.mark.redis
async def test_two_server_processes_share_the_bus_through_redis() -> None:
    url, prefix = require_redis(), f"test-{uuid.uuid4().hex[:10]}:"
    server_a, server_b = RedisPubSub(url, prefix=prefix), RedisPubSub(url, prefix=prefix)
    try:
        async with server_b.subscribe(user_channel(uuid.UUID(int=7))) as sub:
            await server_a.publish(user_channel(uuid.UUID(int=7)), {"from": "a"})
            assert await sub.get(timeout_s=2) == {"from": "a"}
    finally:
        await server_a.close()
        await server_b.close()


async def test_many_channels_at_once(pubsub: PubSub) -> None:
    channels = [f"user:{i}" for i in range(20)]

    async def listen(channel: str, ready: asyncio.Event, go: asyncio.Event) -> object:
        async with pubsub.subscribe(channel) as sub:
            ready.set()
            await go.wait()
            return await sub.get(timeout_s=2)

    readies = [asyncio.Event() for _ in channels]
    go = asyncio.Event()
    listeners = [asyncio.create_task(listen(c, r, go)) for c, r in zip(channels, readies, strict=True)]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 5)
    for channel in channels:
        await pubsub.publish(channel, {"to": channel})
    go.set()
    assert await asyncio.wait_for(asyncio.gather(*listeners), 5) == [{"to": c} for c in channels]


def test_channel_names() -> None:
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert user_channel(ident) == "user:12345678-1234-5678-1234-567812345678"
    assert account_channel(ident) == "account:12345678-1234-5678-1234-567812345678"


async def test_make_pubsub_follows_the_settings() -> None:
    local = make_pubsub(Settings.model_validate({}))
    assert isinstance(local, InProcessPubSub)
    await local.close()
    remote = make_pubsub(Settings.model_validate({"redis": {"url": "redis://127.0.0.1:1/0"}}))
    assert isinstance(remote, RedisPubSub)
    await remote.close()


async def test_redis_unreachable_is_an_upstream_error() -> None:
    pubsub = RedisPubSub("redis://127.0.0.1:1/0", subscribe_timeout_s=1)
    try:
        with pytest.raises(UpstreamError):
            await pubsub.publish("c", {})
        with pytest.raises(UpstreamError):
            async with pubsub.subscribe("c"):
                pass
    finally:
        await pubsub.close()


async def test_subscription_must_be_entered_and_ends_at_exit(pubsub: PubSub) -> None:
    sub = pubsub.subscribe("c")
    with pytest.raises(RuntimeError):
        await sub.get(timeout_s=0.1)
    async with sub:
        pass
    with pytest.raises(PubSubClosed):
        await sub.get(timeout_s=0.1)
    with pytest.raises(RuntimeError):
        async with sub:
            pass


@pytest.mark.redis
async def test_a_subscription_survives_a_dropped_redis_connection() -> None:
    url, name = require_redis(), f"deskpilot-test-{uuid.uuid4().hex[:10]}"
    client = aioredis.Redis.from_url(url, client_name=name)
    pubsub = RedisPubSub(client=client, prefix=f"test-{name}:")
    admin = aioredis.Redis.from_url(url)
    try:
        async with pubsub.subscribe("c") as sub:
            await pubsub.publish("c", {"i": 0})
            assert await sub.get(timeout_s=2) == {"i": 0}
            connections = await admin.client_list()
            [subscriber] = [c for c in connections if c["name"] == name and int(c["sub"]) > 0]
            await admin.client_kill_filter(_id=subscriber["id"])
            # Messages published while the connection is down are lost (best effort); later ones arrive.
            async with asyncio.timeout(10):
                while True:
                    await pubsub.publish("c", {"i": 1})
                    try:
                        assert await sub.get(timeout_s=0.2) == {"i": 1}
                        break
                    except TimeoutError:
                        continue
    finally:
        await pubsub.close()
        await client.aclose()
        await admin.aclose()
