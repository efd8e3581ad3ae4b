"""Infrastructure errors become problems with a stable code, never a bare 500."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy.exc import TimeoutError as PoolTimeout

from deskpilot.api import problems


def _app() -> FastAPI:
    app = FastAPI()
    problems.install(app)

    @app.get("/busy")
    async def busy() -> None:
        raise PoolTimeout("QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 30.00")

    return app


async def test_an_exhausted_connection_pool_is_a_503_database_busy_problem() -> None:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.get("/busy")
    assert response.status_code == 503
    assert response.headers["content-type"] == problems.PROBLEM_MEDIA_TYPE
    assert response.headers["retry-after"] == str(problems.DATABASE_BUSY_RETRY_AFTER_S)
    body = response.json()
    assert body["code"] == "database_busy"
    assert body["type"].endswith("/database_busy")
    assert "QueuePool" not in body["detail"]
