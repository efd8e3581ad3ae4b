"""API-token authentication is cached for a short time: never failures, dropped at once on revoke in this process
and, through Redis, in the other server processes."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from deskpilot.api.app import create_app
from deskpilot.api.state import AppState
from deskpilot.events.pubsub import make_pubsub
from deskpilot.identity import service as identity
from deskpilot.identity.models import ApiToken, Role
from deskpilot.identity.token_cache import TokenCache, apply_invalidation, invalidation, token_cache
from deskpilot.security.tokens import hash_token
from tests.conftest import Tenant, make_settings, make_tenant
from tests.services import require_redis


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def _new_token(client: httpx.AsyncClient, tenant: Tenant) -> tuple[str, str]:
    created = await client.post("/api/v1/tokens", json={"name": "ci"}, headers=tenant.headers(Role.ENGINEER))
    assert created.status_code == 201
    return created.json()["secret"], created.json()["id"]


async def test_a_token_is_authenticated_from_the_cache_after_its_first_use(
    client: httpx.AsyncClient, tenant_a: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret, _ = await _new_token(client, tenant_a)
    assert (await client.get("/api/v1/me", headers=_bearer(secret))).status_code == 200
    assert token_cache.get(hash_token(secret)) is not None

    async def no_database(*_args: object) -> None:
        raise AssertionError("a cached token must not be looked up again")

    monkeypatch.setattr(identity, "resolve_api_token", no_database)
    again = await client.get("/api/v1/me", headers=_bearer(secret))
    assert again.status_code == 200
    assert again.json()["id"] == str(tenant_a.users[Role.ENGINEER])


async def test_a_revoked_token_stops_working_at_once_in_this_process(
    client: httpx.AsyncClient, tenant_a: Tenant
) -> None:
    secret, token_id = await _new_token(client, tenant_a)
    assert (await client.get("/api/v1/me", headers=_bearer(secret))).status_code == 200
    revoked = await client.delete(f"/api/v1/tokens/{token_id}", headers=tenant_a.headers(Role.ENGINEER))
    assert revoked.status_code == 200
    assert (await client.get("/api/v1/me", headers=_bearer(secret))).status_code == 401


async def test_revoking_through_the_service_as_the_cli_does_drops_the_cached_token(
    client: httpx.AsyncClient, app_state: AppState, tenant_a: Tenant
) -> None:
    secret, token_id = await _new_token(client, tenant_a)
    assert (await client.get("/api/v1/me", headers=_bearer(secret))).status_code == 200
    async with app_state.db.session(tenant_a.account_id) as session:
        await identity.revoke_api_token(session, uuid.UUID(token_id))
        await session.commit()
    assert (await client.get("/api/v1/me", headers=_bearer(secret))).status_code == 401


async def test_deactivating_the_user_drops_its_cached_tokens(
    client: httpx.AsyncClient, tenant_a: Tenant
) -> None:
    engineer = tenant_a.headers(Role.ENGINEER)
    assert (await client.get("/api/v1/me", headers=engineer)).status_code == 200
    changed = await client.patch(f"/api/v1/users/{tenant_a.users[Role.ENGINEER]}", json={"is_active": False},
                                 headers=tenant_a.headers(Role.ADMIN))
    assert changed.status_code == 200, changed.text
    assert (await client.get("/api/v1/me", headers=engineer)).status_code == 401


async def test_failures_are_never_cached(client: httpx.AsyncClient, app_state: AppState, tenant_a: Tenant) -> None:
    secret, token_id = await _new_token(client, tenant_a)
    async with app_state.db.session(tenant_a.account_id) as session:
        token = await session.get(ApiToken, uuid.UUID(token_id))
        assert token is not None
        token.revoked_at = token.created_at  # revoked behind the process's back, before any use
        await session.commit()
    assert (await client.get("/api/v1/me", headers=_bearer(secret))).status_code == 401
    assert token_cache.get(hash_token(secret)) is None
    unknown = "dp_" + "x" * 40
    assert (await client.get("/api/v1/me", headers=_bearer(unknown))).status_code == 401
    assert token_cache.get(hash_token(unknown)) is None


def test_entries_expire_after_the_ttl_and_the_cache_stays_bounded() -> None:
    now = [100.0]
    cache: TokenCache[str] = TokenCache(ttl_s=30.0, max_entries=2, clock=lambda: now[0])
    user = uuid.uuid4()
    cache.put("a", token_id=uuid.uuid4(), user_id=user, value="alice")
    now[0] += 29.9
    assert cache.get("a") == "alice"
    now[0] += 0.1
    assert cache.get("a") is None
    assert len(cache) == 0

    first = uuid.uuid4()
    cache.put("a", token_id=first, user_id=user, value="alice")
    cache.put("b", token_id=uuid.uuid4(), user_id=user, value="bob")
    cache.put("c", token_id=uuid.uuid4(), user_id=uuid.uuid4(), value="carol")
    assert len(cache) == 2
    assert cache.get("a") is None  # the oldest went first
    cache.forget_user(user)
    assert cache.get("b") is None
    assert cache.get("c") == "carol"
    cache.forget_token(first)
    assert len(cache) == 1


def test_an_invalidation_message_drops_a_token_or_every_token_of_a_user() -> None:
    cache: TokenCache[str] = TokenCache()
    alice, bob, token = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    cache.put("a1", token_id=token, user_id=alice, value="alice 1")
    cache.put("a2", token_id=uuid.uuid4(), user_id=alice, value="alice 2")
    cache.put("b", token_id=uuid.uuid4(), user_id=bob, value="bob")
    apply_invalidation(cache, invalidation(token_id=token))
    assert (cache.get("a1"), cache.get("a2")) == (None, "alice 2")
    apply_invalidation(cache, invalidation(user_id=alice))
    assert (cache.get("a2"), cache.get("b")) == (None, "bob")
    for malformed in ({}, {"token_id": "not a uuid"}, {"user_id": 7}, {"other": str(bob)}):
        apply_invalidation(cache, malformed)
    assert cache.get("b") == "bob"


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


@pytest.mark.redis
async def test_a_revocation_in_another_process_drops_the_cached_token_through_redis(
    tmp_path: Path, migrated_template: Path
) -> None:
    """Two server processes on one Redis: a token revoked through the second (or the CLI) stops working on the
    first at once, not when its cached authentication expires."""
    shutil.copyfile(migrated_template, tmp_path / "test.db")
    settings = make_settings(tmp_path, redis={"url": require_redis()})
    first, other_process = AppState.build(settings), make_pubsub(settings)
    app = create_app(settings, state=first)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                tenant = await make_tenant(first.db, "Acme IT")
                secret, token_id = await _new_token(client, tenant)
                assert (await client.get("/api/v1/me", headers=_bearer(secret))).status_code == 200
                assert token_cache.get(hash_token(secret)) is not None
                # Revoked by the other process: committed there, then announced.
                async with first.db.session(tenant.account_id) as session:
                    token = await session.get(ApiToken, uuid.UUID(token_id))
                    assert token is not None
                    token.revoked_at = token.created_at
                    await session.commit()
                await identity.announce_invalidation(other_process, token_id=uuid.UUID(token_id))
                assert await _until(lambda: token_cache.get(hash_token(secret)) is None)
                assert (await client.get("/api/v1/me", headers=_bearer(secret))).status_code == 401
    finally:
        await other_process.close()
