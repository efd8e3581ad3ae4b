"""Without any LLM: the starter runbook drives the session over HTTP (flow mode), and nothing entered is lost."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from deskpilot.identity.models import Role
from deskpilot.settings import Settings
from tests.api.test_pilot_support import PilotApp, pilot_app, problem

API = "/api/v1"


@pytest.fixture
async def pilot(settings: Settings) -> AsyncIterator[PilotApp]:
    async with pilot_app(settings, with_llm=False) as running:
        yield running


async def test_flow_mode_walks_the_starter_runbook_resolves_and_documents(pilot: PilotApp) -> None:
    await pilot.load_starter_library(pilot.a)
    engineer = pilot.a.headers(Role.ENGINEER)
    started = await pilot.start("Outlook keeps asking for my password")
    assert started["mode"] == "flow"
    assert started["matched_flow_name"] == "Outlook keeps asking for credentials (Microsoft 365)"
    sid = started["session_id"]
    first = started["first_step"]
    assert (first["step_type"], first["content"]["flow_node_id"]) == ("question", "scope")
    assert [o["value"] for o in first["options"]] == ["web-too", "desktop-only"]

    async def answer(body: dict[str, Any]) -> dict[str, Any]:
        response = await pilot.http.post(f"{API}/sessions/{sid}/responses", json=body, headers=engineer)
        assert response.status_code == 200, response.text
        step: dict[str, Any] = response.json()["next_step"]
        return step

    step = await answer({"selected_option": "desktop-only"})
    assert step["content"]["flow_node_id"] == "recent-change"
    step = await answer({"selected_option": "password"})
    assert (step["step_type"], step["content"]["flow_node_id"]) == ("action", "clear-credentials")
    problem(await pilot.http.post(f"{API}/sessions/{sid}/responses", json={"selected_option": "maybe"},
                                  headers=engineer), 422, "unknown_option")
    step = await answer({"action_result": {"success": True, "details": "Removed two MicrosoftOffice16 entries"}})
    assert (step["content"]["type"], step["content"]["flow_node_id"]) == (
        "resolution_suggestion", "fixed-credentials")

    resolved = await pilot.http.post(f"{API}/sessions/{sid}/resolve",
                                     json={"resolution_summary": "Cleared stale cached credentials"}, headers=engineer)
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["status"] == "resolved"
    doc = (await pilot.http.get(f"{API}/sessions/{sid}/documentation", headers=engineer)).json()
    assert [s["engineer_response"] for s in doc["diagnostic_steps"][:2]] == [
        "Only desktop Outlook", "Password changed recently"]
    assert doc["diagnostic_steps"][2]["outcome"] == "Succeeded — Removed two MicrosoftOffice16 entries"
    assert doc["resolution_summary"] == "Cleared stale cached credentials"
    markdown = await pilot.http.get(f"{API}/sessions/{sid}/documentation?format=markdown", headers=engineer)
    assert "### Step 3: " in markdown.text
    # The runbook's success rate counts this resolution (FP-036).
    flow = await pilot.http.get(f"{API}/flows/{started['matched_flow_id']}", headers=engineer)
    assert flow.json()["resolved_count"] == 1


async def test_no_llm_and_no_flow_is_503_with_the_session_id_and_the_intake_is_kept(pilot: PilotApp) -> None:
    engineer = pilot.a.headers(Role.ENGINEER)
    text = "The coffee machine on floor 3 shows error E42"
    refused = await pilot.http.post(f"{API}/sessions", json={"text": text, "log_content": "E42 at 09:14"},
                                    headers=engineer)
    body = problem(refused, 503, "no_llm_no_flow")
    assert "DESKPILOT_LLM__DEFAULT_MODEL" in body["detail"]
    sid = body["session_id"]
    detail = await pilot.detail(sid)
    assert detail["intake"] == {"text": text, "log_content": "E42 at 09:14"}
    assert (detail["awaiting_generation"], detail["generation_error"], detail["steps"]) == (
        True, "llm_not_configured", [])
    assert [s["id"] for s in (await pilot.http.get(f"{API}/sessions", headers=engineer)).json()] == [sid]
    # Retrying still has neither, and says so again.
    problem(await pilot.http.post(f"{API}/sessions/{sid}/retry", headers=engineer), 503, "no_llm_no_flow")


async def test_communications_without_an_llm_say_what_to_configure(pilot: PilotApp) -> None:
    """FP-047/FP-051 need a model: 503 `llm_not_configured` naming the setting, and nothing is stored."""
    await pilot.load_starter_library(pilot.a)
    engineer = pilot.a.headers(Role.ENGINEER)
    sid = (await pilot.start("Outlook keeps asking for my password"))["session_id"]
    update = await pilot.http.post(f"{API}/sessions/{sid}/status-updates", json={"audience": "client_update"},
                                   headers=engineer)
    assert "DESKPILOT_LLM__DEFAULT_MODEL" in problem(update, 503, "llm_not_configured")["detail"]
    notes = await pilot.http.get(f"{API}/sessions/{sid}/ticket-notes", headers=engineer)
    assert "DESKPILOT_LLM__DEFAULT_MODEL" in problem(notes, 503, "llm_not_configured")["detail"]
    assert (await pilot.detail(sid))["step_count"] == 1
