"""Chat copilot: chat sessions, messages as JSON or an AI SDK UI message stream, reconnects and approvals."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from deskpilot.api.deps import EngineerDep, PrincipalDep, SessionDep, StateDep, pilot_caller
from deskpilot.api.routing import JSONRoute
from deskpilot.api.state import AppState
from deskpilot.chat import service
from deskpilot.chat.schemas import (
    MAX_IMAGES,
    ChatCreate,
    ChatDetail,
    ChatRename,
    ChatSessionOut,
    MessageIn,
    ResumeIn,
    TurnOut,
)
from deskpilot.chat.service import ChatDeps
from deskpilot.chat.stream import STREAM_HEADERS, TurnStream
from deskpilot.pilot import service as pilot_service
from deskpilot.pilot.lifecycle import Action
from deskpilot.pilot.schemas import BranchNode, EscalateRequest, MarkBranchRequest, ReviveBranchRequest

router = APIRouter(prefix="/api/v1", tags=["chat"], route_class=JSONRoute)

_STREAM_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "content": {"application/json": {}, "text/event-stream": {}},
        "description": "The finished turn as JSON, or (with `Accept: text/event-stream`) the Vercel AI SDK UI "
        "message stream v1: start, start-step, data-turn-info, data-turn-status, data-user-message-id, "
        "data-assistant-message-id, text-start/-delta/-end, data parts, finish-step, finish, [DONE].",
    }
}


def chat_deps(state: AppState) -> ChatDeps:
    return ChatDeps(database=state.db, llm=state.llm, streams=state.chat_streams, secrets=state.secrets,
                    http_client=state.http, pubsub=state.pubsub, contexts=state.chat_contexts)


def _wants_stream(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")


def _event_stream(frames: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(frames, media_type="text/event-stream", headers=dict(STREAM_HEADERS))


async def _answer(request: Request, state: AppState, account_id: uuid.UUID, stream: TurnStream) -> object:
    if _wants_stream(request):
        return _event_stream(stream.follow(0, batched=True))
    return await service.wait_for_turn(chat_deps(state), stream, account_id)


@router.post("/chats", status_code=status.HTTP_201_CREATED)
async def create_chat(body: ChatCreate, principal: EngineerDep, session: SessionDep) -> ChatSessionOut:
    """A new chat session (kind "chat" on the sessions table), titled from its first message (UC-002)."""
    return await service.create_chat(session, pilot_caller(principal), body)


@router.get("/chats")
async def list_chats(
    principal: PrincipalDep, session: SessionDep, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> list[ChatSessionOut]:
    """The caller's chat sessions, most recently active first."""
    return await service.list_chats(session, pilot_caller(principal), limit=limit)


@router.get("/chats/{session_id}")
async def get_chat(session_id: uuid.UUID, principal: PrincipalDep, session: SessionDep) -> ChatDetail:
    """The chat, its active branch's messages and its last turn."""
    return await service.get_chat(session, pilot_caller(principal), session_id)


@router.patch("/chats/{session_id}")
async def rename_chat(
    session_id: uuid.UUID, body: ChatRename, principal: EngineerDep, session: SessionDep
) -> ChatSessionOut:
    """Rename a chat (1-100 characters); the engineer's title is kept over a generated one."""
    return await service.rename(session, pilot_caller(principal), session_id, body)


@router.get("/chats/{session_id}/branches")
async def chat_branches(session_id: uuid.UUID, principal: PrincipalDep, session: SessionDep) -> list[BranchNode]:
    """The chat's branch map (UC-022/023)."""
    return await service.branch_tree(session, pilot_caller(principal), session_id)


@router.post("/chats/{session_id}/branches/{branch_id}/switch")
async def switch_chat_branch(
    session_id: uuid.UUID, branch_id: uuid.UUID, principal: EngineerDep, session: SessionDep
) -> list[BranchNode]:
    """Continue the chat on another branch."""
    return await service.switch_branch(session, pilot_caller(principal), session_id, branch_id)


@router.post("/chats/{session_id}/branches/{branch_id}/mark")
async def mark_chat_branch(
    session_id: uuid.UUID, branch_id: uuid.UUID, body: MarkBranchRequest, principal: EngineerDep, session: SessionDep
) -> list[BranchNode]:
    """Mark a branch a dead end or solved."""
    return await service.mark_branch(session, pilot_caller(principal), session_id, branch_id, body.status)


@router.post("/chats/{session_id}/branches/{branch_id}/revive")
async def revive_chat_branch(
    session_id: uuid.UUID, branch_id: uuid.UUID, body: ReviveBranchRequest, principal: EngineerDep, session: SessionDep
) -> list[BranchNode]:
    """Reopen a dead-end branch with new evidence; the branch's next prompt carries it."""
    return await service.revive_branch(session, pilot_caller(principal), session_id, branch_id, body.evidence)


@router.post("/chats/{session_id}/escalate")
async def escalate_chat(
    session_id: uuid.UUID, body: EscalateRequest, principal: EngineerDep, state: StateDep, session: SessionDep
) -> ChatSessionOut:
    """Ask another engineer or the team to take the chat over; 409 `fix_outcome_required` while the active
    suggested fix has no outcome (UC-021)."""
    return await service.escalate(session, chat_deps(state), pilot_caller(principal), session_id, body)


@router.post("/chats/{session_id}/pickup")
async def pickup_chat(session_id: uuid.UUID, principal: EngineerDep, session: SessionDep) -> ChatSessionOut:
    """Take over an escalated chat (FP-041): a member of its team, or the engineer it was escalated to."""
    return await service.pickup(session, pilot_caller(principal), session_id)


@router.post("/chats/{session_id}/{action}")
async def change_chat_status(
    session_id: uuid.UUID,
    action: Literal["pause", "resume", "resolve", "abandon"],
    principal: EngineerDep,
    session: SessionDep,
) -> ChatSessionOut:
    """Pause, resume, resolve or abandon a chat, with the guided sessions' rules; resolve confirms the fix."""
    return await service.change_status(session, pilot_caller(principal), session_id, Action(action))


@router.post("/sessions/{session_id}/messages", response_model=TurnOut, responses=_STREAM_RESPONSES)
async def send_message(
    session_id: uuid.UUID,
    body: MessageIn,
    request: Request,
    principal: EngineerDep,
    state: StateDep,
    session: SessionDep,
) -> object:
    """Send a message; the user's message is stored and its id announced before the model answers (SS-036).

    One turn at a time per session: another one while a turn runs is 409 `THREAD_BUSY`.
    """
    caller = pilot_caller(principal)
    stream = await service.send_message(session, chat_deps(state), caller, session_id, body)
    await session.close()
    return await _answer(request, state, principal.account_id, stream)


@router.post("/sessions/{session_id}/regenerate", response_model=TurnOut, responses=_STREAM_RESPONSES)
async def regenerate(
    session_id: uuid.UUID, request: Request, principal: EngineerDep, state: StateDep, session: SessionDep
) -> object:
    """Answer the last message again (SS-045); the reply it replaces leaves the conversation."""
    stream = await service.regenerate(session, chat_deps(state), pilot_caller(principal), session_id)
    await session.close()
    return await _answer(request, state, principal.account_id, stream)


@router.get(
    "/sessions/{session_id}/messages/{message_id}/images/{position}",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/gif": {}, "image/webp": {}}}},
)
async def message_image(
    session_id: uuid.UUID,
    message_id: uuid.UUID,
    position: Annotated[int, Path(ge=1, le=MAX_IMAGES)],
    principal: PrincipalDep,
    session: SessionDep,
) -> Response:
    """An image kept with a chat message (1 for its first), as sent: its bytes and media type."""
    image = await service.message_image(session, pilot_caller(principal), session_id, message_id, position)
    # Never sniffed into something else; cached by this browser only (it is the account's data).
    return Response(image.data, media_type=image.media_type,
                    headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"})


@router.get(
    "/sessions/{session_id}/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, 204: {"description": "The chat has no turn yet."}},
)
async def reconnect(
    session_id: uuid.UUID,
    principal: PrincipalDep,
    state: StateDep,
    session: SessionDep,
    turn_id: uuid.UUID | None = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """Reconnect to a turn (the latest by default): frames after `Last-Event-ID`, or the turn's final state."""
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    frames = await service.turn_frames(session, chat_deps(state), pilot_caller(principal), session_id, turn_id, after)
    if frames is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return _event_stream(frames)


@router.post("/sessions/{session_id}/resume", response_model=None, responses=_STREAM_RESPONSES)
async def resume_session(
    session_id: uuid.UUID,
    request: Request,
    principal: EngineerDep,
    state: StateDep,
    session: SessionDep,
    body: ResumeIn | None = None,
) -> object:
    """Resume a session. A chat whose turn paused for approval: apply the decisions (SS-042), run the approved
    calls and continue the turn (JSON or stream, as for messages). A paused chat or guided session: make it
    active again (FP-031).
    """
    caller = pilot_caller(principal)
    if await service.session_kind(session, session_id) != service.CHAT:
        return await pilot_service.resume(session, caller, session_id)
    stream = await service.resume(session, chat_deps(state), caller, session_id, body or ResumeIn())
    if stream is None:
        return (await service.get_chat(session, caller, session_id)).session
    await session.close()
    return await _answer(request, state, principal.account_id, stream)
