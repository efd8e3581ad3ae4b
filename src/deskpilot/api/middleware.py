"""Request ids, access logging, Prometheus metrics and optional tracing as pure ASGI middleware."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from opentelemetry import trace
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("deskpilot.access")
tracer = trace.get_tracer("deskpilot.api")

REQUESTS = Counter("deskpilot_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("deskpilot_http_request_seconds", "HTTP request latency", ["method", "route"])
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Label children by (method, route template, status): `labels()` validates, converts and takes a lock on every
# call; the set of keys is bounded by the routes, methods and statuses the app has.
_COUNTERS: dict[tuple[str, str, int], Any] = {}
_HISTOGRAMS: dict[tuple[str, str], Any] = {}


def _observe(method: str, route: str, status: int, elapsed: float) -> None:
    counter = _COUNTERS.get((method, route, status))
    if counter is None:
        counter = _COUNTERS[(method, route, status)] = REQUESTS.labels(method, route, str(status))
    counter.inc()
    histogram = _HISTOGRAMS.get((method, route))
    if histogram is None:
        histogram = _HISTOGRAMS[(method, route)] = LATENCY.labels(method, route)
    histogram.observe(elapsed)


def _incoming_request_id(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"x-request-id":
            return value.decode("latin-1")
    return ""


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, tracing: bool = False) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _incoming_request_id(scope["headers"])
        request_id = incoming if incoming and _REQUEST_ID_OK.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status_code = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            if self.tracing:
                # FastAPI's own route span nests under this one, which carries our request id.
                with tracer.start_as_current_span("deskpilot.request") as span:
                    span.set_attribute("http.request.method", scope["method"])
                    span.set_attribute("url.path", scope["path"])
                    span.set_attribute("deskpilot.request_id", request_id)
                    await self.app(scope, receive, send_wrapper)
                    span.set_attribute("http.response.status_code", status_code)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            route_path = getattr(route, "path", "unmatched")
            _observe(scope["method"], route_path, status_code, elapsed)
            logger.info(
                "%s %s %s %.1fms request_id=%s", scope["method"], scope["path"], status_code, elapsed * 1000, request_id
            )
