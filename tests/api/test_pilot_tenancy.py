"""Cross-account isolation of every session URL (FP-034) and 403 for engineers of the same account (FP-033)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from deskpilot.identity.models import Role
from deskpilot.settings import Settings
from tests.api.test_pilot_support import PilotApp, pilot_app, problem
from tests.pilot.conftest import action, fork, question
from tests.tenancy import assert_invisible_to_other_account

API = "/api/v1"


@pytest.fixture
async def pilot(settings: Settings) -> AsyncIterator[PilotApp]:
    async with pilot_app(settings) as running:
        yield running


async def forked_session(pilot: PilotApp) -> tuple[str, str]:
    """A session of account A that has forked: its id and the id of its active branch."""
    pilot.desk.add(question(), action(), fork("Token broker", "Outlook profile"))
    sid: str = (await pilot.start())["session_id"]
    engineer = pilot.a.headers(Role.ENGINEER)
    await pilot.http.post(f"{API}/sessions/{sid}/responses", json={"selected_option": "desktop"}, headers=engineer)
    turn = await pilot.http.post(f"{API}/sessions/{sid}/responses", json={"action_result": {"success": False}},
                                 headers=engineer)
    assert turn.status_code == 200, turn.text
    branch_id: str = turn.json()["active_branch_id"]
    return sid, branch_id


def session_requests(sid: str, branch_id: str) -> list[tuple[str, str, object | None]]:
    """Every operation on one session: method, URL and a valid body."""
    base = f"{API}/sessions/{sid}"
    branch = f"{base}/branches/{branch_id}"
    return [
        ("GET", base, None),
        ("GET", f"{base}/documentation", None),
        ("GET", f"{base}/documentation?format=markdown", None),
        ("GET", f"{base}/branches", None),
        ("GET", f"{base}/ticket-notes", None),
        ("POST", f"{base}/responses", {"selected_option": branch_id}),
        ("POST", f"{base}/retry", None),
        ("POST", f"{base}/pause", None),
        ("POST", f"{base}/resume", None),
        ("POST", f"{base}/abandon", {"reason": "mine now"}),
        ("POST", f"{base}/resolve", {"resolution_summary": "Fixed it"}),
        ("POST", f"{base}/escalate", {"reason": "Help"}),
        ("POST", f"{base}/pickup", {"resume_mode": "continue"}),
        ("POST", f"{base}/rate", {"rating": 1}),
        ("PUT", f"{base}/ticket", {"psa_connection_id": str(uuid.uuid4()), "psa_ticket_id": "4711"}),
        ("POST", f"{base}/status-updates", {"audience": "client_update"}),
        ("POST", f"{branch}/switch", None),
        ("PATCH", branch, {"status": "dead_end"}),
        ("POST", f"{branch}/revive", {"evidence": "New evidence"}),
    ]


async def test_fp034_every_session_url_is_404_for_another_account_and_changes_nothing(pilot: PilotApp) -> None:
    sid, branch_id = await forked_session(pilot)
    a, b = pilot.a, pilot.b
    owner = a.headers(Role.ENGINEER)
    before = await pilot.detail(sid)
    model_requests = len(pilot.desk.requests)
    for url in (f"{API}/sessions/{sid}", f"{API}/sessions/{sid}/branches"):
        await assert_invisible_to_other_account(pilot.http, url, owner_headers=owner,
                                                other_headers=b.headers(Role.OWNER))
    for role in (Role.OWNER, Role.ENGINEER):
        for method, url, body in session_requests(sid, branch_id):
            response = await pilot.http.request(method, url, json=body, headers=b.headers(role))
            problem(response, 404, "session_not_found")
    # Nothing changed, no model was asked, and nothing of A's shows up in B's lists.
    assert await pilot.detail(sid) == before
    assert len(pilot.desk.requests) == model_requests
    assert (await pilot.http.get(f"{API}/sessions", headers=b.headers(Role.OWNER))).json() == []
    assert (await pilot.http.get(f"{API}/escalations", headers=b.headers(Role.OWNER))).json() == []
    # The owner still reaches every read.
    for method, url, _ in session_requests(sid, branch_id)[:4]:
        assert (await pilot.http.request(method, url, headers=owner)).status_code == 200, url


async def test_fp033_another_engineer_of_the_account_gets_403(pilot: PilotApp) -> None:
    sid, branch_id = await forked_session(pilot)
    before = await pilot.detail(sid)
    model_requests = len(pilot.desk.requests)
    # The lead is in the same account and team, but the session is neither theirs nor escalated.
    lead = pilot.a.headers(Role.LEAD)
    for method, url, body in session_requests(sid, branch_id):
        response = await pilot.http.request(method, url, json=body, headers=lead)
        assert problem(response, 403, "session_access_denied")["detail"] == "Not authorized to access this session"
    assert await pilot.detail(sid) == before
    assert len(pilot.desk.requests) == model_requests
