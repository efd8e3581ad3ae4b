"""GET /api/v1/usage: tokens and cost per session, client and model, scoped to the account."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from deskpilot.api.app import create_app
from deskpilot.api.state import AppState
from deskpilot.identity.models import Role
from deskpilot.llm.models import LLMCall
from deskpilot.storage import Database
from tests.conftest import Tenant, make_settings, make_tenant

PRICES = {"openai:gpt-4o-mini": {"input_per_mtok": "0.15", "output_per_mtok": "0.60"}}


Priced = tuple[httpx.AsyncClient, AppState, Tenant, Tenant]


@pytest.fixture
async def priced(tmp_path: Path, migrated_template: Path) -> AsyncIterator[Priced]:
    shutil.copyfile(migrated_template, tmp_path / "test.db")
    settings = make_settings(tmp_path, llm={"prices": PRICES})
    state = AppState.build(settings)
    a, b = await make_tenant(state.db, "Acme IT"), await make_tenant(state.db, "Globex Support")
    app = create_app(settings, state=state)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        yield http, state, a, b


async def _calls(db: Database, tenant: Tenant, subject: uuid.UUID, n: int) -> None:
    async with db.session(tenant.account_id) as session:
        for _ in range(n):
            session.add(LLMCall(purpose="pilot_step", model="openai:gpt-4o-mini", messages=[], input_tokens=1_000,
                                output_tokens=500, subject_type="pilot_session", subject_id=str(subject)))
        await session.commit()


async def test_cost_per_session_and_cross_account(
    priced: Priced,
) -> None:
    http, state, a, b = priced
    session_a, session_b = uuid.uuid4(), uuid.uuid4()
    await _calls(state.db, a, session_a, 4)
    await _calls(state.db, b, session_b, 1)

    one = await http.get("/api/v1/usage", params={"subject_id": str(session_a)}, headers=a.headers(Role.LEAD))
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["total_input_tokens"] == 4_000
    assert body["total_output_tokens"] == 2_000
    assert body["total_cost_usd"] == "0.001800"

    by_subject = (await http.get("/api/v1/usage", params={"group_by": "subject"}, headers=a.headers())).json()
    assert [r["key"] for r in by_subject["rows"]] == [str(session_a)]  # B's session never shows up

    other = (await http.get("/api/v1/usage", params={"subject_id": str(session_a)}, headers=b.headers())).json()
    assert other["rows"] == []
    assert other["total_cost_usd"] is None


async def test_engineers_cannot_read_spend(priced: Priced) -> None:
    http, _, a, _ = priced
    response = await http.get("/api/v1/usage", headers=a.headers(Role.ENGINEER))
    assert response.status_code == 403
    bad = await http.get("/api/v1/usage", params={"group_by": "planet"}, headers=a.headers())
    assert bad.status_code == 422
