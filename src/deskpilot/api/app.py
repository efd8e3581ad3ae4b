"""The FastAPI application factory; settings are built here, never at import time."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from fastapi import FastAPI
from fastapi.routing import APIRoute

from deskpilot import __version__
from deskpilot.api import problems
from deskpilot.api.middleware import RequestContextMiddleware
from deskpilot.api.routes import approvals as approval_routes
from deskpilot.api.routes import audit as audit_routes
from deskpilot.api.routes import chat as chat_routes
from deskpilot.api.routes import diagnosis as diagnosis_routes
from deskpilot.api.routes import health, identity
from deskpilot.api.routes import knowledge as knowledge_routes
from deskpilot.api.routes import notifications as notification_routes
from deskpilot.api.routes import pilot as pilot_routes
from deskpilot.api.routes import psa as psa_routes
from deskpilot.api.routes import usage as usage_routes
from deskpilot.api.state import AppState
from deskpilot.jobs import discover_job_modules
from deskpilot.llm.eager_writes import install_eager_body_writes
from deskpilot.settings import Settings


def _operation_id(route: APIRoute) -> str:
    return route.name


_heap_frozen: list[bool] = []
# Young-generation collections every 50,000 net allocations instead of CPython's 700. Under load a server has
# thousands of young objects alive (hundreds of requests in flight), and each collection walks all of them to free
# next to nothing: at 700, collections took 13 % of the capacity benchmark server's CPU (0.4 ms per request), at
# 50,000 about 3 %. The memory held meanwhile is a few megabytes.
YOUNG_COLLECTION_THRESHOLD: Final = 50_000


def tune_collector() -> None:
    """Take what is alive once the app has started (modules, routes, mappers, schemas) out of the collector's walk,
    and collect the young generation less often.

    The startup objects (about 0.3 million) live as long as the process, yet every full collection walked all of
    them to free nothing: 90-130 ms of CPU per collection on the capacity benchmark's server. Done once per process,
    after a collection, so a test run that builds many apps only freezes what the first one found alive.
    """
    if _heap_frozen:
        return
    _heap_frozen.append(True)
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)


def create_app(settings: Settings | None = None, *, state: AppState | None = None) -> FastAPI:
    settings = settings or Settings()
    # Every domain's jobs.py registers its handlers, so enqueue knows each name before the first request.
    discover_job_modules()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app_state = state or AppState.build(settings)
        app.state.deskpilot = app_state
        await app_state.start()
        tune_collector()
        install_eager_body_writes(asyncio.get_running_loop())
        try:
            yield
        finally:
            await app_state.close()

    app = FastAPI(
        title="deskpilot",
        version=__version__,
        description="Self-hosted AI operations desk for IT service teams.",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    problems.install(app)
    app.add_middleware(RequestContextMiddleware, tracing=settings.telemetry.tracing)
    # Routes are matched in order, each with its own regular expression: the session routers, which serve the
    # turns (the requests that come by the hundred), go first after health. No two routers share a method and
    # path. Every operation documents its errors as problem+json.
    for router in (
        health.router, pilot_routes.router, chat_routes.router, identity.router, audit_routes.router,
        knowledge_routes.router, psa_routes.router, usage_routes.router, notification_routes.router,
        diagnosis_routes.router, approval_routes.router,
    ):
        app.include_router(router, responses=problems.DOCUMENTED_ERRORS)

    from deskpilot.web import install as install_web

    install_web(app)
    return app
