"""Knowledge pages: the runbook (flow) library with approval of drafts, and script templates with rendering."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from deskpilot.api.routing import JSONRoute
from deskpilot.errors import DeskpilotError, NotFound
from deskpilot.events import audit
from deskpilot.identity import service as identity
from deskpilot.identity.models import Role
from deskpilot.knowledge import service as knowledge
from deskpilot.knowledge.models import Flow, FlowStatus, ProblemDomain, ScriptTemplate
from deskpilot.knowledge.schemas import (
    ActionNode,
    FlowDefinition,
    QuestionNode,
    ResolutionNode,
    TemplateParam,
    template_params,
)
from deskpilot.web.console import Console, ConsoleDep
from deskpilot.web.rendering import render, render_fragment
from deskpilot.web.routes.pilot import LANGUAGES, readable

router = APIRouter(prefix="/knowledge", include_in_schema=False, route_class=JSONRoute)

DOMAINS: Final[Mapping[str, str]] = {
    "active_directory": "Active Directory", "networking": "Networking", "m365": "Microsoft 365",
    "hardware": "Hardware", "endpoint": "Endpoint", "virtualization": "Virtualization", "security": "Security",
    "backup": "Backup", "email": "Email", "printing": "Printing", "cloud": "Cloud", "other": "Other",
}
FLOW_STATUSES: Final[Mapping[str, str]] = {"draft": "Draft", "approved": "Approved", "archived": "Archived"}
SOURCES: Final[Mapping[str, str]] = {"starter": "Starter library", "user": "Written here", "flywheel": "Flywheel"}
DONE: Final[Mapping[str, str]] = {
    "approved": "Flow approved: Pilot now matches it to new sessions.",
    "archived": "Flow archived: Pilot no longer matches it.",
}
LABELS: Final[Mapping[str, Mapping[str, str]]] = {
    "domain": DOMAINS, "flow_status": FLOW_STATUSES, "source": SOURCES, "language": LANGUAGES,
}


def _done(console: Console) -> str | None:
    return DONE.get(console.request.query_params.get("done", ""))


async def _not_found(console: Console, what: str, exc: DeskpilotError) -> HTMLResponse:
    await console.session.rollback()
    return await render(console, "error.html", active="knowledge", status_code=exc.status,
                        title=f"{what} not found", message=readable(exc), back_href="/knowledge",
                        back_label="Back to Knowledge")


def _audit(console: Console, action: str, resource_type: str, resource_id: uuid.UUID,
           details: dict[str, Any] | None = None) -> None:
    me = console.principal
    audit.record(console.session, account_id=me.account_id, actor=me.actor, action=action,
                 resource_type=resource_type, resource_id=resource_id, details=details)


# --- flows ----------------------------------------------------------------------------------------------


@router.get("")
async def page_flows(
    console: ConsoleDep,
    domain: Annotated[str, Query(max_length=40)] = "",
    status: Annotated[str, Query(max_length=20)] = "",
) -> HTMLResponse:
    # Unknown filter values are ignored rather than refused: the filters come from links and selects.
    chosen_domain = ProblemDomain(domain) if domain in DOMAINS else None
    chosen_status = FlowStatus(status) if status in FLOW_STATUSES else None
    flows = await knowledge.list_flows(console.session, status=chosen_status, problem_domain=chosen_domain)
    drafts = await knowledge.list_flows(console.session, status=FlowStatus.DRAFT)
    return await render(
        console, "knowledge/flows.html", active="knowledge", tab="flows", notice=_done(console), flows=flows,
        drafts=drafts, domain=domain if chosen_domain else "", status=status if chosen_status else "",
        can_approve=console.principal.can(Role.LEAD), labels=LABELS,
    )


@dataclass(frozen=True, slots=True)
class TreeNode:
    """A flow node with its step number in reading order and where each answer leads."""

    number: int
    node: QuestionNode | ActionNode | ResolutionNode
    edges: Sequence[tuple[str, str, int]]


def reading_order(definition: FlowDefinition) -> list[TreeNode]:
    """The nodes from `start` in breadth-first order, numbered, with each edge's label and target number.

    A decision tree reads best level by level: the first question, then where its answers lead. Nodes reached
    by several answers appear once, and edges point to their number.
    """
    order: list[str] = [definition.start]
    seen = {definition.start}
    index = 0
    while index < len(order):
        node = definition.node(order[index])
        index += 1
        for _label, target in _edges(node):
            if target not in seen:
                seen.add(target)
                order.append(target)
    order += [n.id for n in definition.nodes if n.id not in seen]
    numbers = {node_id: i + 1 for i, node_id in enumerate(order)}
    result: list[TreeNode] = []
    for node_id in order:
        node = definition.node(node_id)
        if node is None:
            continue
        edges = [(label, target, numbers.get(target, 0)) for label, target in _edges(node)]
        result.append(TreeNode(numbers[node_id], node, edges))
    return result


def _edges(node: QuestionNode | ActionNode | ResolutionNode | None) -> list[tuple[str, str]]:
    if isinstance(node, QuestionNode):
        return [(o.label, o.next) for o in node.options]
    if isinstance(node, ActionNode):
        return [("Worked", node.on_success), ("Didn't work", node.on_failure)]
    return []


@router.get("/flows/{flow_id}")
async def page_flow(
    console: ConsoleDep, flow_id: uuid.UUID, version: Annotated[int | None, Query(ge=1)] = None,
) -> HTMLResponse:
    try:
        flow = await knowledge.get_flow(console.session, flow_id)
        versions = await knowledge.list_flow_versions(console.session, flow_id)
        shown = await knowledge.get_flow_version(console.session, flow_id, version) if version else None
    except DeskpilotError as e:
        return await _not_found(console, "Flow", e)
    return await _flow_page(console, flow, versions, shown.version if shown else None,
                            FlowDefinition.model_validate(shown.definition if shown else flow.definition))


async def _flow_page(
    console: Console, flow: Flow, versions: Sequence[Any], version: int | None, definition: FlowDefinition,
    *, status_code: int = 200, error: str | None = None,
) -> HTMLResponse:
    names = {u.id: u.name for u in await identity.list_users(console.session)}
    templates = {t.slug: t for t in await knowledge.list_templates(console.session)}
    return await render(
        console, "knowledge/flow.html", active="knowledge", tab="flows", status_code=status_code,
        notice=_done(console), flow=flow, versions=versions, version=version, tree=reading_order(definition),
        templates=templates, names=names, can_approve=console.principal.can(Role.LEAD), error=error, labels=LABELS,
    )


@router.get("/flows/{flow_id}/export")
async def export_flow(console: ConsoleDep, flow_id: uuid.UUID) -> Response:
    """The flow as YAML, the format `deskpilot knowledge import` and `POST /api/v1/flows/import` read."""
    try:
        flow = await knowledge.get_flow(console.session, flow_id)
        text = await knowledge.export_flow(console.session, flow_id)
    except DeskpilotError as e:
        return await _not_found(console, "Flow", e)
    return Response(text, media_type="application/yaml",
                    headers={"Content-Disposition": f'attachment; filename="{flow.slug}.yaml"',
                             "X-Content-Type-Options": "nosniff"})


async def _flow_decision(console: Console, flow_id: uuid.UUID, approve: bool) -> Response:
    console.require(Role.LEAD)
    try:
        if approve:
            flow = await knowledge.approve_flow(console.session, flow_id, approved_by=console.principal.user_id)
        else:
            flow = await knowledge.archive_flow(console.session, flow_id)
    except DeskpilotError as e:
        return await _not_found(console, "Flow", e)
    _audit(console, "flow.approve" if approve else "flow.archive", "flow", flow.id, {"version": flow.version})
    await console.session.commit()
    return RedirectResponse(f"/knowledge/flows/{flow_id}?done={'approved' if approve else 'archived'}",
                            status_code=303)


@router.post("/flows/{flow_id}/approve")
async def submit_approve_flow(console: ConsoleDep, flow_id: uuid.UUID) -> Response:
    return await _flow_decision(console, flow_id, approve=True)


@router.post("/flows/{flow_id}/archive")
async def submit_archive_flow(console: ConsoleDep, flow_id: uuid.UUID) -> Response:
    return await _flow_decision(console, flow_id, approve=False)


# --- script templates --------------------------------------------------------------------------------


@router.get("/scripts")
async def page_scripts(console: ConsoleDep) -> HTMLResponse:
    scripts = await knowledge.list_templates(console.session)
    teams = {t.id: t.name for t in await identity.list_teams(console.session)}
    return await render(console, "knowledge/scripts.html", active="knowledge", tab="scripts", scripts=scripts,
                        teams=teams, labels=LABELS, params={s.id: template_params(s.parameters) for s in scripts})


def _param_values(template: ScriptTemplate, source: Mapping[str, str]) -> dict[str, str]:
    """The form's values for each parameter, as typed; `p.<name>` in a link pre-fills them too."""
    values: dict[str, str] = {}
    for param in template_params(template.parameters):
        for key in (f"p.{param.name}", param.name):
            if key in source:
                values[param.name] = source[key]
                break
        else:
            if param.default is not None:
                values[param.name] = str(param.default).lower() if isinstance(param.default, bool) else str(
                    param.default)
    return values


async def _script_page(
    console: Console, template: ScriptTemplate, values: Mapping[str, str], *, status_code: int = 200,
    rendered: str | None = None, error: str | None = None,
) -> HTMLResponse:
    params: list[TemplateParam] = template_params(template.parameters)
    context: dict[str, Any] = {"script": template, "params": params, "values": values, "rendered": rendered,
                               "render_error": error, "labels": LABELS,
                               "can_render": console.principal.can(Role.ENGINEER) and template.is_active}
    if console.is_htmx:
        return render_fragment(console, "knowledge/_rendered.html", status_code=status_code, **context)
    teams = {t.id: t.name for t in await identity.list_teams(console.session)}
    return await render(console, "knowledge/script.html", active="knowledge", tab="scripts",
                        status_code=status_code, teams=teams, **context)


def _param_message(exc: DeskpilotError) -> str:
    """Each bad parameter's problem, without the field paths an API client needs."""
    problems = [str(e.get("message")) for e in exc.extra.get("errors", []) if isinstance(e, dict)]
    if not problems:
        return readable(exc)
    text = "; ".join(problems)
    return text[:1].upper() + text[1:] + "."


@router.get("/scripts/{template_id}")
async def page_script(console: ConsoleDep, template_id: uuid.UUID, request: Request) -> HTMLResponse:
    try:
        template = await knowledge.get_template(console.session, template_id)
    except DeskpilotError as e:
        return await _not_found(console, "Script template", e)
    return await _script_page(console, template, _param_values(template, request.query_params))


@router.post("/scripts/{template_id}/render")
async def submit_render_script(console: ConsoleDep, template_id: uuid.UUID, request: Request) -> HTMLResponse:
    """Fill the template's parameters; each value is quoted for the script's language. Counts as a use."""
    console.require(Role.ENGINEER)
    try:
        template = await knowledge.get_template(console.session, template_id)
    except NotFound as e:
        return await _not_found(console, "Script template", e)
    form = await request.form()
    typed = {k: v for k, v in form.items() if isinstance(v, str)}
    values = _param_values(template, {k: v for k, v in typed.items() if k.startswith("p.")})
    # Empty fields are left out, so defaults apply and a missing required value is named as such.
    given: dict[str, str | int | bool] = {k: v for k, v in values.items() if v.strip()}
    try:
        result = await knowledge.render_template(console.session, template_id, given)
        await knowledge.record_template_use(console.session, template_id)
    except DeskpilotError as e:
        await console.session.rollback()
        template = await knowledge.get_template(console.session, template_id)
        return await _script_page(console, template, values, status_code=e.status, error=_param_message(e))
    _audit(console, "script_template.render", "script_template", template_id, {"params": sorted(result.params)})
    await console.session.commit()
    template = await knowledge.get_template(console.session, template_id)
    return await _script_page(console, template, values, rendered=result.script)

