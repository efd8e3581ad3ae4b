"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, cast

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess, values
from sqlalchemy import text

from deskpilot import __version__
from deskpilot.api.deps import StateDep
from deskpilot.api.routing import JSONRoute

router = APIRouter(tags=["health"], route_class=JSONRoute)


@router.get("/healthz", operation_id="healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/readyz", operation_id="readyz")
async def readyz(state: StateDep) -> JSONResponse:
    checks: dict[str, Any] = {}
    try:
        async with state.db.unscoped_session() as session:
            await session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as e:  # readiness must report, not raise
        checks["database"] = f"error: {type(e).__name__}"
    if state.settings.redis.url:
        from redis.asyncio import Redis

        client: Redis = Redis.from_url(state.settings.redis.url, socket_connect_timeout=2)
        try:
            await cast(Awaitable[bool], client.ping())
            checks["redis"] = "ok"
        except Exception as e:
            checks["redis"] = f"error: {type(e).__name__}"
        finally:
            await client.aclose()
    ready = all(v == "ok" for v in checks.values())
    body = {"status": "ready" if ready else "not_ready", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


def _exposition() -> bytes:
    """This process's metrics; under `deskpilot serve --workers N` every worker's, summed (prometheus_client's
    multiprocess mode, which the serve command switches on for its workers), whichever worker answers."""
    if values.ValueClass is values.MutexValue:
        return generate_latest()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


@router.get("/metrics", operation_id="metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(_exposition(), media_type=CONTENT_TYPE_LATEST)
