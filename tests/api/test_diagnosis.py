"""Facts, task lane and suggested fixes over HTTP (UC-015 … UC-021), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from deskpilot.api.app import create_app
from deskpilot.api.state import AppState
from deskpilot.chat.events import FixOutcomeEvent, SuggestFixEvent
from deskpilot.diagnosis import service
from deskpilot.diagnosis.schemas import FactSynthesis
from deskpilot.identity.models import Role
from deskpilot.llm import LLM, Message, RequestParams
from deskpilot.llm.testing import FunctionModel, Reply
from deskpilot.settings import Settings
from deskpilot.storage import migrations
from tests.api.test_pilot_support import problem
from tests.conftest import Tenant, make_settings, make_tenant
from tests.diagnosis.conftest import actions, add_chat_session, questions
from tests.services import pg_database
from tests.tenancy import assert_invisible_to_other_account

API = "/api/v1"


@dataclass
class Desk:
    """The app over HTTP, two accounts, a chat session of A's engineer with a lane and a fix, and the model."""

    http: httpx.AsyncClient
    state: AppState
    a: Tenant
    b: Tenant
    session_id: uuid.UUID
    question_id: uuid.UUID
    action_id: uuid.UUID
    fix_id: uuid.UUID
    synthesis: list[FactSynthesis]
    prompts: list[str]

    @property
    def engineer(self) -> dict[str, str]:
        return self.a.headers(Role.ENGINEER)

    def url(self, tail: str = "") -> str:
        return f"{API}/sessions/{self.session_id}{tail}"

    async def version(self) -> int:
        response = await self.http.get(self.url("/facts"), headers=self.engineer)
        assert response.status_code == 200, response.text
        version: int = response.json()["state_version"]
        return version


def _model(synthesis: list[FactSynthesis], prompts: list[str]) -> FunctionModel:
    def answer(messages: Sequence[Message], params: RequestParams) -> Reply:
        assert params.output is not None
        assert params.output.name == "FactSynthesis"
        prompts.append(messages[-1].content)
        return Reply.json(synthesis.pop(0))

    return FunctionModel(answer, name="test:diagnosis")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def desk(request: pytest.FixtureRequest, tmp_path: Path, migrated_template: Path) -> AsyncIterator[Desk]:
    if request.param == "sqlite":
        settings = make_settings(tmp_path)
        shutil.copyfile(migrated_template, tmp_path / "test.db")
        async with _desk(settings) as running:
            yield running
        return
    async with pg_database() as url:
        await asyncio.to_thread(migrations.upgrade, url)
        async with _desk(make_settings(tmp_path, database={"url": url})) as running:
            yield running


@asynccontextmanager
async def _desk(settings: Settings) -> AsyncIterator[Desk]:
    synthesis: list[FactSynthesis] = []
    prompts: list[str] = []
    state = AppState.build(settings, llm=LLM.for_model(_model(synthesis, prompts)))
    app = create_app(settings, state=state)
    async with app.router.lifespan_context(app):
        a, b = await make_tenant(state.db, "Acme IT"), await make_tenant(state.db, "Globex Support")
        session_id = await add_chat_session(state.db, a.account_id, a.users[Role.ENGINEER])
        async with state.db.session(a.account_id) as s:
            ids = {"account_id": a.account_id, "session_id": session_id}
            lane = (
                await service.apply_task_lane(
                    s, **ids, questions=questions("Is MFA on?"), actions=actions("Clear credentials")
                )
            ).lane
            fix = await service.persist_suggested_fix(
                s,
                **ids,
                event=SuggestFixEvent(
                    title="Re-register the account",
                    description="dsregcmd /leave",
                    confidence_pct=70,
                    ai_drafted_script="dsregcmd /leave",
                ),
            )
            await s.commit()
        assert lane is not None
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield Desk(
                http=http,
                state=state,
                a=a,
                b=b,
                session_id=session_id,
                question_id=lane.questions[0].id,
                action_id=lane.actions[0].id,
                fix_id=fix.fix.id,
                synthesis=synthesis,
                prompts=prompts,
            )


async def assert_other_account_gets_404(
    desk: Desk, method: str, url: str, *, json: object | None = None, read_back: str
) -> None:
    """For sub-resources without a GET: another account's request is 404 and `read_back` is unchanged."""
    before = (await desk.http.get(read_back, headers=desk.engineer)).json()
    response = await desk.http.request(method, url, json=json, headers=desk.b.headers(Role.OWNER))
    problem(response, 404, "session_not_found")
    assert (await desk.http.get(read_back, headers=desk.engineer)).json() == before


# --- facts ---------------------------------------------------------------------------------------------


async def test_uc018_facts_add_list_edit_delete_each_returning_the_new_state_version(desk: Desk) -> None:
    v0 = await desk.version()
    added = await desk.http.post(
        desk.url("/facts"), json={"text": "  Rebooted at 9:00 ", "summary": "reboot"}, headers=desk.engineer
    )
    assert added.status_code == 201, added.text
    fact = added.json()["fact"]
    assert (added.json()["state_version"], fact["text"], fact["source_type"], fact["editable"]) == (
        v0 + 1,
        "Rebooted at 9:00",
        "user_note",
        True,
    )
    listed = (await desk.http.get(desk.url("/facts"), headers=desk.engineer)).json()
    assert (listed["state_version"], [f["id"] for f in listed["facts"]]) == (v0 + 1, [fact["id"]])
    edited = await desk.http.patch(
        desk.url(f"/facts/{fact['id']}"), json={"text": "Rebooted at 9:30"}, headers=desk.engineer
    )
    assert edited.status_code == 200, edited.text
    assert (edited.json()["state_version"], edited.json()["fact"]["text"]) == (v0 + 2, "Rebooted at 9:30")
    deleted = await desk.http.delete(desk.url(f"/facts/{fact['id']}"), headers=desk.engineer)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["state_version"] == v0 + 3
    assert deleted.json()["fact"]["deleted_at"]
    assert (await desk.http.get(desk.url("/facts"), headers=desk.engineer)).json()["facts"] == []
    problem(await desk.http.delete(desk.url(f"/facts/{fact['id']}"), headers=desk.engineer), 404, "fact_not_found")


async def test_fact_input_is_validated_as_problem_json(desk: Desk) -> None:
    for body in ({"text": "   "}, {"text": "x" * 4001}, {}, {"text": "ok", "source_type": "question"}):
        problem(await desk.http.post(desk.url("/facts"), json=body, headers=desk.engineer), 422, "validation_failed")
    fact = (await desk.http.post(desk.url("/facts"), json={"text": "ok"}, headers=desk.engineer)).json()["fact"]
    for patch in ({}, {"text": None}):
        response = await desk.http.patch(desk.url(f"/facts/{fact['id']}"), json=patch, headers=desk.engineer)
        problem(response, 422, "validation_failed")
    problem(
        await desk.http.patch(desk.url("/facts/not-a-uuid"), json={"text": "x"}, headers=desk.engineer),
        422,
        "validation_failed",
    )


async def test_uc018_promote_with_text_then_editing_that_fact_is_403_with_a_stable_code(desk: Desk) -> None:
    v0 = await desk.version()
    promoted = await desk.http.post(
        desk.url("/facts/promote"),
        json={"item_id": str(desk.action_id), "proposed_text": "3 stale entries"},
        headers=desk.engineer,
    )
    assert promoted.status_code == 201, promoted.text
    fact = promoted.json()["fact"]
    assert (fact["source_type"], fact["source_ref"], fact["editable"], promoted.json()["state_version"]) == (
        "diagnostic_check",
        str(desk.action_id),
        False,
        v0 + 1,
    )
    refused = problem(
        await desk.http.patch(desk.url(f"/facts/{fact['id']}"), json={"text": "changed"}, headers=desk.engineer),
        403,
        "fact_not_editable",
    )
    assert "edit the source item instead" in refused["detail"]
    assert await desk.version() == v0 + 1


async def test_uc018_promote_by_synthesis_and_a_null_synthesis_is_422(desk: Desk) -> None:
    await desk.http.patch(
        desk.url(f"/task-lane/items/{desk.question_id}"),
        json={"status": "done", "note": "yes, per user"},
        headers=desk.engineer,
    )
    desk.synthesis.append(FactSynthesis(text="MFA is enforced per user."))
    made = await desk.http.post(
        desk.url("/facts/promote"), json={"item_id": str(desk.question_id)}, headers=desk.engineer
    )
    assert made.status_code == 201, made.text
    assert (made.json()["fact"]["text"], made.json()["fact"]["source_type"]) == (
        "MFA is enforced per user.",
        "question",
    )
    assert "Answer: yes, per user" in desk.prompts[-1]
    desk.synthesis.append(FactSynthesis(text=None))
    before = await desk.version()
    problem(
        await desk.http.post(
            desk.url("/facts/promote"), json={"item_id": str(desk.question_id)}, headers=desk.engineer
        ),
        422,
        "fact_synthesis_empty",
    )
    assert await desk.version() == before
    problem(
        await desk.http.post(
            desk.url("/facts/promote"), json={"item_id": str(uuid.uuid4()), "proposed_text": "x"}, headers=desk.engineer
        ),
        404,
        "task_lane_item_not_found",
    )


# --- task lane --------------------------------------------------------------------------------------------


async def test_uc015_task_lane_read_and_item_check_and_skip(desk: Desk) -> None:
    lane = await desk.http.get(desk.url("/task-lane"), headers=desk.engineer)
    assert lane.status_code == 200, lane.text
    body = lane.json()
    assert [q["id"] for q in body["lane"]["questions"]] == [str(desk.question_id)]
    assert body["lane"]["actions"][0]["status"] == "pending"
    done = await desk.http.patch(
        desk.url(f"/task-lane/items/{desk.action_id}"),
        json={"status": "done", "note": "Cleared 3 entries"},
        headers=desk.engineer,
    )
    assert done.status_code == 200, done.text
    assert done.json()["state_version"] == body["state_version"] + 1
    action = done.json()["lane"]["actions"][0]
    assert (action["status"], action["result"]) == ("done", "Cleared 3 entries")
    skipped = await desk.http.patch(
        desk.url(f"/task-lane/items/{desk.question_id}"), json={"status": "skipped"}, headers=desk.engineer
    )
    assert skipped.json()["lane"]["questions"][0]["status"] == "skipped"
    problem(
        await desk.http.patch(
            desk.url(f"/task-lane/items/{desk.question_id}"), json={"status": "finished"}, headers=desk.engineer
        ),
        422,
        "validation_failed",
    )
    problem(
        await desk.http.patch(
            desk.url(f"/task-lane/items/{uuid.uuid4()}"), json={"status": "done"}, headers=desk.engineer
        ),
        404,
        "task_lane_item_not_found",
    )


# --- suggested fixes ---------------------------------------------------------------------------------------


async def test_uc021_fix_list_outcome_and_decision_over_http(desk: Desk) -> None:
    listed = (await desk.http.get(desk.url("/suggested-fixes"), headers=desk.engineer)).json()
    assert (listed["active"]["id"], listed["active"]["status"], listed["history"]) == (str(desk.fix_id), "proposed", [])
    v0 = listed["state_version"]
    decided = await desk.http.patch(
        desk.url(f"/suggested-fixes/{desk.fix_id}/decision"), json={"decision": "use_ai_script"}, headers=desk.engineer
    )
    assert decided.status_code == 200, decided.text
    assert (decided.json()["fix"]["user_decision"], decided.json()["state_version"]) == ("use_ai_script", v0 + 1)
    problem(
        await desk.http.patch(
            desk.url(f"/suggested-fixes/{desk.fix_id}/decision"),
            json={"decision": "use_template"},
            headers=desk.engineer,
        ),
        409,
        "fix_decision_not_allowed",
    )
    problem(
        await desk.http.patch(
            desk.url(f"/suggested-fixes/{desk.fix_id}/outcome"),
            json={"status": "applied_partial"},
            headers=desk.engineer,
        ),
        422,
        "fix_outcome_incomplete",
    )
    pending = await desk.http.patch(
        desk.url(f"/suggested-fixes/{desk.fix_id}/outcome"),
        json={"status": "applied_pending", "pending_reason": "reboot tonight"},
        headers=desk.engineer,
    )
    assert pending.status_code == 200, pending.text
    assert (pending.json()["fix"]["status"], pending.json()["state_version"]) == ("applied_pending", v0 + 2)
    success = await desk.http.patch(
        desk.url(f"/suggested-fixes/{desk.fix_id}/outcome"), json={"status": "applied_success"}, headers=desk.engineer
    )
    assert success.json()["fix"]["status"] == "applied_success"
    problem(
        await desk.http.patch(
            desk.url(f"/suggested-fixes/{desk.fix_id}/outcome"), json={"status": "dismissed"}, headers=desk.engineer
        ),
        409,
        "fix_transition_not_allowed",
    )
    problem(
        await desk.http.patch(
            desk.url(f"/suggested-fixes/{desk.fix_id}/outcome"), json={"ai_proposal": "accept"}, headers=desk.engineer
        ),
        409,
        "no_ai_outcome_proposal",
    )
    for body in ({}, {"status": "proposed"}, {"status": "fixed"}, {"ai_proposal": "maybe"}):
        problem(
            await desk.http.patch(
                desk.url(f"/suggested-fixes/{desk.fix_id}/outcome"), json=body, headers=desk.engineer
            ),
            422,
            "validation_failed",
        )
    problem(
        await desk.http.patch(
            desk.url(f"/suggested-fixes/{uuid.uuid4()}/outcome"), json={"status": "dismissed"}, headers=desk.engineer
        ),
        404,
        "suggested_fix_not_found",
    )


async def test_uc020_confirming_the_ais_proposed_outcome_over_http(desk: Desk) -> None:
    async with desk.state.db.session(desk.a.account_id) as s:
        event = FixOutcomeEvent(fix_id=desk.fix_id, outcome="failure", reason="still prompts")
        await service.record_ai_outcome_proposal(
            s, account_id=desk.a.account_id, session_id=desk.session_id, event=event
        )
        await s.commit()
    fixes = (await desk.http.get(desk.url("/suggested-fixes"), headers=desk.engineer)).json()
    assert fixes["active"]["status"] == "proposed"
    assert fixes["active"]["ai_outcome_proposal"]["outcome"] == "failure"
    accepted = await desk.http.patch(
        desk.url(f"/suggested-fixes/{desk.fix_id}/outcome"), json={"ai_proposal": "accept"}, headers=desk.engineer
    )
    assert accepted.status_code == 200, accepted.text
    fix = accepted.json()["fix"]
    assert (fix["status"], fix["failure_reason"], fix["ai_outcome_proposal"]["resolution"]) == (
        "applied_failure",
        "still prompts",
        "accepted",
    )


# --- access --------------------------------------------------------------------------------------------------


async def test_another_account_gets_404_for_every_endpoint_and_changes_nothing(desk: Desk) -> None:
    other = desk.b.headers(Role.OWNER)
    for tail, methods, body in (
        ("/facts", ("GET", "POST"), {"text": "intruder"}),
        ("/task-lane", ("GET",), None),
        ("/suggested-fixes", ("GET",), None),
    ):
        await assert_invisible_to_other_account(
            desk.http, desk.url(tail), owner_headers=desk.engineer, other_headers=other, methods=methods, json=body
        )
    fact = (await desk.http.post(desk.url("/facts"), json={"text": "mine"}, headers=desk.engineer)).json()["fact"]
    facts, lane, fixes = desk.url("/facts"), desk.url("/task-lane"), desk.url("/suggested-fixes")
    await assert_other_account_gets_404(
        desk, "PATCH", desk.url(f"/facts/{fact['id']}"), json={"text": "x"}, read_back=facts
    )
    await assert_other_account_gets_404(desk, "DELETE", desk.url(f"/facts/{fact['id']}"), read_back=facts)
    await assert_other_account_gets_404(
        desk,
        "POST",
        desk.url("/facts/promote"),
        json={"item_id": str(desk.question_id), "proposed_text": "x"},
        read_back=facts,
    )
    await assert_other_account_gets_404(
        desk, "PATCH", desk.url(f"/task-lane/items/{desk.question_id}"), json={"status": "done"}, read_back=lane
    )
    await assert_other_account_gets_404(
        desk,
        "PATCH",
        desk.url(f"/suggested-fixes/{desk.fix_id}/outcome"),
        json={"status": "dismissed"},
        read_back=fixes,
    )
    await assert_other_account_gets_404(
        desk,
        "PATCH",
        desk.url(f"/suggested-fixes/{desk.fix_id}/decision"),
        json={"decision": "manual"},
        read_back=fixes,
    )


async def test_a_colleague_in_the_same_account_gets_403_and_a_viewer_cannot_write(desk: Desk) -> None:
    lead = desk.a.headers(Role.LEAD)  # same account, not a party to the session (FP-033)
    before = await desk.version()
    for method, tail, body in (
        ("GET", "/facts", None),
        ("POST", "/facts", {"text": "x"}),
        ("GET", "/task-lane", None),
        ("PATCH", f"/task-lane/items/{desk.question_id}", {"status": "done"}),
        ("GET", "/suggested-fixes", None),
        ("PATCH", f"/suggested-fixes/{desk.fix_id}/outcome", {"status": "dismissed"}),
        ("POST", "/facts/promote", {"item_id": str(desk.question_id), "proposed_text": "x"}),
    ):
        response = await desk.http.request(method, desk.url(tail), json=body, headers=lead)
        problem(response, 403, "session_access_denied")
    viewer = await desk.http.post(desk.url("/facts"), json={"text": "x"}, headers=desk.a.headers(Role.VIEWER))
    problem(viewer, 403, "permission_denied")
    problem(
        await desk.http.get(f"{API}/sessions/{uuid.uuid4()}/facts", headers=desk.engineer), 404, "session_not_found"
    )
    assert await desk.version() == before
