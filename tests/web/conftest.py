"""Console test helpers: signing in over HTTP, and a live uvicorn server on loopback for browser tests."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn

from deskpilot.api.app import create_app
from deskpilot.api.state import AppState
from deskpilot.identity.models import Role
from deskpilot.knowledge import service as knowledge
from deskpilot.llm import LLM
from deskpilot.security import passwords
from tests.conftest import Tenant, cheap_hasher, create_schema, make_settings, make_tenant

T = TypeVar("T")

PASSWORD = "correct-horse-battery"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def email_of(role: Role, slug: str = "acme-it") -> str:
    return f"{role.value}@{slug}.example"


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "page has no CSRF field"
    return found.group(1)


async def login(client: httpx.AsyncClient, role: Role = Role.OWNER, slug: str = "acme-it") -> str:
    """Sign in through the login form; returns the CSRF token of the new session."""
    client.cookies.clear()
    response = await client.post("/login", data={"email": email_of(role, slug), "password": PASSWORD})
    assert response.status_code == 303, response.text
    page = await client.get("/settings/profile")
    assert page.status_code == 200
    return csrf_of(page.text)


@dataclass
class LiveServer:
    """The real app under uvicorn in a background thread, with its own event loop and SQLite file."""

    url: str
    state: AppState
    tenant: Tenant
    loop: asyncio.AbstractEventLoop

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the server's loop (its database engine and pub/sub live there)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=15)


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with pytest.MonkeyPatch.context() as patch:
        # Module-scoped, so it starts before the per-test cheap hashing; the tenant's users need it too.
        patch.setattr(passwords, "_hasher", cheap_hasher())
        yield from _live_server(tmp_path_factory)


def _live_server(
    tmp_path_factory: pytest.TempPathFactory, *, llm: LLM | None = None, starter_library: bool = False
) -> Iterator[LiveServer]:
    """The app under uvicorn on loopback, on a fresh SQLite file with one tenant; optionally a scripted LLM
    and the knowledge starter library."""
    settings = make_settings(tmp_path_factory.mktemp("live"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    ready: dict[str, Any] = {}
    failed: list[BaseException] = []

    async def serve() -> None:
        state = AppState.build(settings, llm=llm)
        await create_schema(state.db)
        ready["tenant"] = tenant = await make_tenant(state.db, "Acme IT")
        if starter_library:
            async with state.db.session(tenant.account_id) as session:
                await knowledge.load_starter_library(session, tenant.account_id)
                await session.commit()
        ready["state"] = state
        ready["loop"] = asyncio.get_running_loop()
        # log_config=None leaves the test run's logging alone; the short graceful timeout ends open SSE streams.
        config = uvicorn.Config(create_app(settings, state=state), log_config=None, ws="none", lifespan="on",
                                timeout_graceful_shutdown=1)
        ready["server"] = server = uvicorn.Server(config)
        await server.serve(sockets=[sock])

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as e:  # surfaced by the fixture below instead of a thread warning
            failed.append(e)

    thread = threading.Thread(target=run, name="deskpilot-live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not (ready.get("server") and ready["server"].started):
        if failed or not thread.is_alive():
            raise RuntimeError("live server did not start") from (failed[0] if failed else None)
        if time.monotonic() > deadline:
            raise TimeoutError("live server did not start within 20 s")
        time.sleep(0.02)
    yield LiveServer(url=f"http://127.0.0.1:{port}", state=ready["state"], tenant=ready["tenant"], loop=ready["loop"])
    ready["server"].should_exit = True
    thread.join(timeout=15)
    sock.close()
    assert not failed, failed


ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling out, which this closed network refuses.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def require_chromium() -> None:
    """Skip the calling browser-test module without Debian's Chromium; CI's flag turns the skip into a failure."""
    if CHROMIUM.exists():
        return
    if os.environ.get("DESKPILOT_REQUIRE_SERVICES") == "1":  # noqa: TID251
        raise RuntimeError(f"{CHROMIUM} is missing and DESKPILOT_REQUIRE_SERVICES=1")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)

