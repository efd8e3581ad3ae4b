"""Guided troubleshooting sessions: turns, lifecycle, branches, documentation, communications and escalations."""

from __future__ import annotations

import itertools
import json
import logging
import uuid
from collections.abc import AsyncGenerator, Callable, Coroutine, Mapping
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.background import BackgroundTask
from starlette.types import Message

from deskpilot.api.deps import EngineerDep, PrincipalDep, SessionDep, StateDep, pilot_caller, pilot_deps
from deskpilot.api.routes.chat import chat_deps
from deskpilot.api.routing import JSONRoute
from deskpilot.chat import service as chat_service
from deskpilot.chat.schemas import ChatSessionOut
from deskpilot.errors import DeskpilotError
from deskpilot.pilot import communications, documentation, service
from deskpilot.pilot.access import SessionParties, check_access
from deskpilot.pilot.communications import Audience, Length, TicketNotesStream, UpdateContext
from deskpilot.pilot.documentation import SessionDocumentation
from deskpilot.pilot.lifecycle import Action, SessionStatus
from deskpilot.pilot.schemas import (
    AbandonRequest,
    BranchNode,
    EscalateRequest,
    EscalationResult,
    LinkTicketRequest,
    MarkBranchRequest,
    PickupRequest,
    PickupResult,
    RateRequest,
    ResolveRequest,
    ReviveBranchRequest,
    SessionClosed,
    SessionCreate,
    SessionDetail,
    SessionStarted,
    SessionSummary,
    StepResponse,
    TurnResult,
)
from deskpilot.storage import utcnow

logger = logging.getLogger(__name__)

# Well above the largest valid body (a 100 KB intake, JSON-escaped), so an oversized intake still reaches the
# service and gets its explanatory `intake_too_large`; anything bigger is refused before it is buffered.
MAX_BODY_BYTES: Final = 1024 * 1024
_BODYLESS_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
_SSE_HEADERS: Final = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _too_large(declared: str | None = None) -> HTTPException:
    size = f"is {declared} bytes" if declared else "is larger than that"
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE, f"a request body may have at most {MAX_BODY_BYTES} bytes; this one {size}"
    )


async def _bounded_body(request: Request) -> Request:
    """The request with its body read up to MAX_BODY_BYTES; a bigger body is refused without reading the rest."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large(declared)
    if request.method in _BODYLESS_METHODS:
        return request
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_BODY_BYTES:
            raise _too_large()
    replayed = False
    downstream = request.receive

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            # Later reads wait for the client's disconnect, as they would on the original channel.
            return await downstream()
        replayed = True
        return {"type": "http.request", "body": bytes(body), "more_body": False}

    return Request(request.scope, replay)


class BoundedBodyRoute(JSONRoute):
    """A route whose request body is capped at MAX_BODY_BYTES (413 problem+json, code `payload_too_large`); the
    capped body then goes to `JSONRoute`'s strict parsing like every router's."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def bounded(request: Request) -> Response:
            return await handler(await _bounded_body(request))

        return bounded


router = APIRouter(prefix="/api/v1", tags=["pilot"], route_class=BoundedBodyRoute)


def _json(model: BaseModel, status_code: int = status.HTTP_200_OK) -> Response:
    """The model as JSON, serialised once by Pydantic.

    Returning the model itself makes FastAPI validate it again against the declared response model, dump it to
    Python objects and encode those with the json module: about three walks of a large response per request on
    the turn's hot path. The route still declares `response_model`, so the OpenAPI schema is unchanged.
    """
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")


# --- request and response shapes of this router -----------------------------------------------


class StatusUpdateRequest(BaseModel):
    """A status update for one audience (FP-047): ticket notes, a client update, a request for info or an email."""

    model_config = ConfigDict(extra="forbid")

    audience: Audience
    length: Length = "full"
    context: UpdateContext = "status"


class StatusUpdateResponse(BaseModel):
    """The generated update (FP-049), stored as a `status_update` step of the session."""

    content: str
    audience: Audience
    length: Length
    context: UpdateContext
    session_status: str
    steps_completed: int
    time_spent_display: str = Field(description="Decimal hours, e.g. '0.25 hrs'.")
    client_name: str | None
    generated_at: datetime
    step_id: uuid.UUID
    input_tokens: int
    output_tokens: int


# --- sessions ---------------------------------------------------------------------------------


@router.post("/sessions", status_code=status.HTTP_201_CREATED, response_model=SessionStarted)
async def create_session(
    body: SessionCreate, principal: EngineerDep, state: StateDep, session: SessionDep
) -> Response:
    """Start a guided session from a description, pasted log output and/or a PSA ticket.

    Without an LLM a matching runbook drives it (`mode: flow`); without either the session is kept with its
    intake and the answer is 503 `no_llm_no_flow` naming it in `session_id`.
    """
    started = await service.start_session(session, pilot_deps(state), pilot_caller(principal), body)
    response = _json(started, status.HTTP_201_CREATED)
    response.headers["Location"] = f"{router.prefix}/sessions/{started.session_id}"
    return response


@router.get("/sessions")
async def list_sessions(
    principal: PrincipalDep,
    session: SessionDep,
    status: SessionStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[SessionSummary]:
    """The caller's sessions (owned, picked up or escalated to them), newest first."""
    return await service.list_sessions(session, pilot_caller(principal), status=status, limit=limit)


@router.get("/sessions/{session_id}", response_model=SessionDetail)
async def get_session(session_id: uuid.UUID, principal: PrincipalDep, session: SessionDep) -> Response:
    """The whole session with its steps and branch map; team members see it while it requests escalation."""
    return _json(await service.get_session(session, pilot_caller(principal), session_id))


@router.post("/sessions/{session_id}/responses", response_model=TurnResult)
async def respond(
    session_id: uuid.UUID, body: StepResponse, principal: EngineerDep, state: StateDep, session: SessionDep
) -> Response:
    """Answer the current step and get the next one.

    The answer is stored before the model is asked: when generation fails (502 `step_generation_failed`) it is
    kept and `POST …/retry` continues. A second answer to the same step gets 409 `step_already_answered`.
    """
    return _json(await service.respond(session, pilot_deps(state), pilot_caller(principal), session_id, body))


@router.post("/sessions/{session_id}/retry", response_model=TurnResult)
async def retry_generation(
    session_id: uuid.UUID, principal: EngineerDep, state: StateDep, session: SessionDep
) -> Response:
    """Generate the step the session is waiting for (after a failed generation or a branch change)."""
    return _json(await service.retry_generation(session, pilot_deps(state), pilot_caller(principal), session_id))


# --- lifecycle (FP-031) -------------------------------------------------------------------------


# The lifecycle routes serve chats too (kind "chat"): the same actions, the chat's own rules (chat/service.py).


async def _is_chat(session: AsyncSession, session_id: uuid.UUID) -> bool:
    return await chat_service.session_kind(session, session_id) == chat_service.CHAT


@router.post("/sessions/{session_id}/pause", response_model=SessionSummary | ChatSessionOut)
async def pause_session(session_id: uuid.UUID, principal: EngineerDep, session: SessionDep) -> object:
    if await _is_chat(session, session_id):
        return await chat_service.change_status(session, pilot_caller(principal), session_id, Action.PAUSE)
    return await service.pause(session, pilot_caller(principal), session_id)


# POST /sessions/{session_id}/resume is served by api/routes/chat.py for both kinds of session: a chat's resume
# may carry approval decisions, a guided session's is the FP-031 lifecycle action (pilot.service.resume).


@router.post("/sessions/{session_id}/abandon", response_model=SessionSummary | ChatSessionOut)
async def abandon_session(
    session_id: uuid.UUID, principal: EngineerDep, session: SessionDep, body: AbandonRequest | None = None
) -> object:
    request = body or AbandonRequest()
    if await _is_chat(session, session_id):
        return await chat_service.change_status(
            session, pilot_caller(principal), session_id, Action.ABANDON, note=request.reason
        )
    return await service.abandon(session, pilot_caller(principal), session_id, request)


@router.post("/sessions/{session_id}/resolve", response_model=SessionClosed | ChatSessionOut)
async def resolve_session(
    session_id: uuid.UUID, body: ResolveRequest, principal: EngineerDep, state: StateDep, session: SessionDep
) -> object:
    """Resolve: documentation, flow success rate, PSA note (a failed push is reported, never fatal). A chat:
    its active suggested fix is marked successful (UC-021) and the summary kept."""
    if await _is_chat(session, session_id):
        return await chat_service.change_status(
            session, pilot_caller(principal), session_id, Action.RESOLVE, note=body.resolution_summary
        )
    return await service.resolve(session, pilot_deps(state), pilot_caller(principal), session_id, body)


@router.post("/sessions/{session_id}/escalate", response_model=EscalationResult | ChatSessionOut)
async def escalate_session(
    session_id: uuid.UUID, body: EscalateRequest, principal: EngineerDep, state: StateDep, session: SessionDep
) -> object:
    """Escalate to one engineer (`target_user_id`) or, without one, to the session's whole team. A chat with an
    open suggested fix is refused with 409 `fix_outcome_required` (UC-021)."""
    if await _is_chat(session, session_id):
        return await chat_service.escalate(session, chat_deps(state), pilot_caller(principal), session_id, body)
    return await service.escalate(session, pilot_deps(state), pilot_caller(principal), session_id, body)


@router.post("/sessions/{session_id}/pickup", response_model=PickupResult | ChatSessionOut)
async def pickup_session(
    session_id: uuid.UUID,
    principal: EngineerDep,
    state: StateDep,
    session: SessionDep,
    body: PickupRequest | None = None,
) -> object:
    """Take over an escalated session: a briefing step, then the next step (`continue` or `fresh`). A chat: the
    conversation simply continues with the new engineer."""
    if await _is_chat(session, session_id):
        return await chat_service.pickup(session, pilot_caller(principal), session_id)
    return await service.pickup(
        session, pilot_deps(state), pilot_caller(principal), session_id, body or PickupRequest()
    )


@router.post("/sessions/{session_id}/rate")
async def rate_session(
    session_id: uuid.UUID, body: RateRequest, principal: EngineerDep, session: SessionDep
) -> SessionSummary:
    return await service.rate(session, pilot_caller(principal), session_id, body)


@router.put("/sessions/{session_id}/ticket")
async def link_ticket(
    session_id: uuid.UUID, body: LinkTicketRequest, principal: EngineerDep, state: StateDep, session: SessionDep
) -> SessionDetail:
    """Link a PSA ticket mid-session; its context joins the prompt of the next steps (FP-043)."""
    return await service.link_ticket(session, pilot_deps(state), pilot_caller(principal), session_id, body)


# --- documentation and communications -----------------------------------------------------------


@router.get(
    "/sessions/{session_id}/documentation",
    response_model=SessionDocumentation,
    responses={200: {"content": {"text/markdown": {"schema": {"type": "string"}}},
                     "description": "The documentation as JSON, or as markdown with `format=markdown`."}},
)
async def get_documentation(
    session_id: uuid.UUID,
    principal: PrincipalDep,
    session: SessionDep,
    format: Literal["json", "markdown"] = "json",
) -> SessionDocumentation | Response:
    """The session's documentation (FP-046), built from its steps now."""
    doc = await service.get_documentation(session, pilot_caller(principal), session_id)
    if format == "markdown":
        return Response(documentation.render_markdown(doc), media_type="text/markdown; charset=utf-8")
    return doc


def _parties(detail: SessionDetail) -> SessionParties:
    return SessionParties(
        owner_id=detail.user_id, team_id=detail.team_id, status=detail.status,
        escalated_to_id=detail.escalated_to_id, picked_up_by_id=detail.picked_up_by_id,
    )


@router.post("/sessions/{session_id}/status-updates", status_code=status.HTTP_201_CREATED)
async def create_status_update(
    session_id: uuid.UUID, body: StatusUpdateRequest, principal: EngineerDep, state: StateDep, session: SessionDep
) -> StatusUpdateResponse:
    """Write a status update with the LLM (FP-047/FP-048) and store it as a step (FP-049).

    Without an LLM the answer is 503 `llm_not_configured`, naming the setting to configure.
    """
    caller = pilot_caller(principal)
    # Only those who may store the update may have it written: a teammate viewing an escalation would
    # otherwise pay for a model call whose result is then refused.
    check_access(caller, _parties(await service.get_session(session, caller, session_id)))
    view, steps = await service.session_views(session, caller, session_id)
    # End the read transaction before the model call: no snapshot is held while it writes, and the step is
    # stored against the session as it is then, not as it was read.
    await session.rollback()
    update = await communications.generate_status_update(
        state.llm, view, steps, audience=body.audience, length=body.length, context=body.context,
        account_id=principal.account_id, now=utcnow(),
    )
    step = await service.add_status_update(
        session, caller, session_id, content=update.step_content(),
        input_tokens=update.usage.input_tokens, output_tokens=update.usage.output_tokens,
    )
    return StatusUpdateResponse(
        content=update.content, audience=update.audience, length=update.length, context=update.context,
        session_status=view.status, steps_completed=update.steps_completed,
        time_spent_display=update.time_spent_display, client_name=update.client_name,
        generated_at=update.generated_at, step_id=step.step_id, input_tokens=update.usage.input_tokens,
        output_tokens=update.usage.output_tokens,
    )


def sse_frame(event_id: int, event: str, data: Mapping[str, object]) -> str:
    """One server-sent event; json.dumps never emits a raw newline, so the payload fits on one `data:` line."""
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(dict(data), separators=(',', ':'))}\n\n"


async def _ticket_note_frames(notes: TicketNotesStream, first: str | None) -> AsyncGenerator[str, None]:
    ids = itertools.count(1)
    try:
        if first is not None:
            yield sse_frame(next(ids), "delta", {"text": first})
            async for delta in notes:
                yield sse_frame(next(ids), "delta", {"text": delta})
        usage = notes.usage
        yield sse_frame(next(ids), "done", {
            "notes": notes.notes,
            "streamed": notes.streamed,
            "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                      "model": usage.model},
        })
    except DeskpilotError as e:
        # The 200 and earlier deltas are already sent: the failure can only travel as an event.
        logger.warning("ticket notes stream failed: %s (%s)", e.code, e.detail)
        yield sse_frame(next(ids), "error", {"code": e.code, "status": e.status, "detail": e.detail})
    except Exception:
        logger.exception("ticket notes stream failed")
        yield sse_frame(next(ids), "error", {"code": "internal_error", "status": 500,
                                             "detail": "an unexpected error occurred"})
    finally:
        await notes.aclose()


@router.get(
    "/sessions/{session_id}/ticket-notes",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}},
                     "description": "Server-sent events: `delta` text chunks, then `done` (or `error`)."}},
)
async def stream_ticket_notes(
    session_id: uuid.UUID, principal: PrincipalDep, state: StateDep, session: SessionDep
) -> StreamingResponse:
    """The session's ticket notes (FP-051), streamed as server-sent events.

    `event: delta` frames carry text chunks (`{"text": …}`); `event: done` carries the notes repaired to
    exactly the four sections, the token usage and whether the model streamed. Every frame has an `id:`.
    A failure before the first chunk is an ordinary problem response; a later one ends the stream with
    `event: error` carrying the problem `code`.
    """
    view, steps = await service.session_views(session, pilot_caller(principal), session_id)
    # The stream needs no database: give the connection back rather than hold it while the model writes.
    await session.close()
    notes = communications.stream_ticket_notes(state.llm, view, steps, account_id=principal.account_id)
    # Wait for the first chunk before answering, so that no model or a provider down is a proper 503/502.
    try:
        first: str | None = await anext(notes)
    except StopAsyncIteration:
        first = None
    except BaseException:
        await notes.aclose()
        raise
    frames = _ticket_note_frames(notes, first)
    # On a client disconnect Starlette cancels the sending task; closing the frames (and with them the
    # provider's stream) afterwards makes sure the model stops writing for nobody.
    return StreamingResponse(
        frames, media_type="text/event-stream", headers=_SSE_HEADERS, background=BackgroundTask(frames.aclose)
    )


# --- branches (FP-028, FP-029) ------------------------------------------------------------------


@router.get("/sessions/{session_id}/branches")
async def list_branches(session_id: uuid.UUID, principal: PrincipalDep, session: SessionDep) -> list[BranchNode]:
    """The branch map as a tree (root branches with their children); empty until the session forks."""
    return await service.get_branch_tree(session, pilot_caller(principal), session_id)


@router.post("/sessions/{session_id}/branches/{branch_id}/switch")
async def switch_branch(
    session_id: uuid.UUID, branch_id: uuid.UUID, principal: EngineerDep, state: StateDep, session: SessionDep
) -> TurnResult:
    """Continue on another open branch: its waiting step, or a first step generated now."""
    return await service.switch_branch(session, pilot_deps(state), pilot_caller(principal), session_id, branch_id)


@router.patch("/sessions/{session_id}/branches/{branch_id}")
async def mark_branch(
    session_id: uuid.UUID, branch_id: uuid.UUID, body: MarkBranchRequest, principal: EngineerDep, session: SessionDep
) -> list[BranchNode]:
    """Mark a branch a dead end or solved; leaving the active branch moves to an open sibling or the parent."""
    return await service.mark_branch(session, pilot_caller(principal), session_id, branch_id, body)


@router.post("/sessions/{session_id}/branches/{branch_id}/revive")
async def revive_branch(
    session_id: uuid.UUID,
    branch_id: uuid.UUID,
    body: ReviveBranchRequest,
    principal: EngineerDep,
    state: StateDep,
    session: SessionDep,
) -> TurnResult:
    """Reopen a dead-end branch with new evidence and continue on it."""
    return await service.revive_branch(
        session, pilot_deps(state), pilot_caller(principal), session_id, branch_id, body
    )


# --- escalation queue ---------------------------------------------------------------------------


@router.get("/escalations")
async def list_escalations(
    principal: PrincipalDep, session: SessionDep, limit: Annotated[int, Query(ge=1, le=200)] = 100
) -> list[SessionSummary]:
    """Sessions waiting for pickup by the caller's team or escalated to the caller, oldest first."""
    return await service.list_escalation_queue(session, pilot_caller(principal), limit=limit)
