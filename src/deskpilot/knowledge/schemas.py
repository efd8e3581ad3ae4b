"""Flow definitions, flow and template documents, and the API shapes of the knowledge domain."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from deskpilot.knowledge.errors import FieldError, FlowInvalid, TemplateInvalid
from deskpilot.knowledge.models import FlowSource, FlowStatus, ProblemDomain, ScriptLanguage
from deskpilot.knowledge.templates import check_body, coerce_value

MAX_NODES = 500
MAX_OPTIONS = 10
MAX_TEMPLATE_PARAMS = 30
MAX_TEMPLATE_BODY = 100_000

NODE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,99}$"
PARAM_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"

NodeId = Annotated[str, StringConstraints(pattern=NODE_ID_PATTERN)]
Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
ParamName = Annotated[str, StringConstraints(pattern=PARAM_NAME_PATTERN)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=200)]
NodeText = Annotated[str, StringConstraints(min_length=1, max_length=4000)]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=50)]
Symptom = Annotated[str, StringConstraints(min_length=1, max_length=300)]
ParamValue = StrictStr | StrictInt | StrictBool


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:100].strip("-") or "flow"


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- flow definition --------------------------------------------------------------------------


class QuestionOption(_Doc):
    value: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    label: Label
    next: NodeId


class QuestionNode(_Doc):
    id: NodeId
    type: Literal["question"]
    text: NodeText
    why: NodeText | None = None
    options: list[QuestionOption] = Field(min_length=1, max_length=MAX_OPTIONS)


class ActionNode(_Doc):
    id: NodeId
    type: Literal["action"]
    text: NodeText
    why: NodeText | None = None
    expected_outcome: NodeText | None = None
    script_template: Slug | None = None
    default_params: dict[ParamName, ParamValue] = Field(default_factory=dict, max_length=MAX_TEMPLATE_PARAMS)
    on_success: NodeId
    on_failure: NodeId

    @model_validator(mode="after")
    def _params_need_template(self) -> ActionNode:
        if self.default_params and self.script_template is None:
            raise ValueError("default_params are only allowed with a script_template")
        return self


class ResolutionNode(_Doc):
    id: NodeId
    type: Literal["resolution"]
    text: NodeText
    outcome: Literal["resolved", "escalate"] = "resolved"
    follow_up: list[Annotated[str, StringConstraints(min_length=1, max_length=500)]] = Field(
        default_factory=list, max_length=20
    )


FlowNode = Annotated[QuestionNode | ActionNode | ResolutionNode, Field(discriminator="type")]


class FlowDefinition(_Doc):
    """A runbook's decision tree: `{"start": "<node id>", "nodes": [...]}`.

    * question: `text`, optional `why`, `options` [{value, label, next}]
    * action: `text` (the instruction), optional `why`, `expected_outcome`, `script_template` (a template
      slug) with `default_params`, and the next node ids `on_success` / `on_failure`
    * resolution: `text` (the fix or hand-off), `outcome` (resolved | escalate), optional `follow_up` lines

    This model checks the shape; `check_graph` checks what a schema cannot (unique ids, edges that land on
    nodes, every node reachable from `start`, at least one resolution). `parse_definition` runs both.
    """

    start: NodeId
    nodes: list[FlowNode] = Field(min_length=1, max_length=MAX_NODES)

    def node(self, node_id: str) -> QuestionNode | ActionNode | ResolutionNode | None:
        return next((n for n in self.nodes if n.id == node_id), None)

    def node_texts(self) -> Iterator[str]:
        """Every human-readable text in the tree, for full-text search."""
        for node in self.nodes:
            yield node.text
            if isinstance(node, QuestionNode):
                if node.why:
                    yield node.why
                yield from (o.label for o in node.options)
            elif isinstance(node, ActionNode):
                if node.why:
                    yield node.why
                if node.expected_outcome:
                    yield node.expected_outcome
            else:
                yield from node.follow_up


def _edges(node: QuestionNode | ActionNode | ResolutionNode) -> Iterator[tuple[str, str]]:
    """(field path inside the node, target id) for each outgoing edge."""
    if isinstance(node, QuestionNode):
        for k, option in enumerate(node.options):
            yield f"options.{k}.next", option.next
    elif isinstance(node, ActionNode):
        yield "on_success", node.on_success
        yield "on_failure", node.on_failure


def check_graph(definition: FlowDefinition, prefix: str = "") -> list[FieldError]:
    """The structural rules a schema cannot express; an empty list means the tree is sound."""
    errors: list[FieldError] = []
    first_seen: dict[str, int] = {}
    for i, node in enumerate(definition.nodes):
        if node.id in first_seen:
            errors.append(FieldError(f"{prefix}nodes.{i}.id",
                                     f"duplicate node id {node.id!r} (first used at nodes.{first_seen[node.id]})"))
        else:
            first_seen[node.id] = i
        if isinstance(node, QuestionNode):
            values: set[str] = set()
            for k, option in enumerate(node.options):
                if option.value in values:
                    errors.append(FieldError(f"{prefix}nodes.{i}.options.{k}.value",
                                             f"duplicate option value {option.value!r} in node {node.id!r}"))
                values.add(option.value)
        for path, target in _edges(node):
            if target not in first_seen and definition.node(target) is None:
                errors.append(FieldError(f"{prefix}nodes.{i}.{path}", f"{target!r} is not a node id"))
    if definition.start not in first_seen:
        errors.append(FieldError(f"{prefix}start", f"start node {definition.start!r} is not a node id"))
    else:
        reachable = _reachable(definition)
        for i, node in enumerate(definition.nodes):
            if node.id not in reachable and first_seen.get(node.id) == i:
                errors.append(FieldError(f"{prefix}nodes.{i}",
                                         f"node {node.id!r} cannot be reached from start {definition.start!r}"))
    if not any(isinstance(n, ResolutionNode) for n in definition.nodes):
        errors.append(FieldError(f"{prefix}nodes", "a flow needs at least one resolution node"))
    return errors


def _reachable(definition: FlowDefinition) -> set[str]:
    by_id = {n.id: n for n in reversed(definition.nodes)}
    seen = {definition.start}
    stack = [definition.start]
    while stack:
        node = by_id.get(stack.pop())
        if node is None:
            continue
        for _path, target in _edges(node):
            if target not in seen:
                seen.add(target)
                stack.append(target)
    return seen


def _loc_path(loc: Sequence[int | str], prefix: str) -> str:
    parts: list[str] = []
    for i, part in enumerate(loc):
        # Discriminated unions put the tag into the location ("nodes", 3, "action", ...); readers want a path.
        if i > 0 and isinstance(loc[i - 1], int) and part in ("question", "action", "resolution"):
            continue
        parts.append(str(part))
    return prefix + ".".join(parts)


def validation_errors(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    return [FieldError(_loc_path(err["loc"], prefix), err["msg"]) for err in exc.errors(include_url=False)]


def parse_definition(data: object, prefix: str = "definition.") -> FlowDefinition:
    """Validate a definition document (shape and graph); FlowInvalid lists every problem."""
    try:
        definition = FlowDefinition.model_validate(data)
    except ValidationError as e:
        errors = validation_errors(e, prefix)
        raise FlowInvalid.from_errors(errors, "flow") from e
    errors = check_graph(definition, prefix)
    if errors:
        raise FlowInvalid.from_errors(errors, "flow")
    return definition


# --- flow documents (YAML import/export, API create) ---------------------------------------------


class FlowDocument(_Doc):
    """The portable content of a flow: what YAML export writes and import reads, one per document."""

    slug: Slug
    name: Label
    description: Annotated[str, StringConstraints(max_length=10_000)] = ""
    problem_domain: ProblemDomain = ProblemDomain.OTHER
    tags: list[Tag] = Field(default_factory=list, max_length=30)
    symptoms: list[Symptom] = Field(default_factory=list, max_length=30)
    definition: FlowDefinition

    def canonical_definition(self) -> dict[str, Any]:
        """The stored form: defaults left out, so stored, exported and imported definitions compare equal."""
        return self.definition.model_dump(mode="json", exclude_defaults=True)


def parse_flow_document(data: object, *, document: int | None = None) -> FlowDocument:
    """Validate a whole flow document; problems carry field paths (and the document number when given)."""
    try:
        doc = FlowDocument.model_validate(data)
        errors = check_graph(doc.definition, "definition.")
    except ValidationError as e:
        errors = validation_errors(e)
        doc = None
    if errors:
        errors = [FieldError(x.field, x.message, document) for x in errors]
        raise FlowInvalid.from_errors(errors, "flow")
    assert doc is not None
    return doc


# --- script templates -----------------------------------------------------------------------------


class TemplateParam(_Doc):
    name: ParamName
    label: Label
    type: Literal["string", "int", "bool", "choice"] = "string"
    required: bool = True
    default: ParamValue | None = None
    choices: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=50
    )
    pattern: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TemplateParam:
        if self.type == "choice":
            if not self.choices:
                raise ValueError(f"choice parameter {self.name!r} needs choices")
            if len(set(self.choices)) != len(self.choices):
                raise ValueError(f"choice parameter {self.name!r} lists a choice twice")
        elif self.choices:
            raise ValueError(f"only choice parameters take choices ({self.name!r} is {self.type})")
        if self.pattern is not None:
            if self.type != "string":
                raise ValueError(f"only string parameters take a pattern ({self.name!r} is {self.type})")
            try:
                re.compile(self.pattern)
            except re.error as e:
                raise ValueError(f"pattern of {self.name!r} is not a regular expression: {e}") from e
        if not self.required and self.default is None and self.type != "string":
            raise ValueError(f"optional {self.type} parameter {self.name!r} needs a default")
        if self.default is not None:
            try:
                coerce_value(self, self.default)
            except ValueError as e:
                raise ValueError(f"default of {self.name!r}: {e}") from e
        return self


class TemplateDocument(_Doc):
    """A script template's portable content (starter YAML files and API create)."""

    slug: Slug
    name: Label
    language: ScriptLanguage
    description: Annotated[str, StringConstraints(max_length=2000)] = ""
    parameters: list[TemplateParam] = Field(default_factory=list, max_length=MAX_TEMPLATE_PARAMS)
    body: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEMPLATE_BODY)]

    @model_validator(mode="after")
    def _unique_names(self) -> TemplateDocument:
        names = [p.name for p in self.parameters]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"parameter names must be unique: {', '.join(map(repr, duplicates))}")
        return self

    def param(self, name: str) -> TemplateParam | None:
        return next((p for p in self.parameters if p.name == name), None)


def parse_template_document(data: object, *, document: int | None = None) -> TemplateDocument:
    """Validate a template document, including where its placeholders sit in the body."""
    try:
        doc = TemplateDocument.model_validate(data)
        errors = check_body(doc)
    except ValidationError as e:
        errors = validation_errors(e)
        doc = None
    if errors:
        errors = [FieldError(x.field, x.message, document) for x in errors]
        raise TemplateInvalid.from_errors(errors, "template")
    assert doc is not None
    return doc


# --- API shapes -----------------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class FlowCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slug: Slug | None = Field(default=None, description="Derived from the name when omitted.")
    name: Label
    description: str = Field(default="", max_length=10_000)
    problem_domain: ProblemDomain = ProblemDomain.OTHER
    tags: list[Tag] = Field(default_factory=list, max_length=30)
    symptoms: list[Symptom] = Field(default_factory=list, max_length=30)
    definition: dict[str, Any] = Field(description="A flow definition: {start, nodes}; see FlowDefinition.")
    team_id: uuid.UUID | None = Field(default=None, description="Only this team's sessions match it; null = all.")

    def document(self) -> FlowDocument:
        data = self.model_dump(exclude={"team_id"})
        data["slug"] = self.slug or slugify(self.name)
        return parse_flow_document(data)


class FlowUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slug: Slug | None = None
    name: Label | None = None
    description: str | None = Field(default=None, max_length=10_000)
    problem_domain: ProblemDomain | None = None
    tags: list[Tag] | None = Field(default=None, max_length=30)
    symptoms: list[Symptom] | None = Field(default=None, max_length=30)
    definition: dict[str, Any] | None = None
    team_id: uuid.UUID | None = None


class FlowSummary(_Out):
    id: uuid.UUID
    slug: str
    name: str
    description: str
    problem_domain: ProblemDomain
    tags: list[str]
    symptoms: list[str]
    version: int
    status: FlowStatus
    source: FlowSource
    team_id: uuid.UUID | None
    usage_count: int
    matched_count: int
    resolved_count: int
    success_rate: float | None
    last_matched_at: datetime | None
    created_by: uuid.UUID | None
    approved_by: uuid.UUID | None
    approved_at: datetime | None
    created_at: datetime
    updated_at: datetime


class FlowOut(FlowSummary):
    definition: FlowDefinition


class FlowVersionOut(_Out):
    flow_id: uuid.UUID
    version: int
    name: str
    definition: FlowDefinition
    created_at: datetime
    created_by: uuid.UUID | None


class ImportedFlow(BaseModel):
    id: uuid.UUID
    slug: str
    version: int
    action: Literal["created", "updated", "unchanged"]


class ImportResult(BaseModel):
    flows: list[ImportedFlow]


class MatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=20_000)
    problem_domain: ProblemDomain | None = None
    limit: int = Field(default=5, ge=1, le=20)


class FlowMatch(BaseModel):
    """A candidate runbook for a problem; `score` is 0..1 (see matching.py for the formula)."""

    model_config = ConfigDict(frozen=True)

    flow_id: uuid.UUID
    name: str
    score: float = Field(ge=0, le=1)
    reasons: list[str]


class TemplateCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slug: Slug | None = Field(default=None, description="Derived from the name when omitted.")
    name: Label
    language: ScriptLanguage
    description: str = Field(default="", max_length=2000)
    parameters: list[dict[str, Any]] = Field(default_factory=list, description="See TemplateParam.")
    body: str = Field(min_length=1, max_length=MAX_TEMPLATE_BODY)
    team_id: uuid.UUID | None = None

    def document(self) -> TemplateDocument:
        data = self.model_dump(exclude={"team_id"})
        data["slug"] = self.slug or slugify(self.name)
        return parse_template_document(data)


class TemplateUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slug: Slug | None = None
    name: Label | None = None
    language: ScriptLanguage | None = None
    description: str | None = Field(default=None, max_length=2000)
    parameters: list[dict[str, Any]] | None = None
    body: str | None = Field(default=None, min_length=1, max_length=MAX_TEMPLATE_BODY)
    team_id: uuid.UUID | None = None
    is_active: bool | None = None


class TemplateOut(_Out):
    id: uuid.UUID
    slug: str
    name: str
    language: ScriptLanguage
    description: str
    parameters: list[TemplateParam]
    body: str
    source: FlowSource
    team_id: uuid.UUID | None
    usage_count: int
    is_active: bool
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


class RenderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    params: dict[str, ParamValue] = Field(default_factory=dict, max_length=MAX_TEMPLATE_PARAMS)


class RenderedScript(BaseModel):
    template_id: uuid.UUID
    slug: str
    language: ScriptLanguage
    params: dict[str, ParamValue]
    script: str


class TemplateBrief(BaseModel):
    """What a prompt needs to know about a template."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID
    slug: str
    name: str
    language: ScriptLanguage
    description: str
    parameters: list[str]


_PARAMS = TypeAdapter(list[TemplateParam])


def template_params(raw: Sequence[Mapping[str, Any]]) -> list[TemplateParam]:
    """Stored parameter dicts back to models (they were validated on the way in)."""
    return _PARAMS.validate_python(list(raw))
