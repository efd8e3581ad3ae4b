"""Pilot pages: intake, my sessions and the escalation queue, the session with its steps and branches, documentation."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup, escape
from pydantic import ValidationError

from deskpilot.api.deps import pilot_caller, pilot_deps
from deskpilot.api.routing import JSONRoute
from deskpilot.errors import DeskpilotError, NotFound, PermissionDenied, ValidationFailed
from deskpilot.events import audit
from deskpilot.identity import service as identity
from deskpilot.identity.models import Role
from deskpilot.knowledge import service as knowledge
from deskpilot.knowledge.models import FlowStatus, ScriptTemplate
from deskpilot.llm import LLMNotConfigured
from deskpilot.pilot import communications, documentation, service
from deskpilot.pilot.access import Caller
from deskpilot.pilot.errors import NoLLMNoFlow, StepGenerationFailed
from deskpilot.pilot.schemas import (
    AbandonRequest,
    ActionResultIn,
    BranchNode,
    EscalateRequest,
    EscalationPackage,
    LinkTicketRequest,
    MarkBranchRequest,
    PickupRequest,
    RateRequest,
    ResolveRequest,
    ReviveBranchRequest,
    SessionCreate,
    SessionDetail,
    StepOut,
    StepResponse,
)
from deskpilot.psa import service as psa
from deskpilot.psa.base import TicketSummary
from deskpilot.psa.models import PsaPush, PushStatus
from deskpilot.storage import utcnow
from deskpilot.web.console import Console, ConsoleDep
from deskpilot.web.rendering import render, render_fragment, templates

router = APIRouter(prefix="/pilot", include_in_schema=False, route_class=JSONRoute)

STATUS_LABELS: Final[Mapping[str, str]] = {
    "active": "Active", "paused": "Paused", "resolved": "Resolved",
    "requesting_escalation": "Escalated", "abandoned": "Abandoned",
}
TIER_LABELS: Final[Mapping[str, str]] = {"discovery": "Discovery", "exploring": "Exploring", "guided": "Guided"}
TIER_HELP: Final[Mapping[str, str]] = {
    "discovery": "Below 40 % confidence: broad questions to narrow the problem down.",
    "exploring": "40–80 % confidence: targeted checks of the likely causes.",
    "guided": "80 % confidence or more: a specific fix.",
}
BRANCH_LABELS: Final[Mapping[str, str]] = {
    "active": "Active", "untried": "Untried", "dead_end": "Dead end", "solved": "Solved", "revived": "Revived",
}
ACTION_TYPES: Final[Mapping[str, str]] = {
    "instruction": "Instruction", "script_generation": "Run a script", "verification": "Verification",
    "info_request": "Information needed", "open_script_builder": "Write a script",
}
STEP_TITLES: Final[Mapping[str, str]] = {
    "question": "Question", "action": "Action", "resolution_suggestion": "Suggested resolution",
    "fork": "Fork: several explanations", "briefing": "Escalation briefing", "status_update": "Status update",
}
AUDIENCES: Final[Mapping[str, str]] = {
    "ticket_notes": "Ticket notes", "client_update": "Client update", "request_info": "Request info",
    "email_draft": "Email draft",
}
AUDIENCE_HELP: Final[Mapping[str, str]] = {
    "ticket_notes": "Internal, technical notes for the PSA ticket.",
    "client_update": "A plain-language update for the client, without jargon.",
    "request_info": "A message asking the client for what we still need to know.",
    "email_draft": "An email to the client with a subject line.",
}
UPDATE_CONTEXTS: Final[Mapping[str, str]] = {
    "status": "Progress update", "resolution": "Resolution", "escalation": "Escalation",
}
LENGTHS: Final[Mapping[str, str]] = {"quick": "Quick", "full": "Full"}
AUDIENCE_KEYS: Final[tuple[communications.Audience, ...]] = (
    "ticket_notes", "client_update", "request_info", "email_draft",
)
CONTEXT_KEYS: Final[tuple[communications.UpdateContext, ...]] = ("status", "resolution", "escalation")
LENGTH_KEYS: Final[tuple[communications.Length, ...]] = ("quick", "full")
PUSH_KINDS: Final[Mapping[str, str]] = {"note": "Note", "time_entry": "Time entry"}
LANGUAGES: Final[Mapping[str, str]] = {"powershell": "PowerShell", "bash": "Bash", "python": "Python"}
# Outcomes of a form post, shown on the page the post redirects to; fixed keys, so a link cannot inject text.
DONE: Final[Mapping[str, str]] = {
    "resolved": "Session resolved. Its documentation is below.",
    "escalated": "Session escalated. Your team has been notified.",
    "paused": "Session paused. Resume it when you are ready.",
    "resumed": "Session resumed.",
    "abandoned": "Session closed without a resolution.",
    "picked-up": "You picked the session up. Read the briefing, then continue.",
    "rated": "Thanks — your rating was saved.",
    "ticket-linked": "Ticket linked; its context joins the next steps.",
    "push-retried": "The PSA push was sent again.",
}
LABELS: Final[Mapping[str, Mapping[str, str]]] = {
    "status": STATUS_LABELS, "tier": TIER_LABELS, "tier_help": TIER_HELP, "branch": BRANCH_LABELS,
    "action_type": ACTION_TYPES, "step": STEP_TITLES, "audience": AUDIENCES, "audience_help": AUDIENCE_HELP,
    "context": UPDATE_CONTEXTS, "length": LENGTHS, "push": PUSH_KINDS, "language": LANGUAGES,
}
OPEN_STATUSES: Final = frozenset({"active", "paused"})
EMPTY_RESPONSE: Final = "Choose an option, type an answer or skip this step."


# --- safe markdown ------------------------------------------------------------------------------------

_FENCE = re.compile(r"^\s*```")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^\s*[-*+]\s+(.*)$")
_NUMBERED = re.compile(r"^\s*\d+[.)]\s+(.*)$")
_BOLD = re.compile(r"\*\*(.+?)\*\*")


def _inline(text: str) -> str:
    """Escaped text with `code` spans and **bold**; only tags this function writes reach the page."""
    parts = str(escape(text)).split("`")
    # An odd number of parts means every backtick is paired; otherwise the last one stays a literal backtick.
    paired = len(parts) if len(parts) % 2 == 1 else len(parts) - 1
    out: list[str] = []
    for i, part in enumerate(parts):
        if i % 2 == 1 and i < paired:
            out.append(f"<code>{part}</code>")
        else:
            out.append(("`" if i % 2 == 1 else "") + _BOLD.sub(r"<strong>\1</strong>", part))
    return "".join(out)


def markdown_html(text: str | None, heading_offset: int = 1) -> Markup:
    """A small, safe markdown renderer: headings, lists, paragraphs, fenced code, `code` and **bold**.

    Everything is HTML-escaped first, so text from the LLM or a PSA ticket cannot inject markup. Headings are
    shifted down by `heading_offset` because the page already has its own h1.
    """
    html: list[str] = []
    paragraph: list[str] = []
    items: list[str] = []
    list_tag: str | None = None
    code: list[str] | None = None

    def flush() -> None:
        nonlocal list_tag
        if paragraph:
            html.append("<p>" + "<br>".join(_inline(line.strip()) for line in paragraph) + "</p>")
            paragraph.clear()
        if list_tag is not None:
            html.append(f"<{list_tag}>" + "".join(f"<li>{item}</li>" for item in items) + f"</{list_tag}>")
            items.clear()
            list_tag = None

    for line in (text or "").splitlines():
        if code is not None:
            if _FENCE.match(line):
                html.append("<pre><code>" + str(escape("\n".join(code))) + "</code></pre>")
                code = None
            else:
                code.append(line)
            continue
        if _FENCE.match(line):
            flush()
            code = []
            continue
        if not line.strip():
            flush()
            continue
        if heading := _HEADING.match(line):
            flush()
            level = min(len(heading.group(1)) + heading_offset, 6)
            html.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
            continue
        bullet, numbered = _BULLET.match(line), _NUMBERED.match(line)
        if bullet or numbered:
            tag = "ul" if bullet else "ol"
            if paragraph or (list_tag is not None and list_tag != tag):
                flush()
            list_tag = tag
            items.append(_inline((bullet or numbered).group(1)))  # type: ignore[union-attr]
            continue
        if list_tag is not None and line[:1].isspace() and items:
            # An indented line under a list item continues that item (the briefing's "→ answer" lines).
            items[-1] += "<br>" + _inline(line.strip())
            continue
        if list_tag is not None:
            flush()
        paragraph.append(line)
    if code is not None:
        html.append("<pre><code>" + str(escape("\n".join(code))) + "</code></pre>")
    flush()
    return Markup("\n".join(html))  # noqa: S704 - every piece above is escaped


def percent(value: float | None) -> str:
    return "—" if value is None else f"{round(value * 100)}%"


templates.env.filters["markdown"] = markdown_html
templates.env.filters["percent"] = percent


# --- helpers ------------------------------------------------------------------------------------------


def readable(exc: DeskpilotError | ValidationError) -> str:
    """A message for a person: the domain error's detail, or each invalid field named plainly."""
    if isinstance(exc, DeskpilotError):
        return exc.detail[:1].upper() + exc.detail[1:]
    parts = []
    for err in exc.errors():
        field = str(err["loc"][-1]).replace("_", " ") if err["loc"] else "value"
        message = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{field.capitalize()}: {message[:1].lower() + message[1:]}")
    return "; ".join(parts) + "."


def _caller(console: Console) -> Caller:
    return pilot_caller(console.principal)


def _parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value.strip()) if value.strip() else None
    except ValueError:
        return None


def _redirect(path: str, done: str | None = None) -> RedirectResponse:
    return RedirectResponse(f"{path}?done={done}" if done else path, status_code=303)


def _done(console: Console) -> str | None:
    return DONE.get(console.request.query_params.get("done", ""))


async def _user_names(console: Console) -> dict[uuid.UUID, str]:
    return {u.id: u.name for u in await identity.list_users(console.session)}


async def _error_page(console: Console, exc: DeskpilotError) -> HTMLResponse:
    """The session cannot be shown to this user: another account's is simply not found (404), a colleague's
    session that is not waiting for the team is refused (403)."""
    await console.session.rollback()
    if isinstance(exc, NotFound):
        title, message = "Session not found", "There is no such session in this account. It may have been removed."
    elif isinstance(exc, PermissionDenied):
        title = "Not your session"
        message = ("This session belongs to a colleague and is not waiting for your team. You can open it when it "
                   "is escalated to you or your team.")
    else:
        title, message = "Something went wrong", readable(exc)
    return await render(console, "error.html", active="pilot", status_code=exc.status, title=title,
                        message=message, back_href="/pilot", back_label="Back to Pilot")


# --- home: intake, my sessions, escalation queue ---------------------------------------------------


async def _home(
    console: Console,
    *,
    status_code: int = 200,
    values: Mapping[str, str] | None = None,
    intake_error: str | None = None,
    saved_session: uuid.UUID | None = None,
    queue_error: tuple[uuid.UUID, str] | None = None,
) -> HTMLResponse:
    caller = _caller(console)
    sessions = await service.list_sessions(console.session, caller, limit=50)
    queue = await service.list_escalation_queue(console.session, caller)
    connections = await psa.list_connections(console.session)
    approved = await knowledge.list_flows(console.session, status=FlowStatus.APPROVED)
    return await render(
        console, "pilot/home.html", active="pilot", status_code=status_code, notice=_done(console),
        sessions=sessions, queue=queue, clients=await identity.list_clients(console.session),
        connections=connections, names=await _user_names(console), values=values or {},
        intake_error=intake_error, saved_session=saved_session, queue_error=queue_error,
        can_work=console.principal.can(Role.ENGINEER), llm_configured=console.state.llm.configured,
        approved_flows=len(approved), labels=LABELS, max_steps=service.MAX_STEPS_PER_SESSION,
    )


@router.get("")
async def page_pilot(console: ConsoleDep) -> HTMLResponse:
    return await _home(console)


@router.get("/tickets")
async def fragment_ticket_search(
    console: ConsoleDep,
    q: Annotated[str, Query(max_length=200)] = "",
    psa_connection_id: Annotated[str, Query(max_length=40)] = "",
) -> HTMLResponse:
    """Ticket picker results for the intake form (htmx); a PSA that fails is reported in place."""
    connection_id = _parse_uuid(psa_connection_id)
    tickets: list[TicketSummary] = []
    error: str | None = None
    if connection_id is None:
        error = "Choose a PSA connection first."
    elif len(q.strip()) >= 2:
        try:
            tickets = await psa.search_tickets(console.session, console.state.secrets, connection_id, q.strip(),
                                               limit=10, http_client=console.state.http)
        except DeskpilotError as e:
            error = f"The ticket search failed: {readable(e)}"
    return render_fragment(console, "pilot/_ticket_results.html", tickets=tickets, error=error, query=q.strip())


@router.post("/sessions")
async def submit_new_session(
    console: ConsoleDep,
    text: Annotated[str, Form()] = "",
    log_content: Annotated[str, Form()] = "",
    client_id: Annotated[str, Form(max_length=40)] = "",
    psa_connection_id: Annotated[str, Form(max_length=40)] = "",
    psa_ticket_id: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    console.require(Role.ENGINEER)
    values = {"text": text, "log_content": log_content, "client_id": client_id,
              "psa_connection_id": psa_connection_id, "psa_ticket_id": psa_ticket_id}
    ticket = psa_ticket_id.strip().lstrip("#") or None
    connection = _parse_uuid(psa_connection_id) if ticket else None
    try:
        request = SessionCreate(text=text, log_content=log_content, client_id=_parse_uuid(client_id),
                                psa_connection_id=connection, psa_ticket_id=ticket)
        started = await service.start_session(console.session, pilot_deps(console.state), _caller(console), request)
    except StepGenerationFailed as e:
        # The intake is stored; the session page shows why no step came and offers a retry.
        return _redirect(f"/pilot/{e.extra['session_id']}")
    except NoLLMNoFlow as e:
        saved = _parse_uuid(str(e.extra.get("session_id", "")))
        message = ("No LLM provider is configured and no runbook in Knowledge matches this problem, so Pilot cannot "
                   "suggest a first step. Your description is kept below and the session is saved: add or approve a "
                   "matching flow in Knowledge (or configure an LLM), then retry it.")
        return await _home(console, status_code=503, values=values, intake_error=message, saved_session=saved)
    except (DeskpilotError, ValidationError) as e:
        await console.session.rollback()
        status_code = e.status if isinstance(e, DeskpilotError) else 422
        return await _home(console, status_code=status_code, values=values, intake_error=readable(e))
    return _redirect(f"/pilot/{started.session_id}")


# --- the session page ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScriptPreview:
    """A script_generation step's template, filled with the step's parameters when they are valid."""

    template_id: str
    template: ScriptTemplate | None
    params: Mapping[str, object]
    script: str | None
    error: str | None

    @property
    def library_query(self) -> str:
        """The parameters as `?p.<name>=…`, so the script library opens with them filled in."""
        values = {f"p.{k}": str(v).lower() if isinstance(v, bool) else str(v) for k, v in self.params.items()}
        return "?" + urlencode(values) if values else ""


async def _template_for(console: Console, ref: str) -> ScriptTemplate | None:
    """The template a step names: by id (LLM steps, flow steps once resolved) or by slug (a runbook's name)."""
    template_id = _parse_uuid(ref)
    try:
        if template_id is not None:
            return await knowledge.get_template(console.session, template_id)
    except NotFound:
        return None
    return await knowledge.get_template_by_slug(console.session, console.principal.account_id, ref)


async def _script_preview(console: Console, step: StepOut | None) -> ScriptPreview | None:
    if step is None or step.content.get("action_type") != "script_generation":
        return None
    ref = str(step.content.get("template_id") or step.content.get("template_slug") or "")
    raw = step.content.get("pre_filled_params")
    params: dict[str, object] = dict(raw) if isinstance(raw, dict) else {}
    template = await _template_for(console, ref) if ref else None
    if template is None:
        return ScriptPreview(ref, None, params, None, "This script template is not in the library.")
    values = {k: (v if isinstance(v, str | int | bool) else str(v)) for k, v in params.items()}
    try:
        rendered = await knowledge.render_template(console.session, template.id, values)
    except DeskpilotError as e:
        return ScriptPreview(ref, template, params, None, readable(e))
    return ScriptPreview(ref, template, rendered.params, rendered.script, None)


def _flatten(nodes: Iterable[BranchNode]) -> Iterable[BranchNode]:
    for node in nodes:
        yield node
        yield from _flatten(node.children)


def _answer(step: StepOut, branch_labels: Mapping[str, str]) -> str | None:
    """What the engineer answered, in words: the option's label (a branch's name for a fork), typed text."""
    if step.was_skipped:
        return "Skipped"
    parts: list[str] = []
    if step.selected_option:
        label = next((str(o.get("label")) for o in step.options if o.get("value") == step.selected_option), None)
        parts.append(label or branch_labels.get(step.selected_option, step.selected_option))
    if step.free_text_input and step.free_text_input.strip():
        parts.append(step.free_text_input.strip())
    return " — ".join(parts) or None


def _mode_explanation(detail: SessionDetail, llm_configured: bool) -> str | None:
    if detail.mode != "flow":
        return None
    flow = f"“{detail.matched_flow_name}”" if detail.matched_flow_name else "the matched runbook"
    if not llm_configured:
        return (f"No LLM configured — this session follows the runbook {flow} from Knowledge, step by step. Your "
                "answers choose the runbook's next step; when it ends, resolve or escalate the session.")
    return (f"The LLM provider did not answer — this session follows the runbook {flow} until it ends; then the "
            "LLM is tried again.")


async def _session_context(console: Console, detail: SessionDetail, **extra: Any) -> dict[str, Any]:
    me = console.principal
    current = next((s for s in detail.steps if s.step_id == detail.current_step_id), None)
    if current is not None and (current.responded_at is not None or detail.status in ("resolved", "abandoned")):
        # A closed session has no step to work on; its last step reads as history.
        current = None
    history = [s for s in detail.steps if current is None or s.step_id != current.step_id]
    nodes = list(_flatten(detail.branches))
    branch_labels = {str(n.id): n.label for n in nodes}
    answers = {s.step_id: _answer(s, branch_labels) for s in detail.steps}
    is_party = me.user_id in (detail.user_id, detail.escalated_to_id, detail.picked_up_by_id)
    can_work = me.can(Role.ENGINEER) and is_party
    package = EscalationPackage.model_validate(detail.escalation_package) if detail.escalation_package else None
    escalated_by = package.original_user_id if package is not None else detail.user_id
    can_pickup = (
        detail.status == "requesting_escalation" and me.can(Role.ENGINEER) and me.user_id != escalated_by
        and ((me.team_id is not None and me.team_id == detail.team_id) or me.user_id == detail.escalated_to_id)
    )
    users = await identity.list_users(console.session)
    teams = {t.id: t.name for t in await identity.list_teams(console.session)}
    open_ = detail.status in OPEN_STATUSES
    connections = await psa.list_connections(console.session) if can_work and open_ else []
    return {
        "detail": detail, "current": current, "history": history, "answers": answers,
        "branch_labels": branch_labels, "branch_nodes": nodes, "script": await _script_preview(console, current),
        "mode_explanation": _mode_explanation(detail, console.state.llm.configured),
        "can_work": can_work, "can_pickup": can_pickup, "is_open": open_, "package": package,
        "names": {u.id: u.name for u in users}, "teams": teams,
        "colleagues": [u for u in users if u.is_active and u.id != me.user_id and u.role is not Role.VIEWER],
        "connections": connections, "labels": LABELS, "max_steps": service.MAX_STEPS_PER_SESSION,
        "client_name": detail.intake.get("client_name"), **extra,
    }


async def _session_response(
    console: Console, session_id: uuid.UUID, *, status_code: int = 200, error: str | None = None,
    announce: bool = False, **extra: Any,
) -> Response:
    """The session page, or its `#session` region for an htmx swap; errors are shown inline."""
    try:
        detail = await service.get_session(console.session, _caller(console), session_id)
    except DeskpilotError as e:
        if console.is_htmx:
            await console.session.rollback()
            return render_fragment(console, "pilot/_gone.html", status_code=e.status, message=readable(e))
        return await _error_page(console, e)
    # The announcement is an out-of-band swap into the page's live region: only a swapped fragment carries it.
    context = await _session_context(console, detail, error=error, announce=announce and console.is_htmx, **extra)
    if console.is_htmx:
        return render_fragment(console, "pilot/_session.html", status_code=status_code, **context)
    return await render(console, "pilot/session.html", active="pilot", status_code=status_code,
                        notice=_done(console), **context)


async def _after(console: Console, session_id: uuid.UUID, error: DeskpilotError | ValidationError | None) -> Response:
    """What a step form gets back: the updated session (htmx) or a redirect to it; errors inline with their status.

    A failed generation is not the engineer's mistake and their input is stored: the page shows the reason and a
    Retry button with status 200, so htmx swaps it in.
    """
    if error is None:
        if console.is_htmx:
            return await _session_response(console, session_id, announce=True)
        return _redirect(f"/pilot/{session_id}")
    await console.session.rollback()
    if isinstance(error, StepGenerationFailed | NoLLMNoFlow):
        return await _session_response(console, session_id, announce=True)
    status_code = error.status if isinstance(error, DeskpilotError) else 422
    return await _session_response(console, session_id, status_code=status_code, error=readable(error))


@router.get("/{session_id}")
async def page_session(console: ConsoleDep, session_id: uuid.UUID) -> Response:
    return await _session_response(console, session_id)


def _step_response(step_id: str, selected_option: str, answer: str, free_text: str, details: str) -> StepResponse:
    sid = _parse_uuid(step_id)
    text = free_text.strip() or None
    if answer == "skip":
        return StepResponse(step_id=sid, was_skipped=True)
    if answer in ("success", "failure"):
        return StepResponse(step_id=sid, free_text_input=text,
                            action_result=ActionResultIn(success=answer == "success", details=details.strip() or None))
    if selected_option:
        return StepResponse(step_id=sid, selected_option=selected_option, free_text_input=text)
    if text:
        return StepResponse(step_id=sid, free_text_input=text)
    raise ValidationFailed(EMPTY_RESPONSE, code="empty_response")


@router.post("/{session_id}/respond")
async def submit_response(
    console: ConsoleDep,
    session_id: uuid.UUID,
    step_id: Annotated[str, Form(max_length=40)] = "",
    selected_option: Annotated[str, Form(max_length=200)] = "",
    answer: Annotated[str, Form(max_length=20)] = "",
    free_text_input: Annotated[str, Form(max_length=20_000)] = "",
    details: Annotated[str, Form(max_length=10_000)] = "",
) -> Response:
    console.require(Role.ENGINEER)
    try:
        response = _step_response(step_id, selected_option, answer, free_text_input, details)
        await service.respond(console.session, pilot_deps(console.state), _caller(console), session_id, response)
    except (DeskpilotError, ValidationError) as e:
        return await _after(console, session_id, e)
    return await _after(console, session_id, None)


@router.post("/{session_id}/retry")
async def submit_retry(console: ConsoleDep, session_id: uuid.UUID) -> Response:
    console.require(Role.ENGINEER)
    try:
        await service.retry_generation(console.session, pilot_deps(console.state), _caller(console), session_id)
    except DeskpilotError as e:
        return await _after(console, session_id, e)
    return await _after(console, session_id, None)


@router.post("/{session_id}/branches/{branch_id}/switch")
async def submit_switch_branch(console: ConsoleDep, session_id: uuid.UUID, branch_id: uuid.UUID) -> Response:
    console.require(Role.ENGINEER)
    try:
        await service.switch_branch(console.session, pilot_deps(console.state), _caller(console), session_id,
                                    branch_id)
    except DeskpilotError as e:
        return await _after(console, session_id, e)
    return await _after(console, session_id, None)


@router.post("/{session_id}/branches/{branch_id}/mark")
async def submit_mark_branch(
    console: ConsoleDep, session_id: uuid.UUID, branch_id: uuid.UUID,
    status: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    console.require(Role.ENGINEER)
    try:
        request = MarkBranchRequest.model_validate({"status": status})
        await service.mark_branch(console.session, _caller(console), session_id, branch_id, request)
    except (DeskpilotError, ValidationError) as e:
        return await _after(console, session_id, e)
    return await _after(console, session_id, None)


@router.post("/{session_id}/branches/{branch_id}/revive")
async def submit_revive_branch(
    console: ConsoleDep, session_id: uuid.UUID, branch_id: uuid.UUID,
    evidence: Annotated[str, Form(max_length=20_000)] = "",
) -> Response:
    console.require(Role.ENGINEER)
    try:
        if not evidence.strip():
            raise ValidationFailed("Say what new evidence reopens this branch.", code="evidence_required")
        await service.revive_branch(console.session, pilot_deps(console.state), _caller(console), session_id,
                                    branch_id, ReviveBranchRequest(evidence=evidence.strip()))
    except (DeskpilotError, ValidationError) as e:
        return await _after(console, session_id, e)
    return await _after(console, session_id, None)


# --- lifecycle: plain forms that redirect -------------------------------------------------------------


async def _lifecycle_error(console: Console, session_id: uuid.UUID, error: DeskpilotError | ValidationError,
                           **extra: Any) -> Response:
    await console.session.rollback()
    if isinstance(error, DeskpilotError) and error.status == 404:
        return await _error_page(console, error)
    status_code = error.status if isinstance(error, DeskpilotError) else 422
    return await _session_response(console, session_id, status_code=status_code, error=readable(error), **extra)


@router.post("/{session_id}/pause")
async def submit_pause(console: ConsoleDep, session_id: uuid.UUID) -> Response:
    console.require(Role.ENGINEER)
    try:
        await service.pause(console.session, _caller(console), session_id)
    except DeskpilotError as e:
        return await _lifecycle_error(console, session_id, e)
    return _redirect(f"/pilot/{session_id}", "paused")


@router.post("/{session_id}/resume")
async def submit_resume(console: ConsoleDep, session_id: uuid.UUID) -> Response:
    console.require(Role.ENGINEER)
    try:
        await service.resume(console.session, _caller(console), session_id)
    except DeskpilotError as e:
        return await _lifecycle_error(console, session_id, e)
    return _redirect(f"/pilot/{session_id}", "resumed")


@router.post("/{session_id}/abandon")
async def submit_abandon(
    console: ConsoleDep, session_id: uuid.UUID, reason: Annotated[str, Form(max_length=10_000)] = "",
) -> Response:
    console.require(Role.ENGINEER)
    try:
        await service.abandon(console.session, _caller(console), session_id,
                              AbandonRequest(reason=reason.strip() or None))
    except DeskpilotError as e:
        return await _lifecycle_error(console, session_id, e, open_dialog="abandon")
    return _redirect(f"/pilot/{session_id}", "abandoned")


def _rating(value: str) -> int | None:
    return int(value) if value in ("1", "2", "3", "4", "5") else None


@router.post("/{session_id}/resolve")
async def submit_resolve(
    console: ConsoleDep,
    session_id: uuid.UUID,
    resolution_summary: Annotated[str, Form(max_length=10_000)] = "",
    resolution_action: Annotated[str, Form(max_length=10_000)] = "",
    rating: Annotated[str, Form(max_length=2)] = "",
    feedback: Annotated[str, Form(max_length=10_000)] = "",
) -> Response:
    console.require(Role.ENGINEER)
    try:
        if not resolution_summary.strip():
            raise ValidationFailed("Write a resolution summary: it goes into the documentation and the ticket.",
                                   code="summary_required")
        request = ResolveRequest(resolution_summary=resolution_summary.strip(),
                                 resolution_action=resolution_action.strip() or None, rating=_rating(rating),
                                 feedback=feedback.strip() or None)
        await service.resolve(console.session, pilot_deps(console.state), _caller(console), session_id, request)
    except (DeskpilotError, ValidationError) as e:
        return await _lifecycle_error(console, session_id, e, open_dialog="resolve",
                                      resolve_values={"resolution_summary": resolution_summary,
                                                      "resolution_action": resolution_action})
    return _redirect(f"/pilot/{session_id}/documentation", "resolved")


@router.post("/{session_id}/escalate")
async def submit_escalate(
    console: ConsoleDep,
    session_id: uuid.UUID,
    reason: Annotated[str, Form(max_length=10_000)] = "",
    target_user_id: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    console.require(Role.ENGINEER)
    try:
        if not reason.strip():
            raise ValidationFailed("Say why you escalate: the next engineer reads it first.", code="reason_required")
        request = EscalateRequest(reason=reason.strip(), target_user_id=_parse_uuid(target_user_id))
        await service.escalate(console.session, pilot_deps(console.state), _caller(console), session_id, request)
    except (DeskpilotError, ValidationError) as e:
        return await _lifecycle_error(console, session_id, e, open_dialog="escalate", escalate_reason=reason)
    return _redirect(f"/pilot/{session_id}", "escalated")


@router.post("/{session_id}/pickup")
async def submit_pickup(
    console: ConsoleDep,
    session_id: uuid.UUID,
    resume_mode: Annotated[str, Form(max_length=10)] = "continue",
    additional_context: Annotated[str, Form(max_length=20_000)] = "",
    origin: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    console.require(Role.ENGINEER)
    try:
        request = PickupRequest.model_validate({"resume_mode": resume_mode,
                                                "additional_context": additional_context.strip() or None})
        await service.pickup(console.session, pilot_deps(console.state), _caller(console), session_id, request)
    except (StepGenerationFailed, NoLLMNoFlow):
        # Picked up; only the next step is missing, and the session page offers the retry.
        return _redirect(f"/pilot/{session_id}", "picked-up")
    except (DeskpilotError, ValidationError) as e:
        if origin == "queue" and not (isinstance(e, DeskpilotError) and e.status == 404):
            await console.session.rollback()
            status_code = e.status if isinstance(e, DeskpilotError) else 422
            return await _home(console, status_code=status_code, queue_error=(session_id, readable(e)))
        return await _lifecycle_error(console, session_id, e)
    return _redirect(f"/pilot/{session_id}", "picked-up")


@router.post("/{session_id}/rate")
async def submit_rate(
    console: ConsoleDep, session_id: uuid.UUID,
    rating: Annotated[str, Form(max_length=2)] = "", feedback: Annotated[str, Form(max_length=10_000)] = "",
) -> Response:
    console.require(Role.ENGINEER)
    value = _rating(rating)
    try:
        if value is None:
            raise ValidationFailed("Choose a rating from 1 to 5.", code="rating_required")
        await service.rate(console.session, _caller(console), session_id,
                           RateRequest(rating=value, feedback=feedback.strip() or None))
    except DeskpilotError as e:
        await console.session.rollback()
        if e.status == 404:
            return await _error_page(console, e)
        return await _documentation_page(console, session_id, status_code=e.status, rate_error=readable(e))
    return _redirect(f"/pilot/{session_id}/documentation", "rated")


@router.post("/{session_id}/ticket")
async def submit_link_ticket(
    console: ConsoleDep, session_id: uuid.UUID,
    psa_connection_id: Annotated[str, Form(max_length=40)] = "",
    psa_ticket_id: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    console.require(Role.ENGINEER)
    try:
        connection = _parse_uuid(psa_connection_id)
        if connection is None:
            raise ValidationFailed("Choose the PSA connection the ticket is in.", code="connection_required")
        request = LinkTicketRequest(psa_connection_id=connection, psa_ticket_id=psa_ticket_id.strip().lstrip("#"))
        await service.link_ticket(console.session, pilot_deps(console.state), _caller(console), session_id, request)
    except (DeskpilotError, ValidationError) as e:
        return await _lifecycle_error(console, session_id, e)
    return _redirect(f"/pilot/{session_id}", "ticket-linked")


# --- documentation, PSA push and communications ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class PsaOutcome:
    """Where the session's notes stand on the linked ticket (FP-044)."""

    status: Literal["no_psa", "not_sent", "pushed", "failed", "pending"]
    pushes: Sequence[PsaPush]
    error: str | None
    warning: str | None


async def _psa_outcome(console: Console, detail: SessionDetail) -> PsaOutcome:
    if detail.psa_connection_id is None or not detail.psa_ticket_id:
        return PsaOutcome("no_psa", [], None, None)
    pushes = await psa.list_pushes(console.session, subject_id=detail.id, subject_type=communications.SUBJECT_TYPE)
    if not pushes:
        return PsaOutcome("not_sent", pushes, None, None)
    failed = [p for p in pushes if p.status is PushStatus.FAILED]
    pending = [p for p in pushes if p.status is PushStatus.PENDING]
    warning = None
    if detail.status == "resolved" and not any(p.kind.value == "time_entry" for p in pushes):
        resolver = detail.picked_up_by_id or detail.user_id
        if await psa.member_for_user(console.session, detail.psa_connection_id, resolver) is None:
            warning = ("No time entry was logged: the engineer has no PSA member mapping on this connection. "
                       "Map users to PSA members under the PSA connection's settings.")
    if failed:
        return PsaOutcome("failed", pushes, failed[0].last_error, warning)
    return PsaOutcome("pending" if pending else "pushed", pushes, None, warning)


async def _documentation_page(
    console: Console, session_id: uuid.UUID, *, status_code: int = 200, **extra: Any
) -> HTMLResponse:
    caller = _caller(console)
    try:
        detail = await service.get_session(console.session, caller, session_id)
        doc = await service.get_documentation(console.session, caller, session_id)
    except DeskpilotError as e:
        return await _error_page(console, e)
    me = console.principal
    is_party = me.user_id in (detail.user_id, detail.escalated_to_id, detail.picked_up_by_id)
    updates = [s for s in reversed(detail.steps) if s.step_type == "status_update"]
    context = {"resolved": "resolution", "requesting_escalation": "escalation"}.get(detail.status, "status")
    defaults = {"audience": "ticket_notes", "length": "quick", "context": context}
    extra.setdefault("comms", defaults)
    return await render(
        console, "pilot/documentation.html", active="pilot", status_code=status_code, notice=_done(console),
        detail=detail, doc=doc, doc_markdown=documentation.render_markdown(doc),
        psa_outcome=await _psa_outcome(console, detail), updates=updates, labels=LABELS,
        can_work=is_party and me.can(Role.ENGINEER), llm_configured=console.state.llm.configured, **extra,
    )


@router.get("/{session_id}/documentation")
async def page_documentation(console: ConsoleDep, session_id: uuid.UUID) -> HTMLResponse:
    return await _documentation_page(console, session_id)


@router.post("/{session_id}/pushes/{push_id}/retry")
async def submit_retry_push(console: ConsoleDep, session_id: uuid.UUID, push_id: uuid.UUID) -> Response:
    console.require(Role.ENGINEER)
    caller = _caller(console)
    try:
        # Reading the session applies the FP-033 access rule before anything is sent.
        await service.get_session(console.session, caller, session_id)
        push = await psa.get_push(console.session, push_id)
        if push.subject_id != session_id:
            raise NotFound("PSA push not found for this session", code="psa_push_not_found")
        push = await psa.retry_push(console.session, console.state.secrets, push_id, http_client=console.state.http)
        audit.record(console.session, account_id=console.principal.account_id, actor=console.principal.actor,
                     action="psa.push.retry", resource_type="psa_push", resource_id=push.id,
                     details={"status": push.status.value})
        await console.session.commit()
    except DeskpilotError as e:
        await console.session.rollback()
        if isinstance(e, NotFound) and e.code == "session_not_found":
            return await _error_page(console, e)
        return await _documentation_page(console, session_id, status_code=e.status, push_error=readable(e))
    return _redirect(f"/pilot/{session_id}/documentation", "push-retried")


@router.post("/{session_id}/communications")
async def submit_communication(
    console: ConsoleDep,
    session_id: uuid.UUID,
    audience: Annotated[str, Form(max_length=20)] = "ticket_notes",
    context: Annotated[str, Form(max_length=20)] = "status",
    length: Annotated[str, Form(max_length=10)] = "quick",
) -> Response:
    """Write a status update for one audience with the LLM and keep it on the session as a step (FP-047..049)."""
    console.require(Role.ENGINEER)
    choice = {"audience": audience, "context": context, "length": length}
    result: str | None = None
    error: str | None = None
    status_code = 200
    chosen_audience = next((a for a in AUDIENCE_KEYS if a == audience), None)
    chosen_context = next((c for c in CONTEXT_KEYS if c == context), None)
    chosen_length = next((n for n in LENGTH_KEYS if n == length), None)
    if chosen_audience is None or chosen_context is None or chosen_length is None:
        error, status_code = "Choose an audience, a context and a length from the lists.", 422
    else:
        caller = _caller(console)
        try:
            view, steps = await service.session_views(console.session, caller, session_id)
            update = await communications.generate_status_update(
                console.state.llm, view, steps, audience=chosen_audience, length=chosen_length,
                context=chosen_context, account_id=console.principal.account_id, now=utcnow(),
            )
            await service.add_status_update(console.session, caller, session_id, content=update.step_content(),
                                            input_tokens=update.usage.input_tokens,
                                            output_tokens=update.usage.output_tokens)
            result = update.content
        except LLMNotConfigured:
            error, status_code = ("Status updates are written by the LLM, and no LLM provider is configured. "
                                  "Use the documentation above, or configure DESKPILOT_LLM__DEFAULT_MODEL."), 503
        except DeskpilotError as e:
            await console.session.rollback()
            if isinstance(e, NotFound):
                return await _error_page(console, e)
            error, status_code = f"The update could not be written: {readable(e)}", e.status
    if console.is_htmx:
        # 5xx responses are not swapped by htmx: the message is the content here, so it goes out as a 200.
        shown = 200 if status_code >= 500 else status_code
        return render_fragment(console, "pilot/_comms_result.html", status_code=shown, result=result,
                               comms_error=error, comms=choice, labels=LABELS)
    return await _documentation_page(console, session_id, status_code=status_code, result=result,
                                     comms_error=error, comms=choice)
