"""A whole guided session over HTTP with a scripted model: turns, forks, resolve, documentation, communications."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from deskpilot.identity.models import Role
from deskpilot.jobs import InProcessBackend
from deskpilot.pilot import communications
from deskpilot.settings import Settings
from tests.api.test_pilot_support import AUDIENCE_OPENINGS, PilotApp, parse_sse, pilot_app, problem
from tests.pilot.conftest import action, fork, question, resolution

API = "/api/v1"


@pytest.fixture
async def pilot(settings: Settings) -> AsyncIterator[PilotApp]:
    async with pilot_app(settings) as running:
        yield running


async def test_fp022_fp027_fp028_fp046_fp049_fp051_a_whole_session(pilot: PilotApp) -> None:
    http, desk = pilot.http, pilot.desk
    engineer = pilot.a.headers(Role.ENGINEER)

    # Start (FP-022): classification, then the first step.
    desk.add(question())
    started = await http.post(f"{API}/sessions", json={"text": "Outlook keeps asking for the password"},
                              headers=engineer)
    assert started.status_code == 201, started.text
    body = started.json()
    sid = body["session_id"]
    assert started.headers["location"] == f"{API}/sessions/{sid}"
    assert (body["mode"], body["status"], body["problem_domain"]) == ("ai", "active", "m365")
    first = body["first_step"]
    assert first["step_type"] == "question"
    assert [o["value"] for o in first["options"]] == ["web", "desktop"]

    # Answer with an option (FP-025/FP-027): the next step is an action.
    desk.add(action())
    turn = await http.post(f"{API}/sessions/{sid}/responses",
                           json={"step_id": first["step_id"], "selected_option": "desktop"}, headers=engineer)
    assert turn.status_code == 200, turn.text
    step = turn.json()["next_step"]
    assert (step["step_type"], step["content"]["action_type"]) == ("action", "instruction")
    assert desk.requests[-1].messages[-1].content == "Selected: Desktop only"

    # "Didn't work" with details: the model forks into two hypotheses (FP-028).
    desk.add(fork("Token broker", "Outlook profile"))
    turn = await http.post(f"{API}/sessions/{sid}/responses",
                           json={"action_result": {"success": False, "details": "Still prompts after clearing"}},
                           headers=engineer)
    assert turn.status_code == 200, turn.text
    assert "Details: Still prompts after clearing" in desk.requests[-1].messages[-1].content
    fork_step = turn.json()["next_step"]
    assert fork_step["is_fork_point"]
    token_id, profile_id = (b["branch_id"] for b in fork_step["content"]["fork_branches"])
    assert turn.json()["active_branch_id"] == token_id

    # The branch map, then switch to the second hypothesis (answers the fork, FP-029).
    tree = (await http.get(f"{API}/sessions/{sid}/branches", headers=engineer)).json()
    assert [(c["label"], c["status"], c["is_active"]) for c in tree[0]["children"]] == [
        ("Token broker", "active", True), ("Outlook profile", "untried", False)]
    desk.add(question("Does a new Outlook profile connect?", options=(("Yes", "yes"), ("No", "no"))))
    switched = await http.post(f"{API}/sessions/{sid}/branches/{profile_id}/switch", headers=engineer)
    assert switched.status_code == 200, switched.text
    assert switched.json()["active_branch_id"] == profile_id

    # Dead end: the session moves to the open sibling, which waits for its first step.
    marked = await http.patch(f"{API}/sessions/{sid}/branches/{profile_id}", json={"status": "dead_end"},
                              headers=engineer)
    assert marked.status_code == 200, marked.text
    assert {c["label"]: c["status"] for c in marked.json()[0]["children"]} == {
        "Token broker": "active", "Outlook profile": "dead_end"}
    detail = await pilot.detail(sid)
    assert (detail["active_branch_id"], detail["awaiting_generation"]) == (token_id, True)
    closed = await http.post(f"{API}/sessions/{sid}/branches/{profile_id}/switch", headers=engineer)
    problem(closed, 409, "branch_closed")

    # Revive it with new evidence: a new step on that branch.
    desk.add(question("Does the prompt appear with the old profile only?", options=(("Yes", "y"), ("No", "n"))))
    revived = await http.post(f"{API}/sessions/{sid}/branches/{profile_id}/revive",
                              json={"evidence": "The prompt only appears with the old profile"}, headers=engineer)
    assert revived.status_code == 200, revived.text
    assert revived.json()["active_branch_id"] == profile_id
    assert desk.requests[-1].messages[-1].content.startswith("[Branch reopened] New evidence:")
    tree = (await http.get(f"{API}/sessions/{sid}/branches", headers=engineer)).json()
    assert {c["label"]: c["status"] for c in tree[0]["children"]}["Outlook profile"] == "revived"

    # A resolution suggestion, then resolve (FP-035..FP-037).
    desk.add(resolution("The old Outlook profile was corrupt; a new profile fixed it"))
    turn = await http.post(f"{API}/sessions/{sid}/responses", json={"selected_option": "y"}, headers=engineer)
    assert turn.status_code == 200, turn.text
    assert turn.json()["resolution_suggested"]
    resolved = await http.post(f"{API}/sessions/{sid}/resolve",
                               json={"resolution_summary": "New Outlook profile", "rating": 5}, headers=engineer)
    assert resolved.status_code == 200, resolved.text
    closed_body = resolved.json()
    assert (closed_body["status"], closed_body["psa_push_status"]) == ("resolved", "no_psa")
    assert closed_body["documentation"]["resolution_summary"] == "New Outlook profile"
    # The flywheel job asks the model too; let it finish so each request checked below is the one just made.
    assert isinstance(pilot.state.jobs, InProcessBackend)
    await pilot.state.jobs.join(timeout_s=5)

    # Documentation (FP-046) as JSON and as markdown.
    doc = await http.get(f"{API}/sessions/{sid}/documentation", headers=engineer)
    assert doc.status_code == 200
    doc_body = doc.json()
    assert doc_body["diagnostic_steps"][0]["engineer_response"] == "Desktop only"
    assert doc_body["diagnostic_steps"][1]["outcome"] == "Did not resolve — Still prompts after clearing"
    assert doc_body["follow_up_recommendations"] == ["Watch for 24 hours"]
    assert doc_body["duration_display"].endswith(" hrs")
    markdown = await http.get(f"{API}/sessions/{sid}/documentation", params={"format": "markdown"},
                              headers=engineer)
    assert markdown.status_code == 200
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert markdown.text.startswith("# Outlook keeps prompting for a password\n")
    assert "## Resolution\n\nNew Outlook profile" in markdown.text

    # A status update for each audience (FP-047..FP-049), each stored as a step.
    steps_before = (await pilot.detail(sid))["step_count"]
    for audience, opening in AUDIENCE_OPENINGS.items():
        created = await http.post(f"{API}/sessions/{sid}/status-updates",
                                  json={"audience": audience, "length": "full", "context": "resolution"},
                                  headers=engineer)
        assert created.status_code == 201, created.text
        update = created.json()
        assert update["content"] == f"{audience} update: the password prompts are fixed."
        assert (update["audience"], update["context"], update["session_status"]) == (audience, "resolution",
                                                                                      "resolved")
        assert update["time_spent_display"].endswith(" hrs")
        assert update["steps_completed"] >= 3
        system, user = (m.content for m in desk.requests[-1].messages)
        assert system.startswith(opening)
        assert "Resolution: New Outlook profile" in user
    detail = await pilot.detail(sid)
    assert detail["step_count"] == steps_before + 4
    stored = [s for s in detail["steps"] if s["step_type"] == "status_update"]
    assert [s["content"]["audience"] for s in stored] == list(AUDIENCE_OPENINGS)
    assert stored[-1]["content"]["generated_content"].startswith("email_draft update")

    # Ticket notes over SSE (FP-051): deltas with ids, then exactly the four sections.
    notes = await http.get(f"{API}/sessions/{sid}/ticket-notes", headers=engineer)
    assert notes.status_code == 200
    assert notes.headers["content-type"].startswith("text/event-stream")
    frames = parse_sse(notes.text)
    assert [f["id"] for f in frames] == [str(n) for n in range(1, len(frames) + 1)]
    assert {f["event"] for f in frames[:-1]} == {"delta"}
    assert frames[-1]["event"] == "done"
    streamed = "".join(f["data"]["text"] for f in frames[:-1])
    assert streamed == desk.notes_reply.text
    final = frames[-1]["data"]
    headings = [line for line in final["notes"].splitlines() if line.startswith("#")]
    assert headings == [f"## {s}" for s in communications.TICKET_NOTES_SECTIONS]
    assert final["usage"] == {"input_tokens": 300, "output_tokens": 80, "model": "test:desk"}
    assert final["streamed"] is True
    assert desk.streams_opened == desk.streams_closed == 1

    # The knowledge flywheel drafted a runbook from the resolved session (FP-035).
    assert (await pilot.detail(sid))["analysis_status"] == "done"
    drafts = await http.get(f"{API}/flows", params={"source": "flywheel"}, headers=engineer)
    assert [(f["name"], f["status"]) for f in drafts.json()] == [
        ("Outlook asks for the password again and again", "draft")]


async def test_list_sessions_filters_by_status_and_limit(pilot: PilotApp) -> None:
    engineer = pilot.a.headers(Role.ENGINEER)
    pilot.desk.add(question(), question())
    first = await pilot.start("Outlook keeps asking for the password")
    second = await pilot.start("Teams will not load the chat list")
    paused = await pilot.http.post(f"{API}/sessions/{first['session_id']}/pause", headers=engineer)
    assert paused.json()["status"] == "paused"
    listed = (await pilot.http.get(f"{API}/sessions", headers=engineer)).json()
    assert [s["id"] for s in listed] == [second["session_id"], first["session_id"]]
    only_paused = await pilot.http.get(f"{API}/sessions", params={"status": "paused"}, headers=engineer)
    assert [s["id"] for s in only_paused.json()] == [first["session_id"]]
    limited = await pilot.http.get(f"{API}/sessions", params={"limit": 1}, headers=engineer)
    assert [s["id"] for s in limited.json()] == [second["session_id"]]
    problem(await pilot.http.get(f"{API}/sessions", params={"status": "sleeping"}, headers=engineer),
            422, "validation_failed")
    problem(await pilot.http.get(f"{API}/sessions", params={"limit": 0}, headers=engineer), 422, "validation_failed")
    # Another engineer's list does not show them (FP-033).
    assert (await pilot.http.get(f"{API}/sessions", headers=pilot.a.headers(Role.LEAD))).json() == []


async def test_fp031_lifecycle_over_http(pilot: PilotApp) -> None:
    """FP-031: pause, resume, rate, abandon with their guards."""
    engineer = pilot.a.headers(Role.ENGINEER)
    pilot.desk.add(question())
    sid = (await pilot.start())["session_id"]
    base = f"{API}/sessions/{sid}"
    assert (await pilot.http.post(f"{base}/pause", headers=engineer)).json()["status"] == "paused"
    assert (await pilot.http.post(f"{base}/resume", headers=engineer)).json()["status"] == "active"
    rated = await pilot.http.post(f"{base}/rate", json={"rating": 4, "feedback": "Quick"}, headers=engineer)
    assert rated.status_code == 200, rated.text
    problem(await pilot.http.post(f"{base}/rate", json={"rating": 9}, headers=engineer), 422, "validation_failed")
    abandoned = await pilot.http.post(f"{base}/abandon", json={"reason": "User left"}, headers=engineer)
    assert abandoned.json()["status"] == "abandoned"
    detail = await pilot.detail(sid)
    assert (detail["rating"], detail["feedback"], detail["resolution_notes"]) == (4, "Quick", "User left")
    # Rating is allowed in any status (the refusals of the others: tests/api/test_pilot_failures.py).
    assert (await pilot.http.post(f"{base}/rate", json={"rating": 2}, headers=engineer)).status_code == 200


async def test_viewers_read_but_do_not_act(pilot: PilotApp) -> None:
    viewer = pilot.a.headers(Role.VIEWER)
    refused = await pilot.http.post(f"{API}/sessions", json={"text": "Printer offline"}, headers=viewer)
    assert problem(refused, 403, "permission_denied")["detail"] == "this action needs the 'engineer' role or higher"
    assert (await pilot.http.get(f"{API}/sessions", headers=viewer)).json() == []
    assert (await pilot.http.get(f"{API}/escalations", headers=viewer)).json() == []


async def test_openapi_lists_the_pilot_operations(pilot: PilotApp) -> None:
    spec = (await pilot.http.get("/openapi.json")).json()
    operations = {op["operationId"] for path, item in spec["paths"].items() if path.startswith(API + "/sessions")
                  or path == API + "/escalations" for op in item.values()}
    assert operations == {
        "create_session", "list_sessions", "get_session", "respond", "retry_generation", "pause_session",
        "resume_session", "abandon_session", "resolve_session", "escalate_session", "pickup_session",
        "rate_session", "link_ticket", "get_documentation", "create_status_update", "stream_ticket_notes",
        "list_branches", "switch_branch", "mark_branch", "revive_branch", "list_escalations",
        # The chat copilot's turns on the same sessions, and the diagnosis state both kinds share.
        "send_message", "reconnect", "regenerate", "message_image", "list_facts", "add_fact", "edit_fact",
        "delete_fact", "promote_fact",
        "get_task_lane", "update_task_lane_item", "list_suggested_fixes", "record_fix_outcome", "record_fix_decision",
    }
    content = spec["paths"][API + "/sessions/{session_id}/ticket-notes"]["get"]["responses"]["200"]["content"]
    assert "text/event-stream" in content
