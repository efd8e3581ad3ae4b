"""Shared helpers of the Pilot API tests: an app with a scripted desk model, tenants, SSE parsing (no tests here)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from deskpilot.api.app import create_app
from deskpilot.api.state import AppState
from deskpilot.identity.models import Role
from deskpilot.knowledge import service as knowledge
from deskpilot.llm import LLM, MemoryRecorder, Message, RequestParams, StreamEvent
from deskpilot.llm.testing import FunctionModel, Reply
from deskpilot.pilot import communications
from deskpilot.settings import LLMSettings, Settings
from tests.conftest import Tenant, make_tenant
from tests.pilot.conftest import classification

TICKET_NOTES = (
    "## Problem Summary\nOutlook kept asking for the password.\n\n"
    "## Steps Taken\n- Cleared cached credentials\n- Tested a new Outlook profile\n\n"
    "## Resolution\nRe-registered the work account.\n\n"
    "## Next Steps\nNone\n"
)
INSIGHTS = {
    "remaining_hypotheses": ["Token broker cache is corrupt"],
    "suggested_next_steps": ["Run dsregcmd /status"],
    "steps_ruled_out": ["Cached credentials"],
}
FLOW_DRAFT = {
    "name": "Outlook asks for the password again and again",
    "description": "Credential prompts after a password change.",
    "problem_domain": "m365",
    "tags": ["outlook"],
    "symptoms": ["Outlook keeps asking for the password"],
    "definition": {
        "start": "creds",
        "nodes": [
            {"id": "creds", "type": "action", "text": "Clear the cached credentials",
             "on_success": "fixed", "on_failure": "vendor"},
            {"id": "fixed", "type": "resolution", "text": "Stale credentials cleared"},
            {"id": "vendor", "type": "resolution", "outcome": "escalate", "text": "Escalate to messaging"},
        ],
    },
}
# The first line of each audience's system prompt (FP-048), as the status-update replies echo it.
AUDIENCE_OPENINGS = {
    "ticket_notes": "You write an internal PSA ticket note",
    "client_update": "You write a message to a client",
    "request_info": "You write a message asking a client",
    "email_draft": "You write a complete email",
}


class DeskModel(FunctionModel):
    """One model for every purpose, answering by what is asked.

    Steps (`StepReply`) come from the `steps` queue the test fills; classification, escalation insights and
    flywheel drafts get fixed answers; a status update echoes its audience; ticket notes stream `notes_reply`.
    With `hang_stream` the ticket-notes stream stops after its first delta until it is closed.
    """

    def __init__(self) -> None:
        super().__init__(self._answer, name="test:desk")
        self.steps: deque[str | Reply | BaseException] = deque()
        self.notes_reply = Reply(text=TICKET_NOTES, input_tokens=300, output_tokens=80)
        self.hang_stream = False
        self.streams_opened = 0
        self.streams_closed = 0

    def add(self, *items: str | Reply | BaseException) -> None:
        self.steps.extend(items)

    def _answer(self, messages: Sequence[Message], params: RequestParams) -> str | Reply:
        match params.output.name if params.output is not None else None:
            case "IntakeClassification":
                return classification()
            case "StepReply":
                if not self.steps:
                    raise AssertionError("the model was asked for a step the test did not script")
                item = self.steps.popleft()
                if isinstance(item, BaseException):
                    raise item
                return item
            case "EscalationInsights":
                return Reply.json(INSIGHTS, input_tokens=120, output_tokens=30)
            case "FlowDraft":
                return Reply.json(FLOW_DRAFT)
            case None if messages[0].content == communications.TICKET_NOTES_PROMPT:
                return self.notes_reply
            case None:
                audience = next(a for a, opening in AUDIENCE_OPENINGS.items()
                                if messages[0].content.startswith(opening))
                return Reply(text=f"{audience} update: the password prompts are fixed.", input_tokens=90,
                             output_tokens=15)
            case other:
                raise AssertionError(f"unexpected structured output {other!r}")

    async def request_stream(
        self, messages: Sequence[Message], params: RequestParams
    ) -> AsyncGenerator[StreamEvent, None]:
        self.streams_opened += 1
        try:
            async for event in super().request_stream(messages, params):
                yield event
                if self.hang_stream and isinstance(event, str):
                    await asyncio.Event().wait()
        finally:
            self.streams_closed += 1


@dataclass
class PilotApp:
    """The app over HTTP, its state, two accounts and the scripted model (None when no LLM is configured)."""

    app: FastAPI
    http: httpx.AsyncClient
    state: AppState
    a: Tenant
    b: Tenant
    model: DeskModel | None
    recorder: MemoryRecorder

    @property
    def desk(self) -> DeskModel:
        assert self.model is not None, "this app has no LLM"
        return self.model

    async def load_starter_library(self, tenant: Tenant) -> None:
        async with self.state.db.session(tenant.account_id) as session:
            await knowledge.load_starter_library(session, tenant.account_id)
            await session.commit()

    async def start(self, text: str = "Outlook keeps asking for the password since this morning",
                    role: Role = Role.ENGINEER) -> dict[str, Any]:
        response = await self.http.post("/api/v1/sessions", json={"text": text}, headers=self.a.headers(role))
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def detail(self, session_id: str | uuid.UUID, role: Role = Role.ENGINEER) -> dict[str, Any]:
        response = await self.http.get(f"/api/v1/sessions/{session_id}", headers=self.a.headers(role))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@asynccontextmanager
async def pilot_app(settings: Settings, *, with_llm: bool = True) -> AsyncIterator[PilotApp]:
    """A running app on a fresh database; `with_llm=False` configures no model at all (flow mode)."""
    recorder = MemoryRecorder()
    model = DeskModel() if with_llm else None
    llm = LLM.for_model(model, recorder=recorder) if model is not None else LLM(LLMSettings(), recorder=recorder)
    state = AppState.build(settings, llm=llm)
    app = create_app(settings, state=state)
    async with app.router.lifespan_context(app):
        a = await make_tenant(state.db, "Acme IT")
        b = await make_tenant(state.db, "Globex Support")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield PilotApp(app=app, http=http, state=state, a=a, b=b, model=model, recorder=recorder)


def parse_sse(text: str) -> list[dict[str, Any]]:
    """Server-sent event frames as dicts of their fields, with `data` decoded from JSON."""
    frames = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        if "data" in fields:
            fields["data"] = json.loads(fields["data"])
        frames.append(fields)
    return frames


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert a problem+json response with `status` and `code`; return its body."""
    assert response.status_code == status, f"{response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body
