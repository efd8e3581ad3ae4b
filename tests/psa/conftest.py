"""Fixtures: the fake ConnectWise, a loopback webhook receiver that checks signatures, and providers for them."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from deskpilot.api.state import AppState
from deskpilot.psa.connectwise import ConnectWiseCredentials, ConnectWiseProvider, ConnectWiseSettings
from deskpilot.psa.webhook import EVENT_HEADER, SIGNATURE_HEADER, verify_signature
from tests.conftest import Tenant, make_tenant
from tests.fakes._server import ScriptedServer
from tests.fakes.connectwise_server import FakeConnectWise, connectwise_server, connectwise_server_session

__all__ = ["connectwise_server", "connectwise_server_session"]

WEBHOOK_SECRET = "whsec-0123456789abcdef-secret"


@dataclass
class Delivery:
    method: str
    path: str
    query: dict[str, str]
    event: str | None
    signature_ok: bool
    raw: bytes
    body: Any


class WebhookReceiver(ScriptedServer):
    """A receiver as a customer would write one: verifies the signature on the raw body, then acts."""

    def __init__(self) -> None:
        self.secret = WEBHOOK_SECRET
        self.deliveries: list[Delivery] = []
        self.status = 200
        self.answer: Any = {"id": "ext-1"}
        self._deliveries_lock = threading.Lock()
        super().__init__()

    def build_app(self) -> Starlette:
        return Starlette(routes=[Route("/{rest:path}", self._receive, methods=["GET", "POST"])])

    def reset(self) -> None:
        super().reset()
        with self._deliveries_lock:
            self.deliveries.clear()
        self.status, self.answer = 200, {"id": "ext-1"}

    async def _receive(self, request: Request) -> Response:
        raw = await request.body()
        ok = verify_signature(self.secret, request.headers.get(SIGNATURE_HEADER), raw)
        delivery = Delivery(
            request.method, request.url.path, dict(request.query_params), request.headers.get(EVENT_HEADER), ok, raw,
            json.loads(raw) if raw else None,
        )
        with self._deliveries_lock:
            self.deliveries.append(delivery)
        if not ok:
            return PlainTextResponse("bad signature", status_code=401)
        if isinstance(self.answer, str):
            return PlainTextResponse(self.answer, status_code=self.status)
        return JSONResponse(self.answer, status_code=self.status)


@pytest.fixture(scope="session")
def webhook_receiver_session() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def webhook_receiver(webhook_receiver_session: WebhookReceiver) -> WebhookReceiver:
    webhook_receiver_session.reset()
    return webhook_receiver_session


# No PSA test logs in with a password, and Argon2 for five users per tenant would triple the suite's time.
@pytest.fixture
async def tenant_a(app_state: AppState) -> Tenant:
    return await make_tenant(app_state.db, "Acme IT", password=None)  # type: ignore[arg-type]


@pytest.fixture
async def tenant_b(app_state: AppState) -> Tenant:
    return await make_tenant(app_state.db, "Globex Support", password=None)  # type: ignore[arg-type]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


def cw_provider(
    server: FakeConnectWise, http: httpx.AsyncClient, *, timeout_s: float | None = None, **overrides: str
) -> ConnectWiseProvider:
    settings = {**server.settings(), **{k: v for k, v in overrides.items() if k in ConnectWiseSettings.model_fields}}
    credentials = {**server.credentials(), **{k: v for k, v in overrides.items() if k in ("public_key", "private_key")}}
    return ConnectWiseProvider(
        ConnectWiseSettings.model_validate(settings),
        ConnectWiseCredentials.model_validate(credentials),
        http_client=http,
        timeout_s=timeout_s,
    )


@pytest.fixture
def cw(connectwise_server: FakeConnectWise, http: httpx.AsyncClient) -> ConnectWiseProvider:
    return cw_provider(connectwise_server, http)
