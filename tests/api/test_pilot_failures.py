"""Bad input and failures over HTTP: wrong state, unknown options, races, model failures, oversized bodies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from deskpilot.api.routes.pilot import MAX_BODY_BYTES
from deskpilot.identity.models import Role
from deskpilot.llm.testing import Reply
from deskpilot.settings import Settings
from tests.api.test_pilot_support import PilotApp, pilot_app, problem
from tests.pilot.conftest import action, question

API = "/api/v1"


@pytest.fixture
async def pilot(settings: Settings) -> AsyncIterator[PilotApp]:
    async with pilot_app(settings) as running:
        yield running


async def started(pilot: PilotApp) -> str:
    pilot.desk.add(question())
    sid: str = (await pilot.start())["session_id"]
    return sid


async def test_fp031_respond_to_a_paused_session_is_409_with_the_rules_message(pilot: PilotApp) -> None:
    engineer = pilot.a.headers(Role.ENGINEER)
    sid = await started(pilot)
    await pilot.http.post(f"{API}/sessions/{sid}/pause", headers=engineer)
    refused = await pilot.http.post(f"{API}/sessions/{sid}/responses", json={"selected_option": "web"},
                                    headers=engineer)
    assert problem(refused, 409, "invalid_session_state")["detail"] == "Session is paused, not active"
    assert (await pilot.detail(sid))["steps"][0]["responded_at"] is None


async def test_fp031_resume_an_active_session_is_409_with_the_rules_message(pilot: PilotApp) -> None:
    sid = await started(pilot)
    refused = await pilot.http.post(f"{API}/sessions/{sid}/resume", headers=pilot.a.headers(Role.ENGINEER))
    assert problem(refused, 409, "invalid_session_state")["detail"] == "Cannot resume session in status: active"


async def test_fp031_closed_and_unescalated_sessions_refuse_lifecycle_actions(pilot: PilotApp) -> None:
    sid = await started(pilot)
    base = f"{API}/sessions/{sid}"
    pickup = await pilot.http.post(f"{base}/pickup", headers=pilot.a.headers(Role.ENGINEER))
    assert problem(pickup, 409, "invalid_session_state")["detail"] == "Session is active, not requesting_escalation"
    await pilot.http.post(f"{base}/abandon", headers=pilot.a.headers(Role.ENGINEER))
    again = await pilot.http.post(f"{base}/abandon", headers=pilot.a.headers(Role.ENGINEER))
    assert problem(again, 409, "invalid_session_state")["detail"] == "Cannot close session in status: abandoned"


async def test_fp025_unknown_option_is_422(pilot: PilotApp) -> None:
    sid = await started(pilot)
    refused = await pilot.http.post(f"{API}/sessions/{sid}/responses", json={"selected_option": "printer"},
                                    headers=pilot.a.headers(Role.ENGINEER))
    problem(refused, 422, "unknown_option")
    detail = await pilot.detail(sid)
    assert detail["steps"][0]["responded_at"] is None
    assert detail["current_step_id"] == detail["steps"][0]["step_id"]


async def test_bodies_are_validated_and_refuse_unknown_fields(pilot: PilotApp) -> None:
    sid = await started(pilot)
    engineer = pilot.a.headers(Role.ENGINEER)
    extra = await pilot.http.post(f"{API}/sessions/{sid}/responses", json={"selected_option": "web", "force": True},
                                  headers=engineer)
    assert [e["field"] for e in problem(extra, 422, "validation_failed")["errors"]] == ["force"]
    bad_mark = await pilot.http.patch(f"{API}/sessions/{sid}/branches/{sid}", json={"status": "maybe"},
                                      headers=engineer)
    problem(bad_mark, 422, "validation_failed")
    not_json = await pilot.http.post(f"{API}/sessions", content=b"{", headers={**engineer,
                                                                              "content-type": "application/json"})
    problem(not_json, 422, "validation_failed")
    problem(await pilot.http.get(f"{API}/sessions/not-a-uuid", headers=engineer), 422, "validation_failed")
    problem(await pilot.http.post(f"{API}/sessions", json={"text": "  "}, headers=engineer), 422, "intake_empty")


async def test_fp025_concurrent_responses_to_one_step_one_wins_the_other_gets_409(pilot: PilotApp) -> None:
    sid = await started(pilot)
    engineer = pilot.a.headers(Role.ENGINEER)
    step_id = (await pilot.detail(sid))["steps"][0]["step_id"]
    # The winner's model call takes a moment, so the second answer arrives while the first is in flight.
    pilot.desk.add(Reply(text=action().text, delay_s=0.05))
    url = f"{API}/sessions/{sid}/responses"
    first, second = await asyncio.gather(
        pilot.http.post(url, json={"step_id": step_id, "selected_option": "web"}, headers=engineer),
        pilot.http.post(url, json={"step_id": step_id, "selected_option": "desktop"}, headers=engineer),
    )
    assert sorted([first.status_code, second.status_code]) == [200, 409], (first.text, second.text)
    loser = first if first.status_code == 409 else second
    problem(loser, 409, "step_already_answered")
    detail = await pilot.detail(sid)
    assert len(detail["steps"]) == 2
    assert detail["steps"][0]["selected_option"] in ("web", "desktop")


async def test_fp004_malformed_output_twice_is_502_the_answer_is_kept_and_retry_continues(pilot: PilotApp) -> None:
    sid = await started(pilot)
    engineer = pilot.a.headers(Role.ENGINEER)
    pilot.desk.add("this is not json", Reply.json({"type": "question", "content": ""}))
    failed = await pilot.http.post(f"{API}/sessions/{sid}/responses", json={"selected_option": "web"},
                                   headers=engineer)
    body = problem(failed, 502, "step_generation_failed")
    assert (body["session_id"], body["cause"]) == (sid, "llm_invalid_output")
    # Recorded for debugging: the failed structured call is in the call log with its error.
    assert pilot.recorder.last.purpose == "pilot_step"
    assert pilot.recorder.last.error_code == "llm_invalid_output"
    detail = await pilot.detail(sid)
    assert detail["steps"][0]["selected_option"] == "web"
    assert detail["steps"][0]["responded_at"] is not None
    assert (detail["awaiting_generation"], detail["generation_error"]) == (True, "llm_invalid_output")
    pending = await pilot.http.post(f"{API}/sessions/{sid}/responses", json={"selected_option": "web"},
                                    headers=engineer)
    problem(pending, 409, "generation_pending")
    pilot.desk.add(action("Check the token broker"))
    retried = await pilot.http.post(f"{API}/sessions/{sid}/retry", headers=engineer)
    assert retried.status_code == 200, retried.text
    assert retried.json()["next_step"]["content"]["text"] == "Check the token broker"
    assert pilot.desk.requests[-1].messages[-1].content == "Selected: Yes, web too"
    problem(await pilot.http.post(f"{API}/sessions/{sid}/retry", headers=engineer), 409, "no_generation_pending")


async def test_a_10_mb_body_is_refused_with_413_before_it_is_read(pilot: PilotApp) -> None:
    engineer = pilot.a.headers(Role.ENGINEER)
    declared = await pilot.http.post(f"{API}/sessions", content=b"x" * (10 * 1024 * 1024),
                                     headers={**engineer, "content-type": "application/json"})
    assert str(MAX_BODY_BYTES) in problem(declared, 413, "payload_too_large")["detail"]
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(160):
            sent += 1
            yield b"x" * (64 * 1024)

    # No Content-Length (chunked): reading stops at the limit, the rest of the 10 MB is never pulled.
    chunked = await pilot.http.post(f"{API}/sessions", content=chunks(),
                                    headers={**engineer, "content-type": "application/json"})
    problem(chunked, 413, "payload_too_large")
    assert sent <= MAX_BODY_BYTES // (64 * 1024) + 1
    assert (await pilot.http.get(f"{API}/sessions", headers=engineer)).json() == []
    assert pilot.desk.requests == []


async def test_fp013_an_intake_over_100_kb_gets_the_services_clear_message(pilot: PilotApp) -> None:
    engineer = pilot.a.headers(Role.ENGINEER)
    refused = await pilot.http.post(f"{API}/sessions", json={"text": "Server down", "log_content": "x" * 150_000},
                                    headers=engineer)
    body = problem(refused, 422, "intake_too_large")
    assert "at most 100 KB" in body["detail"]
    assert body["limit_bytes"] == 100 * 1024
    assert (await pilot.http.get(f"{API}/sessions", headers=engineer)).json() == []


async def test_unknown_session_is_404(pilot: PilotApp) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    engineer = pilot.a.headers(Role.ENGINEER)
    problem(await pilot.http.get(f"{API}/sessions/{missing}", headers=engineer), 404, "session_not_found")
    problem(await pilot.http.post(f"{API}/sessions/{missing}/pause", headers=engineer), 404, "session_not_found")
    problem(await pilot.http.get(f"{API}/sessions", headers={}), 401, "authentication_required")
