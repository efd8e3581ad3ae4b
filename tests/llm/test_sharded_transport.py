"""The SDK clients' connection pools: several small pools taken in turn instead of one large one."""

from __future__ import annotations

import httpx

from deskpilot.llm.openai_model import POOL_SHARDS, ShardedTransport, make_openai_client


async def test_requests_go_to_the_pools_in_turn_and_all_pools_close() -> None:
    transport = ShardedTransport(shards=3, limits=httpx.Limits(max_connections=2))
    used: list[int] = []
    closed: list[int] = []
    for index, pool in enumerate(transport._pools):

        async def handle(request: httpx.Request, index: int = index) -> httpx.Response:
            used.append(index)
            return httpx.Response(200, json={"pool": index})

        async def aclose(index: int = index) -> None:
            closed.append(index)

        pool.handle_async_request = handle  # type: ignore[method-assign]
        pool.aclose = aclose  # type: ignore[method-assign]
    async with httpx.AsyncClient(transport=transport, base_url="http://model.test") as client:
        replies = [(await client.get("/v1/models")).json()["pool"] for _ in range(7)]
    assert replies == [0, 1, 2, 0, 1, 2, 0]
    assert used == replies
    assert closed == [0, 1, 2]


async def test_the_openai_client_gets_sharded_pools_unless_given_a_client() -> None:
    own = make_openai_client(api_key=None, base_url="http://127.0.0.1:9/v1", timeout_s=5)
    transport = own._client._transport
    assert isinstance(transport, ShardedTransport)
    assert len(transport._pools) == POOL_SHARDS
    await own.close()
    async with httpx.AsyncClient() as http:
        given = make_openai_client(api_key=None, base_url="http://127.0.0.1:9/v1", timeout_s=5, http_client=http)
        assert given._client is http
