"""Request ids, access metrics and OpenTelemetry spans when tracing is on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from deskpilot.api.app import create_app
from deskpilot.api.state import AppState
from tests.conftest import make_settings

_exporter = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def _tracer_provider() -> None:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(_exporter))


@pytest.fixture
async def traced_client(tmp_path: Path, migrated_template: Path) -> AsyncIterator[httpx.AsyncClient]:
    import shutil

    shutil.copyfile(migrated_template, tmp_path / "test.db")
    settings = make_settings(tmp_path, telemetry={"tracing": True})
    state = AppState.build(settings)
    app = create_app(settings, state=state)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        yield http


async def test_request_span_carries_request_id(traced_client: httpx.AsyncClient) -> None:
    _exporter.clear()
    response = await traced_client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    spans = [s for s in _exporter.get_finished_spans() if (s.attributes or {}).get("deskpilot.request_id")]
    assert spans, [s.name for s in _exporter.get_finished_spans()]
    assert spans[0].attributes is not None
    assert spans[0].attributes["deskpilot.request_id"] == "abc-123"
    assert spans[0].attributes["http.response.status_code"] == 200
    assert spans[0].attributes["url.path"] == "/healthz"


async def test_bad_request_ids_are_replaced(traced_client: httpx.AsyncClient) -> None:
    response = await traced_client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert response.headers["x-request-id"] != "bad id with spaces"
    assert len(response.headers["x-request-id"]) == 32
