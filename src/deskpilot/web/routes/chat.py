"""Chat pages: the engineer's chats, and one chat with its streamed replies, task lane, facts, fix and approvals.

The page is rendered with the chat's state as it is stored; `static/js/chat.js` then talks to the chat API
(`/api/v1/sessions/{id}/messages`, `/stream`, `/resume`, the diagnosis endpoints, `/api/v1/chats/{id}` and its
`/branches…`) with the session cookie and the page's CSRF token, and keeps the panels up to date from the stream's
data parts.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Form
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from deskpilot.api.deps import pilot_caller
from deskpilot.api.routing import JSONRoute
from deskpilot.chat import service
from deskpilot.chat.schemas import ChatCreate, ChatDetail, ChatRename, TurnOut
from deskpilot.diagnosis import service as diagnosis
from deskpilot.errors import DeskpilotError, NotFound, PermissionDenied
from deskpilot.identity.models import Role
from deskpilot.pilot.lifecycle import Action
from deskpilot.web.console import Console, ConsoleDep
from deskpilot.web.rendering import render, templates
from deskpilot.web.routes.pilot import readable

router = APIRouter(prefix="/chat", include_in_schema=False, route_class=JSONRoute)

STATUS_LABELS: Final[Mapping[str, str]] = {
    "active": "Active",
    "paused": "Paused",
    "resolved": "Resolved",
    "requesting_escalation": "Escalated",
    "abandoned": "Abandoned",
}
OPEN_STATUSES: Final = frozenset({"active", "paused"})
# Outcomes of a lifecycle form, shown after the redirect; fixed keys, so a link cannot inject text.
DONE: Final[Mapping[str, str]] = {
    "paused": "Chat paused. Send a message or resume it to continue.",
    "resumed": "Chat resumed.",
    "resolved": "Chat resolved. The active suggested fix was marked as the one that worked.",
    "renamed": "Chat renamed.",
}
# Data parts of the last turn that the page shows again after a reload.
_KEPT_PARTS: Final = ("suggested-flows", "token-usage", "fork")


# --- reply text: prose and fenced code -------------------------------------------------------------


def segments(text: str | None) -> list[tuple[Literal["text", "code"], str]]:
    """A reply split into prose and fenced code blocks, as chat.js splits it (an open fence runs to the end).

    Nothing is interpreted as markup: the template escapes every piece, and prose keeps its line breaks via CSS.
    """
    out: list[tuple[Literal["text", "code"], str]] = []
    prose: list[str] = []
    code: list[str] | None = None
    for line in (text or "").split("\n"):
        if line.lstrip().startswith("```"):
            if code is None:
                if prose and "\n".join(prose).strip():
                    out.append(("text", "\n".join(prose).strip("\n")))
                prose = []
                code = []
            else:
                out.append(("code", "\n".join(code)))
                code = None
            continue
        (prose if code is None else code).append(line)
    if code is not None:
        out.append(("code", "\n".join(code)))
    elif prose and "\n".join(prose).strip():
        out.append(("text", "\n".join(prose).strip("\n")))
    return out


templates.env.filters["chat_segments"] = segments


# --- helpers ------------------------------------------------------------------------------------------


def _done(console: Console) -> str | None:
    return DONE.get(console.request.query_params.get("done", ""))


async def _error_page(console: Console, exc: DeskpilotError) -> HTMLResponse:
    """Another account's chat (or a guided session) is not found (404); a colleague's chat is refused (403)."""
    await console.session.rollback()
    if isinstance(exc, NotFound):
        title, message = "Chat not found", "There is no such chat in this account. It may have been removed."
    elif isinstance(exc, PermissionDenied):
        title, message = "Not your chat", "This chat belongs to a colleague; only they can open it."
    else:
        title, message = "Something went wrong", readable(exc)
    return await render(
        console,
        "error.html",
        active="chat",
        status_code=exc.status,
        title=title,
        message=message,
        back_href="/chat",
        back_label="Back to Chat",
    )


def _part(turn: TurnOut | None, name: str) -> Any:
    return turn.part(name) if turn is not None else None


async def _branches(console: Console, session_id: uuid.UUID) -> list[dict[str, Any]]:
    """The branch tree as `GET /api/v1/chats/{id}/branches` serves it (empty until the first fork)."""
    tree = await service.branch_tree(console.session, pilot_caller(console.principal), session_id)
    return [node.model_dump(mode="json") for node in tree]


async def _initial_state(console: Console, detail: ChatDetail) -> dict[str, Any]:
    """What chat.js renders the panels from on load: the stored lane, facts, active fix, branches, last turn."""
    sid = detail.session.id
    account_id = console.principal.account_id
    lane = await diagnosis.get_task_lane(console.session, account_id=account_id, session_id=sid)
    facts = await diagnosis.list_facts(console.session, account_id=account_id, session_id=sid)
    fixes = await diagnosis.list_suggested_fixes(console.session, account_id=account_id, session_id=sid)
    last = detail.last_turn
    kept = {name: _part(last, name) for name in _KEPT_PARTS}
    return {
        "session": detail.session.model_dump(mode="json"),
        "last_turn": {
            "id": str(last.id),
            "status": last.status,
            "assistant_message_id": str(last.assistant_message_id) if last.assistant_message_id else None,
            "error_code": last.error_code,
        }
        if last
        else None,
        "lane": lane.lane.model_dump(mode="json") if lane.lane else None,
        "facts": [f.model_dump(mode="json") for f in facts.facts],
        "fix": fixes.active.model_dump(mode="json") if fixes.active else None,
        "branches": await _branches(console, sid),
        "flows": kept["suggested-flows"] or [],
        "usage": kept["token-usage"],
        "fork": kept["fork"],
        "interrupt": _part(last, "interrupt-request") if last and last.status == "awaiting_approval" else None,
    }


def _shown_messages(detail: ChatDetail) -> Sequence[Any]:
    """The transcript; the reply of a turn still running is left to chat.js, which reconnects to its stream."""
    last = detail.last_turn
    running = last.assistant_message_id if last is not None and last.status == "running" else None
    return [m for m in detail.messages if m.id != running and (m.role == "user" or m.content)]


# --- pages --------------------------------------------------------------------------------------------


@router.get("")
async def page_chats(console: ConsoleDep) -> HTMLResponse:
    chats = await service.list_chats(console.session, pilot_caller(console.principal), limit=100)
    return await render(
        console,
        "chat/list.html",
        active="chat",
        chats=chats,
        labels=STATUS_LABELS,
        can_work=console.principal.can(Role.ENGINEER),
        llm_configured=console.state.llm.configured,
    )


@router.post("")
async def submit_new_chat(console: ConsoleDep) -> Response:
    console.require(Role.ENGINEER)
    chat = await service.create_chat(console.session, pilot_caller(console.principal), ChatCreate())
    return RedirectResponse(f"/chat/{chat.id}", status_code=303)


@router.get("/{session_id}")
async def page_chat(console: ConsoleDep, session_id: uuid.UUID) -> HTMLResponse:
    try:
        detail = await service.get_chat(console.session, pilot_caller(console.principal), session_id)
    except DeskpilotError as e:
        return await _error_page(console, e)
    state = await _initial_state(console, detail)
    return await render(
        console,
        "chat/page.html",
        active="chat",
        notice=_done(console),
        detail=detail,
        chat=detail.session,
        messages=_shown_messages(detail),
        state=state,
        labels=STATUS_LABELS,
        can_work=console.principal.can(Role.ENGINEER),
        is_open=detail.session.status in OPEN_STATUSES,
        llm_configured=console.state.llm.configured,
        can_attach=service.takes_images(console.state.llm),
    )


async def _not_done(console: Console, session_id: uuid.UUID, status: int, title: str, message: str) -> HTMLResponse:
    """A chat action the engineer may not take now: why, and the way back to the chat."""
    await console.session.rollback()
    return await render(
        console, "error.html", active="chat", status_code=status, title=title, message=message,
        back_href=f"/chat/{session_id}", back_label="Back to the chat",
    )


async def _lifecycle(console: Console, session_id: uuid.UUID, action: Action, done: str) -> Response:
    console.require(Role.ENGINEER)
    try:
        await service.change_status(console.session, pilot_caller(console.principal), session_id, action)
    except (NotFound, PermissionDenied) as e:
        return await _error_page(console, e)
    except DeskpilotError as e:
        return await _not_done(console, session_id, e.status, "Not possible", readable(e))
    return RedirectResponse(f"/chat/{session_id}?done={done}", status_code=303)


@router.post("/{session_id}/rename")
async def submit_rename(
    console: ConsoleDep, session_id: uuid.UUID, title: Annotated[str, Form(max_length=400)] = ""
) -> Response:
    console.require(Role.ENGINEER)
    try:
        request = ChatRename(title=title)
    except ValidationError:
        return await _not_done(console, session_id, 422, "Not renamed", "A chat title is 1 to 100 characters.")
    try:
        await service.rename(console.session, pilot_caller(console.principal), session_id, request)
    except (NotFound, PermissionDenied) as e:
        return await _error_page(console, e)
    return RedirectResponse(f"/chat/{session_id}?done=renamed", status_code=303)


@router.post("/{session_id}/pause")
async def submit_pause(console: ConsoleDep, session_id: uuid.UUID) -> Response:
    return await _lifecycle(console, session_id, Action.PAUSE, "paused")


@router.post("/{session_id}/resume")
async def submit_resume(console: ConsoleDep, session_id: uuid.UUID) -> Response:
    return await _lifecycle(console, session_id, Action.RESUME, "resumed")


@router.post("/{session_id}/resolve")
async def submit_resolve(console: ConsoleDep, session_id: uuid.UUID) -> Response:
    return await _lifecycle(console, session_id, Action.RESOLVE, "resolved")
