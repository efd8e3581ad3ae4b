"""Real Redis and PostgreSQL for tests: skipped when absent, a failure when DESKPILOT_REQUIRE_SERVICES=1."""

from __future__ import annotations

import functools
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import redis
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine


class TestServices(BaseSettings):
    """Where the services are; read from DESKPILOT_TEST_REDIS_URL, DESKPILOT_TEST_DATABASE_URL and
    DESKPILOT_REQUIRE_SERVICES (CI sets it so that a missing service fails instead of skipping)."""

    __test__ = False  # not a test class, despite its name
    model_config = SettingsConfigDict(env_prefix="DESKPILOT_", extra="ignore")

    test_redis_url: str = "redis://127.0.0.1:6379/0"
    test_database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    require_services: bool = False


def services() -> TestServices:
    return TestServices()


def _unavailable(what: str, url: str, why: str) -> None:
    message = f"{what} is not reachable at {url}: {why}"
    if services().require_services:
        pytest.fail(f"{message} (DESKPILOT_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(message)


@functools.cache
def _redis_problem(url: str) -> str | None:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as e:
        return f"{type(e).__name__}: {e}"
    finally:
        client.close()
    return None


@functools.cache
def _tcp_problem(host: str, port: int) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=1):
            return None
    except OSError as e:
        return f"{type(e).__name__}: {e}"


def require_redis() -> str:
    """The test Redis URL; skips the test (or fails it, when services are required) if Redis does not answer."""
    url = services().test_redis_url
    problem = _redis_problem(url)
    if problem:
        _unavailable("Redis", url, problem)
    return url


def require_postgres() -> str:
    """The test PostgreSQL URL (asyncpg); skips or fails like `require_redis` when nothing listens there."""
    url = services().test_database_url
    parsed = make_url(url)
    problem = _tcp_problem(parsed.host or "127.0.0.1", parsed.port or 5432)
    if problem:
        _unavailable("PostgreSQL", url, problem)
    return url


@asynccontextmanager
async def pg_database(base_url: str | None = None) -> AsyncIterator[str]:
    """A throwaway PostgreSQL database next to the test one, dropped afterwards; yields its URL."""
    base = base_url or require_postgres()
    name = f"deskpilot_test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(base, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(base).set(database=name).render_as_string(hide_password=False)
        finally:
            async with admin.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()
