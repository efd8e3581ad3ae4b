"""Escalation over HTTP: the self-escalation guard, the team queue, pickup with a briefing, FP-033 access."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from deskpilot.identity.models import Role
from deskpilot.settings import Settings
from tests.api.test_pilot_support import INSIGHTS, PilotApp, pilot_app, problem
from tests.pilot.conftest import action, question

API = "/api/v1"


@pytest.fixture
async def pilot(settings: Settings) -> AsyncIterator[PilotApp]:
    async with pilot_app(settings) as running:
        yield running


async def answered_session(pilot: PilotApp) -> str:
    pilot.desk.add(question(), action())
    sid: str = (await pilot.start())["session_id"]
    turn = await pilot.http.post(f"{API}/sessions/{sid}/responses", json={"selected_option": "desktop"},
                                 headers=pilot.a.headers(Role.ENGINEER))
    assert turn.status_code == 200, turn.text
    return sid


async def queue(pilot: PilotApp, role: Role) -> list[str]:
    response = await pilot.http.get(f"{API}/escalations", headers=pilot.a.headers(role))
    assert response.status_code == 200, response.text
    return [s["id"] for s in response.json()]


async def test_fp038_escalating_to_yourself_is_409_use_pause_instead(pilot: PilotApp) -> None:
    sid = await answered_session(pilot)
    refused = await pilot.http.post(
        f"{API}/sessions/{sid}/escalate",
        json={"reason": "Stuck", "target_user_id": str(pilot.a.users[Role.ENGINEER])},
        headers=pilot.a.headers(Role.ENGINEER),
    )
    body = problem(refused, 409, "self_escalation")
    assert body["detail"] == "Cannot escalate a session to yourself. Use pause instead."
    assert (await pilot.detail(sid))["status"] == "active"


async def test_fp033_fp038_fp041_team_escalation_queue_and_pickup(pilot: PilotApp) -> None:
    """FP-038 escalate to the team, FP-039 package, FP-041/FP-042 pickup with a briefing, FP-033 team access."""
    sid = await answered_session(pilot)
    a = pilot.a
    # Before the escalation a teammate may not see the session (FP-033): 403 inside the account.
    problem(await pilot.http.get(f"{API}/sessions/{sid}", headers=a.headers(Role.ADMIN)), 403,
            "session_access_denied")
    escalated = await pilot.http.post(f"{API}/sessions/{sid}/escalate", json={"reason": "Out of ideas"},
                                      headers=a.headers(Role.ENGINEER))
    assert escalated.status_code == 200, escalated.text
    body = escalated.json()
    assert body["status"] == "requesting_escalation"
    assert body["escalated_to_id"] is None
    assert sorted(body["notified_user_ids"]) == sorted(
        str(a.users[r]) for r in (Role.ADMIN, Role.LEAD, Role.VIEWER))  # the owner is in no team
    assert body["package"]["remaining_hypotheses"] == INSIGHTS["remaining_hypotheses"]
    assert body["package"]["steps_tried"][0]["response"] == "Desktop only"

    # The team's queue shows it; another account's does not.
    assert await queue(pilot, Role.LEAD) == [sid]
    other = await pilot.http.get(f"{API}/escalations", headers=pilot.b.headers(Role.LEAD))
    assert other.json() == []
    bell = await pilot.http.get(f"{API}/notifications", headers=a.headers(Role.LEAD))
    assert [n["kind"] for n in bell.json()] == ["session.escalated"]
    # While it requests escalation any teammate may read it (FP-033).
    assert (await pilot.detail(sid, Role.ADMIN))["status"] == "requesting_escalation"

    # The engineer who escalated it cannot pick it up (FP-041).
    own = await pilot.http.post(f"{API}/sessions/{sid}/pickup", headers=a.headers(Role.ENGINEER))
    assert problem(own, 409, "own_session_pickup")["detail"] == "Cannot pick up your own escalated session"

    # Another engineer picks it up: a briefing step, then the next step (FP-042).
    pilot.desk.add(action("Run dsregcmd /status"))
    picked = await pilot.http.post(f"{API}/sessions/{sid}/pickup", json={"resume_mode": "continue"},
                                   headers=a.headers(Role.LEAD))
    assert picked.status_code == 200, picked.text
    result = picked.json()
    briefing = result["briefing"]
    assert briefing["content"]["type"] == "briefing"
    assert "Out of ideas" in briefing["content"]["text"]
    assert result["turn"]["next_step"]["content"]["text"] == "Run dsregcmd /status"
    assert result["turn"]["status"] == "active"
    assert pilot.desk.requests[-1].messages[-1].content.startswith("[Picking up escalated session] I've reviewed")

    # Once picked up, access is the parties' again: the picker and the owner, not the rest of the team.
    assert (await pilot.detail(sid, Role.LEAD))["picked_up_by_id"] == str(a.users[Role.LEAD])
    assert (await pilot.detail(sid, Role.ENGINEER))["status"] == "active"
    problem(await pilot.http.get(f"{API}/sessions/{sid}", headers=a.headers(Role.ADMIN)), 403,
            "session_access_denied")
    assert await queue(pilot, Role.ADMIN) == []
    listed = await pilot.http.get(f"{API}/sessions", headers=a.headers(Role.LEAD))
    assert [s["id"] for s in listed.json()] == [sid]
    owner_bell = await pilot.http.get(f"{API}/notifications", headers=a.headers(Role.ENGINEER))
    assert [n["kind"] for n in owner_bell.json()] == ["session.picked_up"]


async def test_fp038_escalation_to_one_engineer_reaches_their_queue(pilot: PilotApp) -> None:
    sid = await answered_session(pilot)
    lead = pilot.a.users[Role.LEAD]
    escalated = await pilot.http.post(f"{API}/sessions/{sid}/escalate",
                                      json={"reason": "Needs Exchange rights", "target_user_id": str(lead)},
                                      headers=pilot.a.headers(Role.ENGINEER))
    assert escalated.status_code == 200, escalated.text
    assert escalated.json()["notified_user_ids"] == [str(lead)]
    assert await queue(pilot, Role.LEAD) == [sid]
    # The target may read it and take it over with a fresh start of their own.
    assert (await pilot.detail(sid, Role.LEAD))["escalated_to_id"] == str(lead)
    pilot.desk.add(question("Which mailbox permissions does the user hold?"))
    picked = await pilot.http.post(
        f"{API}/sessions/{sid}/pickup",
        json={"resume_mode": "fresh", "additional_context": "User is a delegate of the CEO mailbox"},
        headers=pilot.a.headers(Role.LEAD),
    )
    assert picked.status_code == 200, picked.text
    assert pilot.desk.requests[-1].messages[-1].content == (
        "[Picking up escalated session] User is a delegate of the CEO mailbox")
    refused = await pilot.http.post(f"{API}/sessions/{sid}/pickup", json={"resume_mode": "later"},
                                    headers=pilot.a.headers(Role.LEAD))
    problem(refused, 422, "validation_failed")
