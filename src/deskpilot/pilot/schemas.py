"""Pilot shapes: the LLM's step contract (FP-002/FP-003), stored step content (FP-023) and the service's API shapes."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Final, Literal, Self, TypeAlias, assert_never

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator
from pydantic_core import to_json

from deskpilot.pilot.documentation import SessionDocumentation
from deskpilot.pilot.tiers import ConfidenceTier, clamp

ActionType: TypeAlias = Literal[
    "instruction", "script_generation", "verification", "info_request", "open_script_builder"
]
ScriptLanguage: TypeAlias = Literal["powershell", "bash", "python"]
ProblemDomain: TypeAlias = Literal[
    "active_directory",
    "networking",
    "m365",
    "hardware",
    "endpoint",
    "virtualization",
    "security",
    "backup",
    "email",
    "printing",
    "cloud",
    "other",
]
Urgency: TypeAlias = Literal["low", "medium", "high", "critical"]
SessionKind: TypeAlias = Literal["guided", "chat"]
SessionMode: TypeAlias = Literal["ai", "flow"]
PsaContextStatus: TypeAlias = Literal["loaded", "unavailable"]
BranchStatus: TypeAlias = Literal["untried", "active", "dead_end", "solved", "revived"]
ResumeMode: TypeAlias = Literal["continue", "fresh"]
PsaPushStatus: TypeAlias = Literal["pushed", "failed", "no_psa"]
# What `content.type` may hold: the four LLM shapes plus the steps the engine writes itself.
ContentType: TypeAlias = Literal["question", "action", "resolution_suggestion", "fork", "briefing"]

# The LLM offers at most 5 options (FP-005); a runbook question may have up to 10.
MAX_QUESTION_OPTIONS: Final = 5
MAX_STORED_OPTIONS: Final = 10
MIN_FORK_OPTIONS: Final = 2
MAX_FORK_OPTIONS: Final = 4
SUMMARY_CHARS: Final = 120


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# --- the LLM's step contract ----------------------------------------------------------------


class StepOption(BaseModel):
    """One answer a question offers: `label` is shown, `value` is what the response sends back."""

    model_config = ConfigDict(frozen=True)

    label: str = Field(min_length=1, max_length=200)
    value: str = Field(min_length=1, max_length=200)
    followup_hint: str | None = Field(default=None, max_length=500)


class ForkOption(BaseModel):
    """One hypothesis of a fork: a short name and what its branch will investigate."""

    model_config = ConfigDict(frozen=True)

    label: str = Field(min_length=1, max_length=120)
    description: str = Field(default="", max_length=1000)


class _Step(BaseModel):
    model_config = ConfigDict(frozen=True)

    content: str = Field(min_length=1)
    reasoning: str = ""
    context_message: str = ""
    # None when the step says nothing about confidence: the session keeps its previous score (FP-012).
    confidence: float | None = None

    @model_validator(mode="after")
    def _clamp_confidence(self) -> Self:
        # Out-of-range confidence is clamped, not rejected: a corrective retry for it would cost a whole call.
        if self.confidence is not None and not 0.0 <= self.confidence <= 1.0:
            object.__setattr__(self, "confidence", clamp(self.confidence))
        return self


class QuestionStep(_Step):
    type: Literal["question"] = "question"
    options: list[StepOption] = Field(default_factory=list, max_length=MAX_STORED_OPTIONS)
    allow_free_text: bool = True
    allow_skip: bool = True

    @model_validator(mode="after")
    def _distinct_values(self) -> Self:
        values = [o.value for o in self.options]
        if len(set(values)) != len(values):
            raise ValueError("option values must be distinct")
        if not self.options and not self.allow_free_text:
            raise ValueError("a question needs options or allow_free_text")
        return self


class ActionStep(_Step):
    type: Literal["action"] = "action"
    action_type: ActionType = "instruction"
    expected_outcome: str = ""
    template_id: str | None = None
    pre_filled_params: dict[str, str | int | float | bool] | None = None
    instructions: str | None = None
    script_prompt: str | None = None
    script_language: ScriptLanguage | None = None

    @model_validator(mode="after")
    def _script_fields(self) -> Self:
        if self.action_type == "script_generation" and not self.template_id:
            raise ValueError("a script_generation action needs the template_id of an available script")
        if self.action_type == "open_script_builder" and not (self.script_prompt and self.script_language):
            raise ValueError("an open_script_builder action needs script_prompt and script_language")
        return self


class ResolutionSuggestionStep(_Step):
    type: Literal["resolution_suggestion"] = "resolution_suggestion"
    resolution_summary: str = Field(min_length=1)
    follow_up_recommendations: list[str] = Field(default_factory=list)


class ForkStep(_Step):
    type: Literal["fork"] = "fork"
    fork_reason: str = ""
    options: list[ForkOption] = Field(min_length=MIN_FORK_OPTIONS, max_length=MAX_FORK_OPTIONS)

    @model_validator(mode="after")
    def _distinct_labels(self) -> Self:
        labels = [o.label.casefold() for o in self.options]
        if len(set(labels)) != len(labels):
            raise ValueError("fork option labels must be distinct")
        return self


AnyStep: TypeAlias = QuestionStep | ActionStep | ResolutionSuggestionStep | ForkStep
PilotStep: TypeAlias = Annotated[AnyStep, Field(discriminator="type")]


class _TypedStep(BaseModel):
    # A wrapper rather than a TypeAdapter: mypy cannot type an adapter over an Annotated union.
    step: PilotStep


def parse_step(data: Mapping[str, Any]) -> AnyStep:
    """Validate a step document into its typed shape; ValidationError locations start at the step's fields."""
    return _TypedStep.model_validate({"step": data}).step


class ReplyOption(BaseModel):
    label: str
    value: str | None = Field(default=None, description="Questions: machine value of the option.")
    followup_hint: str | None = Field(default=None, description="Questions: what to look at after this answer.")
    description: str | None = Field(default=None, description="Forks: what this branch will investigate.")


class StepReply(BaseModel):
    """The next step of a guided troubleshooting session: a question, an action, a resolution suggestion or a fork.

    One flat object (providers want an object at the root of a structured-output schema); `step` is the same
    answer validated into its typed shape, and an answer that fits no shape fails validation, which gives the
    model one corrective retry.
    """

    type: Literal["question", "action", "resolution_suggestion", "fork"]
    content: str = Field(description="The step itself: the question asked or the action to take.")
    reasoning: str = Field(default="", description="Internal reasoning, not shown to the engineer.")
    context_message: str = Field(default="", description="Shown to the engineer: why this step.")
    confidence: float | None = Field(default=None, description="0.0-1.0: how sure you are of the diagnosis path.")
    options: list[ReplyOption] | None = Field(default=None, description="Questions: 0-5 options. Forks: 2-4.")
    allow_free_text: bool | None = None
    allow_skip: bool | None = None
    action_type: ActionType | None = None
    expected_outcome: str | None = None
    template_id: str | None = None
    pre_filled_params: dict[str, str | int | float | bool] | None = None
    instructions: str | None = None
    script_prompt: str | None = None
    script_language: ScriptLanguage | None = None
    resolution_summary: str | None = None
    follow_up_recommendations: list[str] | None = None
    fork_reason: str | None = None

    _step: AnyStep = PrivateAttr()

    @model_validator(mode="after")
    def _typed(self) -> Self:
        if self.type == "question" and self.options and len(self.options) > MAX_QUESTION_OPTIONS:
            raise ValueError(f"a question offers at most {MAX_QUESTION_OPTIONS} options")
        try:
            self._step = parse_step(self.model_dump(exclude_none=True))
        except ValidationError as e:
            # Locations start with the wrapper's field and the type tag: the model needs only the field path.
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'][2:]) or 'step'}: {err['msg']}"
                for err in e.errors(include_url=False)[:8]
            )
            raise ValueError(f"not a valid {self.type} step: {problems}") from None
        return self

    @property
    def step(self) -> AnyStep:
        return self._step


class IntakeClassification(BaseModel):
    """Triage of an intake: one-line summary, domain, key symptoms and urgency (FP-008)."""

    problem_summary: str = Field(description="One line, at most 120 characters.")
    problem_domain: ProblemDomain = "other"
    key_symptoms: list[str] = Field(default_factory=list)
    urgency: Urgency = "medium"

    @model_validator(mode="after")
    def _short_summary(self) -> Self:
        self.problem_summary = _clip(self.problem_summary, SUMMARY_CHARS)
        return self

    @classmethod
    def fallback(cls, intake_text: str) -> IntakeClassification:
        """What a failed classification becomes (FP-008): the text's start, domain other, medium urgency."""
        return cls(
            problem_summary=intake_text[:SUMMARY_CHARS], problem_domain="other", key_symptoms=[], urgency="medium"
        )


class EscalationInsights(BaseModel):
    """What the next engineer should know: hypotheses still open, next steps, causes already ruled out."""

    remaining_hypotheses: list[str] = Field(default_factory=list)
    suggested_next_steps: list[str] = Field(default_factory=list)
    steps_ruled_out: list[str] = Field(default_factory=list)


# --- stored step content (FP-023) -----------------------------------------------------------

StepType: TypeAlias = Literal["question", "action", "fork", "status_update"]


def step_type_of(step: AnyStep) -> StepType:
    """The stored `step_type`: a resolution suggestion is stored as an action (FP-023)."""
    match step:
        case QuestionStep():
            return "question"
        case ActionStep() | ResolutionSuggestionStep():
            return "action"
        case ForkStep():
            return "fork"
        case unreachable:
            assert_never(unreachable)


def step_content(step: AnyStep) -> dict[str, Any]:
    """The JSON content stored on a step and rendered by the console (FP-023).

    `text` is the step, `type` its shape; questions keep their options here (as `options`), actions their
    script fields, including `script_prompt`/`script_language` for the script builder (which the source lost).
    """
    content: dict[str, Any] = {"type": step.type, "text": step.content}
    match step:
        case QuestionStep():
            content["options"] = [o.model_dump() for o in step.options]
            content["allow_free_text"] = step.allow_free_text
            content["allow_skip"] = step.allow_skip
        case ActionStep():
            content["action_type"] = step.action_type
            content["expected_outcome"] = step.expected_outcome
            for key in ("template_id", "pre_filled_params", "instructions", "script_prompt", "script_language"):
                value = getattr(step, key)
                if value is not None:
                    content[key] = value
            content["allow_free_text"] = True
            content["allow_skip"] = True
        case ResolutionSuggestionStep():
            content["resolution_summary"] = step.resolution_summary
            content["follow_up_recommendations"] = list(step.follow_up_recommendations)
            content["allow_free_text"] = False
            content["allow_skip"] = False
        case ForkStep():
            content["fork_reason"] = step.fork_reason
            content["fork_options"] = [o.model_dump() for o in step.options]
            content["allow_free_text"] = False
            content["allow_skip"] = False
        case unreachable:
            assert_never(unreachable)
    return content


# The StepReply fields a stored step gives back, in StepReply's order, per content type; the rest of the content
# is the console's (flow node, fork branches) or a default the typed step does not have (an action's flags).
_REPLY_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "question": ("options", "allow_free_text", "allow_skip"),
    "action": (
        "action_type", "expected_outcome", "template_id", "pre_filled_params", "instructions", "script_prompt",
        "script_language",
    ),
    "resolution_suggestion": ("resolution_summary", "follow_up_recommendations"),
    "fork": ("options", "fork_reason"),
}


def reply_json(
    content: Mapping[str, Any], reasoning: str | None, context_message: str | None, confidence: float | None
) -> str:
    """A stored step as the model reads its own earlier step: compact StepReply JSON, none-valued fields left out.

    The step row is the conversation's assistant entry (no copy of the reply is kept), so this is rebuilt from the
    columns `step_content` and the engine wrote. It equals the reply's `model_dump_json(exclude_none=True)` when
    the reply spelled out every field of its shape; defaults it left out appear with their values.
    """
    kind = str(content.get("type", ""))
    reply: dict[str, Any] = {
        "type": kind, "content": content.get("text", ""), "reasoning": reasoning or "",
        "context_message": context_message or "",
    }
    if confidence is not None:
        reply["confidence"] = confidence
    for key in _REPLY_FIELDS.get(kind, ()):
        # A fork's `options` are its branches once stored; the hypotheses the model offered are `fork_options`.
        value = content.get("fork_options" if kind == "fork" and key == "options" else key)
        if key == "options" and isinstance(value, list):
            value = [{k: v for k, v in o.items() if v is not None} if isinstance(o, dict) else o for o in value]
        if value is not None:
            reply[key] = value
    # pydantic's serializer, as `model_dump_json` wrote the reply (compact, UTF-8, the same float format).
    return to_json(reply).decode()


def content_options(content: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The options a stored step offers, as stored (`content.options`)."""
    raw = content.get("options")
    return [o for o in raw if isinstance(o, dict)] if isinstance(raw, list) else []


def content_flag(content: Mapping[str, Any], key: str) -> bool:
    value = content.get(key, True)
    return value if isinstance(value, bool) else True


# --- service inputs -------------------------------------------------------------------------


class SessionCreate(BaseModel):
    """A new guided session: a description, pasted log output, optionally a PSA ticket and a client."""

    model_config = ConfigDict(extra="forbid")

    text: str = ""
    log_content: str = ""
    psa_connection_id: uuid.UUID | None = None
    psa_ticket_id: str | None = Field(default=None, max_length=64)
    client_id: uuid.UUID | None = None


class ActionResultIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    success: bool
    details: str | None = Field(default=None, max_length=10_000)


class StepResponse(BaseModel):
    """The engineer's answer to the current step (FP-025).

    `step_id` names the step the engineer saw; when another step is current by now, the answer is refused (409)
    rather than recorded against a step the engineer never read.
    """

    model_config = ConfigDict(extra="forbid")

    step_id: uuid.UUID | None = None
    selected_option: str | None = Field(default=None, max_length=200)
    free_text_input: str | None = Field(default=None, max_length=20_000)
    was_skipped: bool = False
    action_result: ActionResultIn | None = None


class ResolveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resolution_summary: str = Field(min_length=1, max_length=10_000)
    resolution_action: str | None = Field(default=None, max_length=10_000)
    rating: int | None = Field(default=None, ge=1, le=5)
    feedback: str | None = Field(default=None, max_length=10_000)


class EscalateRequest(BaseModel):
    """Escalate to one engineer, or to the whole team when `target_user_id` is None (FP-038)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=10_000)
    target_user_id: uuid.UUID | None = None


class PickupRequest(BaseModel):
    """`continue` from the conversation so far, or `fresh` with the new engineer's own context (FP-042)."""

    model_config = ConfigDict(extra="forbid")

    resume_mode: ResumeMode = "continue"
    additional_context: str | None = Field(default=None, max_length=20_000)


class AbandonRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=10_000)


class RateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rating: int = Field(ge=1, le=5)
    feedback: str | None = Field(default=None, max_length=10_000)


class LinkTicketRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    psa_connection_id: uuid.UUID
    psa_ticket_id: str = Field(min_length=1, max_length=64)


class MarkBranchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["dead_end", "solved"]


class ReviveBranchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    evidence: str = Field(min_length=1, max_length=20_000)


# --- service outputs ------------------------------------------------------------------------


class StepOut(BaseModel):
    """One step as the console renders it (FP-024); tier and score are the session's."""

    step_id: uuid.UUID
    step_order: int
    step_type: str
    content: dict[str, Any]
    context_message: str | None
    options: list[dict[str, Any]]
    allow_free_text: bool
    allow_skip: bool
    confidence_tier: ConfidenceTier
    confidence_score: float
    branch_id: uuid.UUID | None
    is_fork_point: bool
    selected_option: str | None
    free_text_input: str | None
    was_skipped: bool
    action_result: Literal["success", "failure"] | None
    action_details: str | None
    responded_at: datetime | None
    created_at: datetime


class SimilarSession(BaseModel):
    """A resolved session of the account that looks like this one (FP-021, full-text; embeddings may come later)."""

    id: uuid.UUID
    problem_summary: str | None
    resolution_summary: str | None
    resolved_at: datetime | None
    score: float = Field(ge=0.0, le=1.0)


class SessionStarted(BaseModel):
    """The answer to starting a session (FP-022), plus the mode (ai or flow) that produced the first step."""

    session_id: uuid.UUID
    status: str
    mode: SessionMode
    confidence_tier: ConfidenceTier
    confidence_score: float
    problem_summary: str | None
    problem_domain: str | None
    urgency: str | None
    matched_flow_id: uuid.UUID | None
    matched_flow_name: str | None
    match_score: float | None
    first_step: StepOut
    psa_context_status: PsaContextStatus | None
    # Up to 3 resolved sessions of the account that look alike, best first (FP-021).
    similar_sessions: list[SimilarSession] = Field(default_factory=list)


class TurnResult(BaseModel):
    """The answer to a turn (FP-027): the new current step and the session state after it."""

    session_id: uuid.UUID
    status: str
    mode: SessionMode
    confidence_tier: ConfidenceTier
    confidence_score: float
    next_step: StepOut
    resolution_suggested: bool
    resolution_summary: str | None
    active_branch_id: uuid.UUID | None
    step_count: int
    steps_remaining: int


class StepTried(BaseModel):
    step_type: str
    description: str
    response: str | None = None
    action_result: Literal["success", "failure"] | None = None
    action_details: str | None = None


class EscalationPackage(BaseModel):
    """What travels with an escalation (FP-039), and who picked it up (FP-041)."""

    original_user_id: uuid.UUID
    escalated_by_name: str = ""
    problem_summary: str | None
    problem_domain: str | None
    intake: dict[str, Any]
    confidence_at_escalation: float
    steps_tried: list[StepTried]
    escalation_reason: str
    remaining_hypotheses: list[str] = Field(default_factory=list)
    suggested_next_steps: list[str] = Field(default_factory=list)
    steps_ruled_out: list[str] = Field(default_factory=list)
    insights_available: bool = False
    picked_up_by: uuid.UUID | None = None
    picked_up_at: datetime | None = None


class SessionClosed(BaseModel):
    """The answer to resolve (FP-037): documentation and the PSA push outcome (which never fails the resolve)."""

    session_id: uuid.UUID
    status: str
    documentation: SessionDocumentation
    psa_push_status: PsaPushStatus
    psa_push_error: str | None = None
    member_mapping_warning: str | None = None


class EscalationResult(SessionClosed):
    escalated_to_id: uuid.UUID | None
    notified_user_ids: list[uuid.UUID]
    package: EscalationPackage


class PickupResult(BaseModel):
    briefing: StepOut
    turn: TurnResult


class BranchNode(BaseModel):
    """One branch of the session's branch map, with its children (FP-029)."""

    id: uuid.UUID
    parent_branch_id: uuid.UUID | None
    fork_point_id: uuid.UUID | None
    label: str
    description: str
    status: BranchStatus
    is_active: bool
    findings: list[str]
    children: list[BranchNode] = Field(default_factory=list)


class SessionSummary(BaseModel):
    """A session in a list (my sessions, the team's escalation queue)."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    kind: str
    status: str
    mode: str
    problem_summary: str | None
    problem_domain: str | None
    urgency: str | None
    confidence_tier: str
    confidence_score: float
    user_id: uuid.UUID
    team_id: uuid.UUID | None
    client_id: uuid.UUID | None
    escalated_to_id: uuid.UUID | None
    picked_up_by_id: uuid.UUID | None
    escalation_reason: str | None
    escalated_at: datetime | None
    step_count: int
    awaiting_generation: bool
    created_at: datetime
    updated_at: datetime


class SessionDetail(SessionSummary):
    """A whole session: fields, every step in order and the branch map."""

    intake_type: str
    intake: dict[str, Any]
    key_symptoms: list[str]
    matched_flow_id: uuid.UUID | None
    matched_flow_name: str | None
    match_score: float | None
    psa_connection_id: uuid.UUID | None
    psa_ticket_id: str | None
    psa_context_status: str | None
    ticket_data: dict[str, Any] | None
    generation_error: str | None
    current_step_id: uuid.UUID | None
    is_branching: bool
    active_branch_id: uuid.UUID | None
    total_input_tokens: int
    total_output_tokens: int
    resolved_at: datetime | None
    resolution_summary: str | None
    resolution_action: str | None
    resolution_notes: str | None
    rating: int | None
    feedback: str | None
    escalation_package: dict[str, Any] | None
    analysis_status: str | None
    steps: list[StepOut] = Field(default_factory=list)
    branches: list[BranchNode] = Field(default_factory=list)
    # Computed on read while the session is open (FP-021); empty once it is resolved or abandoned.
    similar_sessions: list[SimilarSession] = Field(default_factory=list)
