"""Runbook flows (CRUD, versions, YAML import/export, matching, approval) and script templates."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, HTTPException, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from deskpilot.api.deps import EngineerDep, LeadDep, Principal, PrincipalDep, SessionDep
from deskpilot.api.routing import JSONRoute
from deskpilot.errors import PermissionDenied
from deskpilot.events import audit
from deskpilot.identity.models import Role
from deskpilot.knowledge import service as knowledge
from deskpilot.knowledge.errors import YamlTooLarge
from deskpilot.knowledge.models import FlowSource, FlowStatus, ProblemDomain, ScriptLanguage
from deskpilot.knowledge.schemas import (
    FlowCreate,
    FlowMatch,
    FlowOut,
    FlowSummary,
    FlowUpdate,
    FlowVersionOut,
    ImportResult,
    MatchRequest,
    RenderedScript,
    RenderRequest,
    TemplateCreate,
    TemplateOut,
    TemplateUpdate,
    parse_definition,
)
from deskpilot.knowledge.yaml_io import MAX_YAML_BYTES

router = APIRouter(prefix="/api/v1", tags=["knowledge"], route_class=JSONRoute)

YAML_MEDIA_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain"})
_YAML_BODY = {
    "requestBody": {
        "required": True,
        "description": f"One flow per YAML document (at most {MAX_YAML_BYTES} bytes).",
        "content": {t: {"schema": {"type": "string"}} for t in sorted(YAML_MEDIA_TYPES)},
    }
}


def _record(session: AsyncSession, principal: Principal, action: str, resource_type: str, resource_id: uuid.UUID,
            details: dict[str, object] | None = None) -> None:
    audit.record(session, account_id=principal.account_id, actor=principal.actor, action=action,
                 resource_type=resource_type, resource_id=resource_id, details=details)


async def _yaml_body(request: Request) -> bytes:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in YAML_MEDIA_TYPES:
        accepted = ", ".join(sorted(YAML_MEDIA_TYPES))
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                            f"send YAML as one of {accepted}, not {media_type or 'nothing'!r}")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_YAML_BYTES:
        raise YamlTooLarge(f"YAML is {declared} bytes; the limit is {MAX_YAML_BYTES}")
    body = bytearray()
    # Read in chunks and stop early, so an oversized upload without Content-Length is not buffered whole.
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_YAML_BYTES:
            raise YamlTooLarge(f"YAML is over the limit of {MAX_YAML_BYTES} bytes")
    return bytes(body)


# --- flows ------------------------------------------------------------------------------------------


@router.get("/flows")
async def list_flows(
    principal: PrincipalDep,
    session: SessionDep,
    status: FlowStatus | None = None,
    problem_domain: ProblemDomain | None = None,
    source: FlowSource | None = None,
    team_id: uuid.UUID | None = None,
) -> list[FlowSummary]:
    flows = await knowledge.list_flows(session, status=status, problem_domain=problem_domain, source=source,
                                       team_id=team_id)
    return [FlowSummary.model_validate(f) for f in flows]


@router.post("/flows", status_code=status.HTTP_201_CREATED)
async def create_flow(body: FlowCreate, principal: EngineerDep, session: SessionDep) -> FlowOut:
    """Create a draft flow; a lead approves it before matching offers it."""
    flow = await knowledge.create_flow(session, account_id=principal.account_id, document=body.document(),
                                       team_id=body.team_id, created_by=principal.user_id)
    _record(session, principal, "flow.create", "flow", flow.id, {"slug": flow.slug})
    await session.commit()
    return FlowOut.model_validate(flow)


@router.post("/flows/import", openapi_extra=_YAML_BODY)
async def import_flows(
    request: Request, principal: EngineerDep, session: SessionDep, replace: bool = False
) -> ImportResult:
    """Import flows from YAML as drafts; `replace=true` (lead) updates flows whose slug already exists."""
    if replace and not principal.can(Role.LEAD):
        raise PermissionDenied("replacing existing flows needs the 'lead' role or higher")
    text = await _yaml_body(request)
    results = await knowledge.import_flows_yaml(session, account_id=principal.account_id, text=text,
                                                replace=replace, created_by=principal.user_id)
    for item in results:
        if item.action != "unchanged":
            _record(session, principal, f"flow.import.{item.action}", "flow", item.id,
                    {"slug": item.slug, "version": item.version})
    await session.commit()
    return ImportResult(flows=results)


@router.post("/flows/match")
async def match_flows(body: MatchRequest, principal: PrincipalDep, session: SessionDep) -> list[FlowMatch]:
    """Approved flows that fit a problem description, best first; records nothing."""
    return await knowledge.find_matches(session, principal.account_id, body.text, body.problem_domain,
                                        body.limit, team_id=principal.team_id)


@router.get("/flows/{flow_id}")
async def get_flow(flow_id: uuid.UUID, principal: PrincipalDep, session: SessionDep) -> FlowOut:
    return FlowOut.model_validate(await knowledge.get_flow(session, flow_id))


@router.patch("/flows/{flow_id}")
async def update_flow(flow_id: uuid.UUID, body: FlowUpdate, principal: EngineerDep, session: SessionDep) -> FlowOut:
    """Edit a flow (lead, or the engineer who wrote the draft); a new definition becomes a new version."""
    flow = await knowledge.get_flow(session, flow_id)
    own_draft = flow.status is FlowStatus.DRAFT and flow.created_by == principal.user_id
    if not (own_draft or principal.can(Role.LEAD)):
        raise PermissionDenied("only a lead can edit a flow that is approved, archived or someone else's draft")
    fields = body.model_dump(exclude_unset=True)
    definition = parse_definition(body.definition) if body.definition is not None else None
    flow = await knowledge.update_flow(
        session, flow_id, slug=body.slug, name=body.name, description=body.description,
        problem_domain=body.problem_domain, tags=body.tags, symptoms=body.symptoms, definition=definition,
        team_id=body.team_id, clear_team="team_id" in fields and body.team_id is None,
        updated_by=principal.user_id,
    )
    _record(session, principal, "flow.update", "flow", flow.id, {"fields": sorted(fields), "version": flow.version})
    await session.commit()
    return FlowOut.model_validate(flow)


@router.delete("/flows/{flow_id}")
async def archive_flow(flow_id: uuid.UUID, principal: LeadDep, session: SessionDep) -> FlowOut:
    """Archive a flow: matching stops offering it; it and its versions stay readable."""
    flow = await knowledge.archive_flow(session, flow_id)
    _record(session, principal, "flow.archive", "flow", flow.id)
    await session.commit()
    return FlowOut.model_validate(flow)


@router.post("/flows/{flow_id}/approve")
async def approve_flow(flow_id: uuid.UUID, principal: LeadDep, session: SessionDep) -> FlowOut:
    flow = await knowledge.approve_flow(session, flow_id, approved_by=principal.user_id)
    _record(session, principal, "flow.approve", "flow", flow.id, {"version": flow.version})
    await session.commit()
    return FlowOut.model_validate(flow)


@router.get("/flows/{flow_id}/versions")
async def list_flow_versions(flow_id: uuid.UUID, principal: PrincipalDep, session: SessionDep) -> list[FlowVersionOut]:
    return [FlowVersionOut.model_validate(v) for v in await knowledge.list_flow_versions(session, flow_id)]


@router.get("/flows/{flow_id}/versions/{version}")
async def get_flow_version(
    flow_id: uuid.UUID, version: int, principal: PrincipalDep, session: SessionDep
) -> FlowVersionOut:
    return FlowVersionOut.model_validate(await knowledge.get_flow_version(session, flow_id, version))


@router.get("/flows/{flow_id}/export", response_class=Response,
            responses={200: {"content": {"application/yaml": {"schema": {"type": "string"}}}}})
async def export_flow(flow_id: uuid.UUID, principal: PrincipalDep, session: SessionDep) -> Response:
    """The flow as one YAML document, ready for `POST /flows/import`."""
    flow = await knowledge.get_flow(session, flow_id)
    text = await knowledge.export_flow(session, flow_id)
    return Response(text, media_type="application/yaml",
                    headers={"Content-Disposition": f'attachment; filename="{flow.slug}.yaml"'})


# --- script templates -------------------------------------------------------------------------------


@router.get("/script-templates")
async def list_script_templates(
    principal: PrincipalDep,
    session: SessionDep,
    active: bool | None = None,
    language: ScriptLanguage | None = None,
    team_id: uuid.UUID | None = None,
) -> list[TemplateOut]:
    found = await knowledge.list_templates(session, active=active, language=language, team_id=team_id)
    return [TemplateOut.model_validate(t) for t in found]


@router.post("/script-templates", status_code=status.HTTP_201_CREATED)
async def create_script_template(body: TemplateCreate, principal: LeadDep, session: SessionDep) -> TemplateOut:
    template = await knowledge.create_template(session, account_id=principal.account_id, document=body.document(),
                                               team_id=body.team_id, created_by=principal.user_id)
    _record(session, principal, "script_template.create", "script_template", template.id, {"slug": template.slug})
    await session.commit()
    return TemplateOut.model_validate(template)


@router.get("/script-templates/{template_id}")
async def get_script_template(template_id: uuid.UUID, principal: PrincipalDep, session: SessionDep) -> TemplateOut:
    return TemplateOut.model_validate(await knowledge.get_template(session, template_id))


@router.patch("/script-templates/{template_id}")
async def update_script_template(
    template_id: uuid.UUID, body: TemplateUpdate, principal: LeadDep, session: SessionDep
) -> TemplateOut:
    fields = body.model_dump(exclude_unset=True)
    template = await knowledge.update_template(
        session, template_id, slug=body.slug, name=body.name, language=body.language, description=body.description,
        parameters=body.parameters, body=body.body, team_id=body.team_id,
        clear_team="team_id" in fields and body.team_id is None, is_active=body.is_active,
    )
    _record(session, principal, "script_template.update", "script_template", template.id, {"fields": sorted(fields)})
    await session.commit()
    return TemplateOut.model_validate(template)


@router.delete("/script-templates/{template_id}")
async def deactivate_script_template(
    template_id: uuid.UUID, principal: LeadDep, session: SessionDep
) -> TemplateOut:
    """Deactivate a template: prompts and rendering stop offering it; flows keep their reference."""
    template = await knowledge.deactivate_template(session, template_id)
    _record(session, principal, "script_template.deactivate", "script_template", template.id)
    await session.commit()
    return TemplateOut.model_validate(template)


@router.post("/script-templates/{template_id}/render")
async def render_script_template(
    template_id: uuid.UUID, body: RenderRequest, principal: EngineerDep, session: SessionDep
) -> RenderedScript:
    """Fill a template's parameters; every value is quoted for the script's language. Counts as a use."""
    rendered = await knowledge.render_template(session, template_id, body.params)
    await knowledge.record_template_use(session, template_id)
    _record(session, principal, "script_template.render", "script_template", template_id,
            {"params": sorted(rendered.params)})
    await session.commit()
    return rendered
