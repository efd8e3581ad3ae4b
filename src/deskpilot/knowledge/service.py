"""Knowledge service: flows (CRUD, versions, YAML, matching, usage statistics) and script templates.

Functions take an AsyncSession and do not commit: the caller owns the transaction. Functions that take an
`account_id` also filter by it, so they behave the same in an account session and in a system session.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.util import identity_key
from sqlalchemy.sql.elements import ColumnElement

from deskpilot.errors import NotFound
from deskpilot.identity import service as identity
from deskpilot.knowledge import matching, search, starter, templates, yaml_io
from deskpilot.knowledge.errors import (
    FieldError,
    FlowInvalid,
    FlowNotFound,
    FlowSlugTaken,
    FlowVersionNotFound,
    TemplateInactive,
    TemplateNotFound,
    TemplateSlugTaken,
)
from deskpilot.knowledge.models import (
    Flow,
    FlowSource,
    FlowStatus,
    FlowVersion,
    ProblemDomain,
    ScriptLanguage,
    ScriptTemplate,
)
from deskpilot.knowledge.schemas import (
    ActionNode,
    FlowDefinition,
    FlowDocument,
    FlowMatch,
    ImportedFlow,
    ParamValue,
    RenderedScript,
    TemplateBrief,
    TemplateDocument,
    parse_template_document,
)
from deskpilot.knowledge.templates import format_templates_for_prompt
from deskpilot.storage import utcnow

__all__ = [
    "StarterLoadResult",
    "approve_flow",
    "archive_flow",
    "create_flow",
    "create_template",
    "deactivate_template",
    "export_flow",
    "find_matches",
    "flow_document",
    "format_templates_for_prompt",
    "get_flow",
    "get_flow_by_slug",
    "get_flow_definition",
    "get_flow_version",
    "get_template",
    "get_template_by_slug",
    "import_flows",
    "import_flows_yaml",
    "list_flow_versions",
    "list_flows",
    "list_templates",
    "load_starter_library",
    "record_match",
    "record_outcome",
    "record_template_use",
    "render_template",
    "template_document",
    "top_templates_for_prompt",
    "update_flow",
    "update_template",
]

logger = logging.getLogger(__name__)

# How many full-text hits are scored for each match asked for: scoring can reorder the engine's ranking.
CANDIDATES_PER_MATCH = 4
MIN_CANDIDATES = 20


# --- flows: reading --------------------------------------------------------------------------------


async def list_flows(
    session: AsyncSession,
    *,
    status: FlowStatus | None = None,
    problem_domain: ProblemDomain | None = None,
    source: FlowSource | None = None,
    team_id: uuid.UUID | None = None,
) -> Sequence[Flow]:
    stmt = select(Flow).order_by(Flow.name)
    if status is not None:
        stmt = stmt.where(Flow.status == status)
    if problem_domain is not None:
        stmt = stmt.where(Flow.problem_domain == problem_domain)
    if source is not None:
        stmt = stmt.where(Flow.source == source)
    if team_id is not None:
        stmt = stmt.where(Flow.team_id == team_id)
    return (await session.scalars(stmt)).all()


async def get_flow(session: AsyncSession, flow_id: uuid.UUID) -> Flow:
    flow = await session.get(Flow, flow_id)
    if flow is None:
        raise FlowNotFound(f"flow {str(flow_id)!r} not found")
    return flow


async def get_flow_by_slug(session: AsyncSession, account_id: uuid.UUID, slug: str) -> Flow | None:
    return await session.scalar(select(Flow).where(Flow.account_id == account_id, Flow.slug == slug))


async def get_flow_definition(session: AsyncSession, flow_id: uuid.UUID) -> FlowDefinition:
    """The current definition as a model, for walking the tree (the Pilot's flow mode)."""
    return FlowDefinition.model_validate((await get_flow(session, flow_id)).definition)


def flow_document(flow: Flow) -> FlowDocument:
    """The portable content of a stored flow."""
    return FlowDocument.model_validate({
        "slug": flow.slug, "name": flow.name, "description": flow.description,
        "problem_domain": flow.problem_domain, "tags": flow.tags, "symptoms": flow.symptoms,
        "definition": flow.definition,
    })


async def export_flow(session: AsyncSession, flow_id: uuid.UUID) -> str:
    """One flow as a YAML document that `import_flows_yaml` reads back unchanged."""
    return yaml_io.flow_to_yaml(flow_document(await get_flow(session, flow_id)))


async def list_flow_versions(session: AsyncSession, flow_id: uuid.UUID) -> Sequence[FlowVersion]:
    await get_flow(session, flow_id)
    stmt = select(FlowVersion).where(FlowVersion.flow_id == flow_id).order_by(FlowVersion.version.desc())
    return (await session.scalars(stmt)).all()


async def get_flow_version(session: AsyncSession, flow_id: uuid.UUID, version: int) -> FlowVersion:
    await get_flow(session, flow_id)
    found = await session.scalar(
        select(FlowVersion).where(FlowVersion.flow_id == flow_id, FlowVersion.version == version)
    )
    if found is None:
        raise FlowVersionNotFound(f"flow {str(flow_id)!r} has no version {version}")
    return found


# --- flows: writing --------------------------------------------------------------------------------


async def _ensure_flow_slug_free(session: AsyncSession, account_id: uuid.UUID, slug: str) -> None:
    if await get_flow_by_slug(session, account_id, slug) is not None:
        raise FlowSlugTaken(f"a flow with slug {slug!r} already exists")


async def _check_team(session: AsyncSession, account_id: uuid.UUID, team_id: uuid.UUID) -> None:
    team = await identity.get_team(session, team_id)
    if team.account_id != account_id:  # only reachable from a system session
        raise NotFound(f"team {str(team_id)!r} not found", code="team_not_found")


async def _template_errors(
    session: AsyncSession, account_id: uuid.UUID, definition: FlowDefinition, prefix: str = "definition."
) -> list[FieldError]:
    """Action nodes must name templates of this account, with default params those templates declare."""
    actions = [(i, n) for i, n in enumerate(definition.nodes) if isinstance(n, ActionNode) and n.script_template]
    if not actions:
        return []
    slugs = {n.script_template for _i, n in actions}
    rows = await session.scalars(
        select(ScriptTemplate).where(ScriptTemplate.account_id == account_id, ScriptTemplate.slug.in_(slugs))
    )
    found = {t.slug: template_document(t) for t in rows}
    errors: list[FieldError] = []
    for i, node in actions:
        doc = found.get(node.script_template or "")
        if doc is None:
            errors.append(FieldError(f"{prefix}nodes.{i}.script_template",
                                     f"no script template with slug {node.script_template!r}"))
            continue
        for name, value in node.default_params.items():
            param = doc.param(name)
            if param is None:
                errors.append(FieldError(f"{prefix}nodes.{i}.default_params.{name}",
                                         f"template {doc.slug!r} has no parameter {name!r}"))
                continue
            try:
                templates.coerce_value(param, value)
            except ValueError as e:
                errors.append(FieldError(f"{prefix}nodes.{i}.default_params.{name}", str(e)))
    return errors


def _refresh_search_fields(flow: Flow, definition: FlowDefinition) -> None:
    flow.search_keywords, flow.search_body = matching.search_texts(
        flow.name, flow.description, flow.tags, flow.symptoms, definition.node_texts()
    )


async def create_flow(
    session: AsyncSession,
    *,
    account_id: uuid.UUID,
    document: FlowDocument,
    team_id: uuid.UUID | None = None,
    created_by: uuid.UUID | None = None,
    source: FlowSource = FlowSource.USER,
    status: FlowStatus = FlowStatus.DRAFT,
) -> Flow:
    """Store a validated flow document as version 1."""
    await _ensure_flow_slug_free(session, account_id, document.slug)
    if team_id is not None:
        await _check_team(session, account_id, team_id)
    errors = await _template_errors(session, account_id, document.definition)
    if errors:
        raise FlowInvalid.from_errors(errors, "flow")
    flow = Flow(
        account_id=account_id, slug=document.slug, name=document.name, description=document.description,
        problem_domain=document.problem_domain, tags=list(document.tags), symptoms=list(document.symptoms),
        definition=document.canonical_definition(), version=1, status=status, source=source, team_id=team_id,
        created_by=created_by,
    )
    if status is FlowStatus.APPROVED:
        flow.approved_at, flow.approved_by = utcnow(), created_by
    _refresh_search_fields(flow, document.definition)
    session.add(flow)
    await session.flush()
    session.add(FlowVersion(account_id=account_id, flow_id=flow.id, version=1, name=flow.name,
                            definition=flow.definition, created_by=created_by))
    await search.index_flow(session, flow)
    await session.flush()
    return flow


async def update_flow(
    session: AsyncSession,
    flow_id: uuid.UUID,
    *,
    slug: str | None = None,
    name: str | None = None,
    description: str | None = None,
    problem_domain: ProblemDomain | None = None,
    tags: Sequence[str] | None = None,
    symptoms: Sequence[str] | None = None,
    definition: FlowDefinition | None = None,
    team_id: uuid.UUID | None = None,
    clear_team: bool = False,
    updated_by: uuid.UUID | None = None,
) -> Flow:
    """Change a flow; a changed definition becomes a new version, and the old one stays readable."""
    flow = await get_flow(session, flow_id)
    if slug is not None and slug != flow.slug:
        await _ensure_flow_slug_free(session, flow.account_id, slug)
        flow.slug = slug
    if name is not None:
        flow.name = name
    if description is not None:
        flow.description = description
    if problem_domain is not None:
        flow.problem_domain = problem_domain
    if tags is not None:
        flow.tags = list(tags)
    if symptoms is not None:
        flow.symptoms = list(symptoms)
    if team_id is not None:
        await _check_team(session, flow.account_id, team_id)
        flow.team_id = team_id
    elif clear_team:
        flow.team_id = None
    if definition is not None:
        errors = await _template_errors(session, flow.account_id, definition)
        if errors:
            raise FlowInvalid.from_errors(errors, "flow")
        canonical = definition.model_dump(mode="json", exclude_defaults=True)
        if canonical != flow.definition:
            flow.version += 1
            flow.definition = canonical
            session.add(FlowVersion(account_id=flow.account_id, flow_id=flow.id, version=flow.version,
                                    name=flow.name, definition=canonical, created_by=updated_by))
    _refresh_search_fields(flow, definition or FlowDefinition.model_validate(flow.definition))
    await session.flush()
    await search.index_flow(session, flow)
    return flow


async def approve_flow(session: AsyncSession, flow_id: uuid.UUID, *, approved_by: uuid.UUID | None) -> Flow:
    """Make a draft (or archived) flow available to matching."""
    flow = await get_flow(session, flow_id)
    if flow.status is not FlowStatus.APPROVED:
        flow.status = FlowStatus.APPROVED
        flow.approved_at, flow.approved_by = utcnow(), approved_by
        await session.flush()
    return flow


async def archive_flow(session: AsyncSession, flow_id: uuid.UUID) -> Flow:
    """Take a flow out of matching; it and its versions stay readable."""
    flow = await get_flow(session, flow_id)
    if flow.status is not FlowStatus.ARCHIVED:
        flow.status = FlowStatus.ARCHIVED
        await session.flush()
    return flow


async def import_flows(
    session: AsyncSession,
    *,
    account_id: uuid.UUID,
    documents: Sequence[FlowDocument],
    replace: bool = False,
    created_by: uuid.UUID | None = None,
    source: FlowSource = FlowSource.USER,
    status: FlowStatus = FlowStatus.DRAFT,
) -> list[ImportedFlow]:
    """Create each document's flow, or with `replace` update the flow that has its slug; all or nothing.

    Problems are reported together, each naming its document (numbered from 1) and field.
    """
    existing: dict[int, Flow] = {}
    invalid: list[FieldError] = []
    taken: list[FieldError] = []
    for n, doc in enumerate(documents, start=1):
        invalid.extend(FieldError(e.field, e.message, n)
                       for e in await _template_errors(session, account_id, doc.definition))
        flow = await get_flow_by_slug(session, account_id, doc.slug)
        if flow is not None:
            existing[n] = flow
            if not replace:
                taken.append(FieldError("slug", f"a flow with slug {doc.slug!r} already exists", n))
    if invalid:
        raise FlowInvalid.from_errors(invalid, "import")
    if taken:
        raise FlowSlugTaken(
            f"{len(taken)} flow(s) already exist; import with replace to update them: "
            + ", ".join(repr(documents[e.document - 1].slug) for e in taken if e.document),
            extra={"errors": [e.as_dict() for e in taken]},
        )
    results: list[ImportedFlow] = []
    for n, doc in enumerate(documents, start=1):
        flow = existing.get(n)
        if flow is None:
            flow = await create_flow(session, account_id=account_id, document=doc, created_by=created_by,
                                     source=source, status=status)
            results.append(ImportedFlow(id=flow.id, slug=flow.slug, version=flow.version, action="created"))
        elif flow_document(flow) == doc:
            results.append(ImportedFlow(id=flow.id, slug=flow.slug, version=flow.version, action="unchanged"))
        else:
            flow = await update_flow(
                session, flow.id, name=doc.name, description=doc.description, problem_domain=doc.problem_domain,
                tags=doc.tags, symptoms=doc.symptoms, definition=doc.definition, updated_by=created_by,
            )
            results.append(ImportedFlow(id=flow.id, slug=flow.slug, version=flow.version, action="updated"))
    logger.info("imported %d flow(s) into account %s", len(results), account_id)
    return results


async def import_flows_yaml(
    session: AsyncSession,
    *,
    account_id: uuid.UUID,
    text: str | bytes,
    replace: bool = False,
    created_by: uuid.UUID | None = None,
    status: FlowStatus = FlowStatus.DRAFT,
) -> list[ImportedFlow]:
    """Parse a YAML stream (one flow per document) and import it with `import_flows`."""
    return await import_flows(session, account_id=account_id, documents=yaml_io.parse_flows(text),
                              replace=replace, created_by=created_by, status=status)


# --- flows: matching and statistics ------------------------------------------------------------------


def _domain(value: ProblemDomain | str | None) -> ProblemDomain | None:
    if value is None or isinstance(value, ProblemDomain):
        return value
    try:
        return ProblemDomain(value)
    except ValueError:
        # Domains often come from an LLM classification; an unknown one is no evidence either way.
        return None


async def find_matches(
    session: AsyncSession,
    account_id: uuid.UUID,
    text: str,
    problem_domain: ProblemDomain | str | None = None,
    limit: int = 5,
    *,
    team_id: uuid.UUID | None = None,
    now: datetime | None = None,
) -> list[FlowMatch]:
    """Approved flows that fit a problem description, best first, each with a 0..1 score and its reasons.

    With `team_id`, flows scoped to other teams are left out. Nothing is recorded: call `record_match`
    for the flow a session actually uses.
    """
    words = matching.query_words(text)
    candidates = await search.search_flows(session, account_id=account_id, words=words, team_id=team_id,
                                           limit=max(limit * CANDIDATES_PER_MATCH, MIN_CANDIDATES))
    scored = matching.score_candidates(candidates, text, _domain(problem_domain), now or utcnow(), limit)
    return [FlowMatch(flow_id=s.flow_id, name=s.name, score=s.score, reasons=s.reasons) for s in scored]


async def _refresh_loaded(session: AsyncSession, flow_id: uuid.UUID) -> None:
    # The statistics are written with UPDATE statements; a Flow already in this session must not go stale.
    loaded = session.sync_session.identity_map.get(identity_key(Flow, flow_id))
    if loaded is not None:
        await session.refresh(loaded)


async def _bump(session: AsyncSession, flow_id: uuid.UUID, values: Mapping[str, Any]) -> None:
    # Increments happen in SQL so that concurrent sessions never lose a count; the row stays locked
    # (PostgreSQL) or the database write-locked (SQLite) until commit, so the rate below is consistent.
    stmt = (
        update(Flow)
        .where(Flow.id == flow_id)
        .values(**values, updated_at=Flow.updated_at)  # statistics are not edits: keep updated_at
        .returning(Flow.matched_count, Flow.resolved_count)
        .execution_options(synchronize_session=False)
    )
    row = (await session.execute(stmt)).one_or_none()
    if row is None:
        raise FlowNotFound(f"flow {str(flow_id)!r} not found")
    rate = matching.success_rate(resolved=row[1], matched=row[0])
    await session.execute(
        update(Flow).where(Flow.id == flow_id).values(success_rate=rate, updated_at=Flow.updated_at)
        .execution_options(synchronize_session=False)
    )
    await _refresh_loaded(session, flow_id)


async def record_match(session: AsyncSession, flow_id: uuid.UUID) -> None:
    """A session started on this flow: usage and match counts + 1, last_matched_at = now."""
    await _bump(session, flow_id, {
        "usage_count": Flow.usage_count + 1,
        "matched_count": Flow.matched_count + 1,
        "last_matched_at": utcnow(),
    })


async def record_outcome(session: AsyncSession, flow_id: uuid.UUID, resolved: bool) -> None:
    """A session that matched this flow ended; success_rate = round(resolved / matched, 3).

    An unresolved outcome changes no count (the match already counts against the rate) but still
    refreshes the stored rate.
    """
    await _bump(session, flow_id, {"resolved_count": Flow.resolved_count + (1 if resolved else 0)})


# --- script templates ------------------------------------------------------------------------------


def template_document(template: ScriptTemplate) -> TemplateDocument:
    return TemplateDocument.model_validate({
        "slug": template.slug, "name": template.name, "language": template.language,
        "description": template.description, "parameters": template.parameters, "body": template.body,
    })


async def list_templates(
    session: AsyncSession,
    *,
    active: bool | None = None,
    language: ScriptLanguage | None = None,
    team_id: uuid.UUID | None = None,
) -> Sequence[ScriptTemplate]:
    stmt = select(ScriptTemplate).order_by(ScriptTemplate.name)
    if active is not None:
        stmt = stmt.where(ScriptTemplate.is_active.is_(active))
    if language is not None:
        stmt = stmt.where(ScriptTemplate.language == language)
    if team_id is not None:
        stmt = stmt.where(or_(ScriptTemplate.team_id.is_(None), ScriptTemplate.team_id == team_id))
    return (await session.scalars(stmt)).all()


async def get_template(session: AsyncSession, template_id: uuid.UUID) -> ScriptTemplate:
    template = await session.get(ScriptTemplate, template_id)
    if template is None:
        raise TemplateNotFound(f"script template {str(template_id)!r} not found")
    return template


async def get_template_by_slug(session: AsyncSession, account_id: uuid.UUID, slug: str) -> ScriptTemplate | None:
    return await session.scalar(
        select(ScriptTemplate).where(ScriptTemplate.account_id == account_id, ScriptTemplate.slug == slug)
    )


async def create_template(
    session: AsyncSession,
    *,
    account_id: uuid.UUID,
    document: TemplateDocument,
    team_id: uuid.UUID | None = None,
    created_by: uuid.UUID | None = None,
    source: FlowSource = FlowSource.USER,
) -> ScriptTemplate:
    if await get_template_by_slug(session, account_id, document.slug) is not None:
        raise TemplateSlugTaken(f"a script template with slug {document.slug!r} already exists")
    if team_id is not None:
        await _check_team(session, account_id, team_id)
    template = ScriptTemplate(
        account_id=account_id, slug=document.slug, name=document.name, language=document.language,
        description=document.description,
        parameters=[p.model_dump(mode="json", exclude_defaults=True) for p in document.parameters],
        body=document.body, source=source, team_id=team_id, created_by=created_by,
    )
    session.add(template)
    await session.flush()
    return template


async def update_template(
    session: AsyncSession,
    template_id: uuid.UUID,
    *,
    slug: str | None = None,
    name: str | None = None,
    language: ScriptLanguage | None = None,
    description: str | None = None,
    parameters: Sequence[Mapping[str, Any]] | None = None,
    body: str | None = None,
    team_id: uuid.UUID | None = None,
    clear_team: bool = False,
    is_active: bool | None = None,
) -> ScriptTemplate:
    """Change a template; body, parameters and language are checked together (TemplateInvalid)."""
    template = await get_template(session, template_id)
    if (
        slug is not None and slug != template.slug
        and await get_template_by_slug(session, template.account_id, slug) is not None
    ):
        raise TemplateSlugTaken(f"a script template with slug {slug!r} already exists")
    current = template_document(template).model_dump(mode="json")
    changes = {"slug": slug, "name": name, "language": language, "description": description,
               "parameters": list(parameters) if parameters is not None else None, "body": body}
    document = parse_template_document({**current, **{k: v for k, v in changes.items() if v is not None}})
    template.slug, template.name, template.language = document.slug, document.name, document.language
    template.description, template.body = document.description, document.body
    template.parameters = [p.model_dump(mode="json", exclude_defaults=True) for p in document.parameters]
    if team_id is not None:
        await _check_team(session, template.account_id, team_id)
        template.team_id = team_id
    elif clear_team:
        template.team_id = None
    if is_active is not None:
        template.is_active = is_active
    await session.flush()
    return template


async def deactivate_template(session: AsyncSession, template_id: uuid.UUID) -> ScriptTemplate:
    """Hide a template from prompts and rendering; flows that name it keep their reference."""
    return await update_template(session, template_id, is_active=False)


async def render_template(
    session: AsyncSession, template_id: uuid.UUID, params: Mapping[str, ParamValue]
) -> RenderedScript:
    """The script with `params` filled in; TemplateParamInvalid names each bad parameter. Records nothing."""
    template = await get_template(session, template_id)
    if not template.is_active:
        raise TemplateInactive(f"script template {template.slug!r} is inactive")
    document = template_document(template)
    resolved = templates.resolve_params(document, params)
    return RenderedScript(template_id=template.id, slug=template.slug, language=template.language,
                          params=resolved, script=templates.render(document, resolved))


async def record_template_use(session: AsyncSession, template_id: uuid.UUID) -> None:
    """A template was used in a session or rendered for an engineer: usage_count + 1."""
    stmt = (
        update(ScriptTemplate)
        .where(ScriptTemplate.id == template_id)
        .values(usage_count=ScriptTemplate.usage_count + 1, updated_at=ScriptTemplate.updated_at)
        .returning(ScriptTemplate.id)
        .execution_options(synchronize_session=False)
    )
    if (await session.execute(stmt)).one_or_none() is None:
        raise TemplateNotFound(f"script template {str(template_id)!r} not found")
    loaded = session.sync_session.identity_map.get(identity_key(ScriptTemplate, template_id))
    if loaded is not None:
        await session.refresh(loaded)


async def top_templates_for_prompt(
    session: AsyncSession, team_id: uuid.UUID | None, limit: int = 20
) -> list[TemplateBrief]:
    """The most used active templates a team may use (its own and the account-wide ones), for prompts."""
    scope: ColumnElement[bool] = ScriptTemplate.team_id.is_(None)
    if team_id is not None:
        scope = or_(scope, ScriptTemplate.team_id == team_id)
    stmt = (
        select(ScriptTemplate)
        .where(ScriptTemplate.is_active.is_(True), scope)
        .order_by(ScriptTemplate.usage_count.desc(), ScriptTemplate.name)
        .limit(limit)
    )
    return [
        TemplateBrief(id=t.id, slug=t.slug, name=t.name, language=t.language, description=t.description,
                      parameters=[str(p["name"]) for p in t.parameters])
        for t in await session.scalars(stmt)
    ]


# --- starter library -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StarterLoadResult:
    flows_created: int
    templates_created: int


async def load_starter_library(session: AsyncSession, account_id: uuid.UUID) -> StarterLoadResult:
    """Copy the starter templates and (approved) flows into an account; slugs already there are kept as
    they are, so running it again adds only what is missing."""
    template_slugs = set(await session.scalars(
        select(ScriptTemplate.slug).where(ScriptTemplate.account_id == account_id)
    ))
    templates_created = 0
    for tdoc in starter.template_documents():
        if tdoc.slug not in template_slugs:
            await create_template(session, account_id=account_id, document=tdoc, source=FlowSource.STARTER)
            templates_created += 1
    flow_slugs = set(await session.scalars(select(Flow.slug).where(Flow.account_id == account_id)))
    flows_created = 0
    for fdoc in starter.flow_documents():
        if fdoc.slug not in flow_slugs:
            await create_flow(session, account_id=account_id, document=fdoc, source=FlowSource.STARTER,
                              status=FlowStatus.APPROVED)
            flows_created += 1
    logger.info("starter library: %d flow(s) and %d template(s) added to account %s",
                flows_created, templates_created, account_id)
    return StarterLoadResult(flows_created=flows_created, templates_created=templates_created)
