"""Approvals pages: the account's inbox of calls waiting for a human, decided ones, and the reusable card."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Form, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from deskpilot.api.routing import JSONRoute
from deskpilot.approvals import service as approvals
from deskpilot.approvals.errors import ApprovalExpired, ApprovalNotFound
from deskpilot.approvals.models import ApprovalRequest, ApprovalStatus, Decision, SourceKind
from deskpilot.errors import DeskpilotError
from deskpilot.identity import service as identity
from deskpilot.identity.models import Role
from deskpilot.storage import utcnow
from deskpilot.web.console import Console, ConsoleDep
from deskpilot.web.rendering import render, render_fragment
from deskpilot.web.routes.pilot import readable

router = APIRouter(prefix="/approvals", include_in_schema=False, route_class=JSONRoute)

STATUS_LABELS: Final[Mapping[str, str]] = {
    "pending": "Waiting",
    "approved": "Approved",
    "rejected": "Rejected",
    "expired": "Expired",
    "executed": "Ran",
    "failed": "Failed",
}
DECISION_LABELS: Final[Mapping[str, str]] = {
    "approve": "Approved",
    "edit": "Approved with edits",
    "reject": "Rejected",
    "approve_always": "Approved always (this session)",
}
SOURCE_LABELS: Final[Mapping[str, str]] = {"chat": "Chat", "automation": "Automation", "agent": "Agent"}
DONE: Final[Mapping[str, str]] = {
    "approve": "Approved: the call runs when its conversation or run continues.",
    "edit": "Approved with your arguments: the call runs when its conversation or run continues.",
    "approve_always": "Approved, and approved for the rest of that session.",
    "reject": "Rejected: the call will not run.",
}
DECIDED_SHOWN = 50


@dataclass(frozen=True, slots=True)
class ApprovalCard:
    """What the card shows about one request; built by `card_view`, read by `approvals/_card.html`."""

    id: uuid.UUID
    tool_name: str
    summary: str
    status: str
    status_label: str
    decision_label: str | None
    source_label: str
    arguments_json: str
    edited_json: str | None
    requested_by: str
    decided_by: str | None
    session_link: str | None
    in_session: bool
    expires_at: datetime
    decided_at: datetime | None
    created_at: datetime
    reason: str | None
    result: str | None

    @property
    def is_open(self) -> bool:
        return self.status == ApprovalStatus.PENDING.value


def _pretty(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False)


def card_view(request: ApprovalRequest, names: Mapping[uuid.UUID, str], now: datetime | None = None) -> ApprovalCard:
    """The card of one request; `names` maps user ids to display names (identity.list_users)."""
    now = now or utcnow()
    status = request.status
    if status is ApprovalStatus.PENDING and request.expires_at <= now:
        status = ApprovalStatus.EXPIRED
    requester = names.get(request.requested_by_id, "A former user") if request.requested_by_id else "The system"
    return ApprovalCard(
        id=request.id,
        tool_name=request.tool_name,
        summary=request.summary,
        status=status.value,
        status_label=STATUS_LABELS[status.value],
        decision_label=DECISION_LABELS[request.decision.value] if request.decision else None,
        source_label=SOURCE_LABELS[request.source_kind.value],
        arguments_json=_pretty(request.arguments),
        edited_json=_pretty(request.edited_arguments) if request.edited_arguments is not None else None,
        requested_by=requester,
        decided_by=names.get(request.decided_by_id, "A former user") if request.decided_by_id else None,
        session_link=approvals.session_link(request),
        in_session=request.session_id is not None,
        expires_at=request.expires_at,
        decided_at=request.decided_at,
        created_at=request.created_at,
        reason=request.reason,
        result=request.result,
    )


async def _names(console: Console) -> dict[uuid.UUID, str]:
    return {u.id: u.name for u in await identity.list_users(console.session)}


async def card_context(
    console: Console, request: ApprovalRequest, *, error: str | None = None, edit_text: str | None = None
) -> dict[str, Any]:
    """The variables `approvals/_card.html` expects, for pages that include the card (the chat page)."""
    return {
        "card": card_view(request, await _names(console)),
        "can_decide": console.principal.can(Role.ENGINEER),
        "card_error": error,
        "edit_text": edit_text,
    }


@router.get("")
async def page_approvals(
    console: ConsoleDep,
    source: Annotated[str, Query(max_length=20)] = "",
) -> HTMLResponse:
    return await _inbox(console, source=source)


async def _inbox(
    console: Console,
    *,
    source: str = "",
    status_code: int = 200,
    errors: Mapping[uuid.UUID, str] | None = None,
    edits: Mapping[uuid.UUID, str] | None = None,
) -> HTMLResponse:
    me = console.principal
    kind = SourceKind(source) if source in SOURCE_LABELS else None
    now = utcnow()
    pending = await approvals.list_pending(console.session, me.account_id, source_kind=kind, now=now)
    decided, decided_total = await approvals.list_requests(
        console.session,
        me.account_id,
        source_kind=kind,
        limit=DECIDED_SHOWN,
        now=now,
        statuses=[s for s in ApprovalStatus if s is not ApprovalStatus.PENDING],
    )
    names = await _names(console)
    return await render(
        console,
        "approvals/inbox.html",
        active="approvals",
        status_code=status_code,
        notice=DONE.get(console.request.query_params.get("done", "")),
        pending=[card_view(r, names, now) for r in pending],
        decided=[card_view(r, names, now) for r in decided],
        decided_total=decided_total,
        source=source if kind else "",
        sources=SOURCE_LABELS,
        can_decide=me.can(Role.ENGINEER),
        errors=errors or {},
        edits=edits or {},
    )


@router.post("/{approval_id}/decide")
async def submit_decision(
    console: ConsoleDep,
    approval_id: uuid.UUID,
    decision: Annotated[str, Form(max_length=20)],
    edited_arguments: Annotated[str | None, Form(max_length=100_000)] = None,
    reason: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    """Decide from a card: the card comes back decided (htmx), or with the problem shown inline."""
    console.require(Role.ENGINEER)
    me = console.principal
    chosen = Decision(decision) if decision in DECISION_LABELS else None
    edit_text = edited_arguments if chosen is Decision.EDIT else None
    try:
        if chosen is None:
            raise ValueError(f"unknown decision {decision!r}")
        outcome = await approvals.decide(
            console.session,
            me.account_id,
            approval_id,
            chosen,
            decided_by=me.actor,
            edited_arguments=(edited_arguments or "") if chosen is Decision.EDIT else None,
            reason=reason.strip() or None,
        )
    except ValueError as e:
        return await _refused(console, approval_id, 422, str(e).capitalize() + ".", edit_text)
    except ApprovalNotFound as e:
        await console.session.rollback()
        return await render(
            console,
            "error.html",
            active="approvals",
            status_code=e.status,
            title="Approval not found",
            message=readable(e),
            back_href="/approvals",
            back_label="Back to Approvals",
        )
    except DeskpilotError as e:
        if isinstance(e, ApprovalExpired):
            await console.session.commit()  # keep the request marked expired
        else:
            await console.session.rollback()
        return await _refused(console, approval_id, e.status, _message(e), edit_text)
    await console.session.commit()
    await approvals.announce(console.state.pubsub, outcome.notifications)
    if not console.is_htmx:
        return RedirectResponse(f"/approvals?done={chosen.value}", status_code=303)
    trigger = {
        "approval-decided": {
            "id": str(approval_id),
            "source_id": str(outcome.request.source_id),
            "status": outcome.request.status.value,
        }
    }
    response = render_fragment(console, "approvals/_card.html", **await card_context(console, outcome.request))
    response.headers["HX-Trigger"] = json.dumps(trigger)
    return response


def _message(exc: DeskpilotError) -> str:
    """The problem for a person: each invalid argument named, else the error's detail."""
    problems = [
        f"{e.get('field')}: {e.get('message')}"
        for e in exc.extra.get("errors", [])
        if isinstance(e, dict) and e.get("field") != "(arguments)"
    ]
    if problems:
        return "These arguments cannot be used — " + "; ".join(problems) + "."
    return readable(exc)


async def _refused(
    console: Console, approval_id: uuid.UUID, status_code: int, message: str, edit_text: str | None
) -> Response:
    request = await approvals.get_request(console.session, console.principal.account_id, approval_id)
    if console.is_htmx:
        return render_fragment(
            console,
            "approvals/_card.html",
            status_code=status_code,
            **await card_context(console, request, error=message, edit_text=edit_text),
        )
    edits = {approval_id: edit_text} if edit_text is not None else {}
    return await _inbox(console, status_code=status_code, errors={approval_id: message}, edits=edits)
