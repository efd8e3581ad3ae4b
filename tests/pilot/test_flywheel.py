"""The knowledge flywheel (FP-035): a resolved session becomes a draft runbook for a lead to approve."""

from __future__ import annotations

import uuid

from deskpilot.jobs import Job, JobContext, execute, registry
from deskpilot.knowledge import service as knowledge
from deskpilot.knowledge.models import FlowSource, FlowStatus
from deskpilot.llm import LLM
from deskpilot.llm.testing import Reply
from deskpilot.pilot import flywheel, service
from deskpilot.pilot import jobs as pilot_jobs
from deskpilot.pilot.schemas import ResolveRequest, SessionCreate, StepResponse
from deskpilot.settings import LLMSettings, Settings
from tests.pilot.conftest import Desk, action, classification, question, scripted

DRAFT = {
    "name": "Coffee machine shows E42",
    "description": "Boiler pressure error on the floor coffee machines.",
    "problem_domain": "hardware",
    "tags": ["coffee", "e42"],
    "symptoms": ["Coffee machine shows E42"],
    "definition": {
        "start": "pressure",
        "nodes": [
            {"id": "pressure", "type": "question", "text": "Is the boiler gauge in the red?",
             "options": [{"value": "red", "label": "Yes", "next": "bleed"},
                         {"value": "ok", "label": "No", "next": "vendor"}]},
            {"id": "bleed", "type": "action", "text": "Open the bleed valve for ten seconds",
             "on_success": "fixed", "on_failure": "vendor"},
            {"id": "fixed", "type": "resolution", "text": "Pressure released"},
            {"id": "vendor", "type": "resolution", "outcome": "escalate", "text": "Call the vendor"},
        ],
    },
}


async def resolved_session(desk: Desk) -> uuid.UUID:
    llm, _, _ = scripted(classification("Coffee machine E42", "hardware"), question(), action())
    deps = desk.deps(llm)
    started = await desk.call(service.start_session, deps, desk.engineer, SessionCreate(text="Coffee machine E42"))
    await desk.call(service.respond, deps, desk.engineer, started.session_id, StepResponse(selected_option="web"))
    await desk.call(service.resolve, deps, desk.engineer, started.session_id,
                    ResolveRequest(resolution_summary="Bled the boiler", resolution_action="Opened the bleed valve"))
    return started.session_id


async def test_fp035_a_resolved_session_becomes_a_draft_flow(desk: Desk) -> None:
    sid = await resolved_session(desk)
    llm, model, recorder = scripted(Reply.json(DRAFT))
    outcome = await desk.call(flywheel.analyse_session, llm, sid)
    assert outcome == "drafted"
    assert recorder.calls[0].purpose == "drafter"
    brief = model.requests[0].last_user_text
    assert "Resolution: Bled the boiler" in brief
    assert "What fixed it: Opened the bleed valve" in brief
    async with desk.session() as s:
        drafts = await knowledge.list_flows(s, source=FlowSource.FLYWHEEL)
        assert [(f.name, f.status) for f in drafts] == [("Coffee machine shows E42", FlowStatus.DRAFT)]
        assert drafts[0].team_id == desk.team_id
    assert (await desk.call(service.get_session, desk.engineer, sid)).analysis_status == "done"
    # Delivered again (at least once): nothing more happens.
    assert await desk.call(flywheel.analyse_session, llm, sid) == "already_done"
    assert len(model.requests) == 1


async def test_an_invalid_draft_marks_the_analysis_failed(desk: Desk) -> None:
    sid = await resolved_session(desk)
    broken = {**DRAFT, "definition": {"start": "a", "nodes": [
        {"id": "a", "type": "action", "text": "Do it", "on_success": "a", "on_failure": "a"}]}}
    llm, _, _ = scripted(Reply.json(broken))
    assert await desk.call(flywheel.analyse_session, llm, sid) == "failed"
    assert (await desk.call(service.get_session, desk.engineer, sid)).analysis_status == "failed"


async def test_the_registered_job_skips_without_an_llm(desk: Desk) -> None:
    sid = await resolved_session(desk)
    assert service.ANALYSE_JOB in registry
    assert registry.get(service.ANALYSE_JOB).handler is pilot_jobs.analyse_session
    settings = Settings.model_validate({"database": {"url": desk.db.url}, "llm": LLMSettings().model_dump()})
    context = JobContext(settings=settings, database=desk.db, pubsub=desk.pubsub)
    job = Job(id="j1", name=service.ANALYSE_JOB, payload={"account_id": str(desk.account_id), "session_id": str(sid)})
    outcome = await execute(registry, context, job)
    assert outcome.status == "done"
    assert (await desk.call(service.get_session, desk.engineer, sid)).analysis_status == "skipped"
    assert not LLM(LLMSettings()).configured


async def test_the_registered_job_uses_the_applications_llm(desk: Desk) -> None:
    sid = await resolved_session(desk)
    llm, _, _ = scripted(Reply.json(DRAFT))
    settings = Settings.model_validate({"database": {"url": desk.db.url}})
    context = JobContext(settings=settings, database=desk.db, pubsub=desk.pubsub, llm=llm)
    job = Job(id="j2", name=service.ANALYSE_JOB, payload={"account_id": str(desk.account_id), "session_id": str(sid)})
    assert (await execute(registry, context, job)).status == "done"
    assert (await desk.call(service.get_session, desk.engineer, sid)).analysis_status == "done"
