"""Typed chat events (UC-008…UC-013) decoded alike from inline markers and tool calls; task lane ids (UC-015/016)."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, TypeAlias, assert_never

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter

from deskpilot.llm.messages import ToolCall, ToolDefinition

MarkerName: TypeAlias = Literal["FORK", "ACTIONS", "QUESTIONS", "PROMOTE", "SUGGEST_FIX", "FIX_OUTCOME"]
# The spec's parse order (section 2.2); events come out of a turn in this order.
MARKERS: Final[tuple[MarkerName, ...]] = ("FORK", "ACTIONS", "QUESTIONS", "PROMOTE", "SUGGEST_FIX", "FIX_OUTCOME")

FactSource: TypeAlias = Literal["question", "diagnostic_check", "ai_synthesis"]
FACT_SOURCES: Final[Mapping[str, FactSource]] = {
    "question": "question",
    "diagnostic_check": "diagnostic_check",
    "ai_synthesis": "ai_synthesis",
}
Outcome: TypeAlias = Literal["success", "failure", "partial"]
OUTCOMES: Final[Mapping[str, Outcome]] = {"success": "success", "failure": "failure", "partial": "partial"}

# Caps. The seed caps only the fix title (200); the rest are deskpilot's, sized for a console task lane.
MIN_FORK_OPTIONS: Final = 2
MAX_FORK_OPTIONS: Final = 4
MAX_ACTIONS: Final = 10
MAX_QUESTIONS: Final = 10
MAX_FACTS: Final = 10
FIX_TITLE_CHARS: Final = 200
LABEL_CHARS: Final = 200
TEXT_CHARS: Final = 1000
LONG_TEXT_CHARS: Final = 4000
SCRIPT_CHARS: Final = 20000
SLUG_CHARS: Final = 100


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class QuestionItem(_Frozen):
    """A question for the engineer; `text` is also the key that keeps its task-lane id across turns (UC-016)."""

    text: str = Field(min_length=1, max_length=TEXT_CHARS)
    context: str = Field(default="", max_length=TEXT_CHARS)


class ActionItem(_Frozen):
    """Something for the engineer to do; `label` is its task-lane key (UC-016)."""

    label: str = Field(min_length=1, max_length=LABEL_CHARS)
    command: str | None = Field(default=None, max_length=LONG_TEXT_CHARS)
    description: str = Field(default="", max_length=TEXT_CHARS)


class ForkOption(_Frozen):
    """One hypothesis of a fork; each becomes a branch."""

    label: str = Field(min_length=1, max_length=LABEL_CHARS)
    description: str = Field(default="", max_length=TEXT_CHARS)


class PromotedFact(_Frozen):
    """A fact the AI promotes to "What we know" (UC-011); `user_note` is the engineer's, never the AI's."""

    source_type: FactSource
    source_ref: uuid.UUID | None = None
    text: str = Field(min_length=1, max_length=LONG_TEXT_CHARS)
    summary: str | None = Field(default=None, max_length=TEXT_CHARS)


class ForkEvent(_Frozen):
    """[FORK] (UC-008): split the diagnosis into parallel hypotheses."""

    type: Literal["fork"] = "fork"
    fork_reason: str = Field(default="", max_length=TEXT_CHARS)
    options: tuple[ForkOption, ...] = Field(min_length=MIN_FORK_OPTIONS, max_length=MAX_FORK_OPTIONS)


class ActionsEvent(_Frozen):
    """[ACTIONS] (UC-009): the task lane's actions for this turn."""

    type: Literal["actions"] = "actions"
    actions: tuple[ActionItem, ...] = Field(min_length=1, max_length=MAX_ACTIONS)


class QuestionsEvent(_Frozen):
    """[QUESTIONS] (UC-010): the task lane's questions for this turn."""

    type: Literal["questions"] = "questions"
    questions: tuple[QuestionItem, ...] = Field(min_length=1, max_length=MAX_QUESTIONS)


class PromoteEvent(_Frozen):
    """Every valid [PROMOTE] block of a turn (UC-011), in reply order."""

    type: Literal["promote"] = "promote"
    facts: tuple[PromotedFact, ...] = Field(min_length=1, max_length=MAX_FACTS)


class SuggestFixEvent(_Frozen):
    """[SUGGEST_FIX] (UC-012): the session's new active fix, superseding the previous one."""

    type: Literal["suggest_fix"] = "suggest_fix"
    title: str = Field(min_length=1, max_length=FIX_TITLE_CHARS)
    description: str = Field(min_length=1, max_length=LONG_TEXT_CHARS)
    confidence_pct: int = Field(ge=0, le=100)
    script_template_slug: str | None = Field(default=None, max_length=SLUG_CHARS)
    ai_drafted_script: str | None = Field(default=None, max_length=SCRIPT_CHARS)
    ai_drafted_parameters: dict[str, JsonValue] | None = None


class FixOutcomeEvent(_Frozen):
    """[FIX_OUTCOME] (UC-013): a proposed outcome for a fix; only the engineer's confirmation changes its status."""

    type: Literal["fix_outcome"] = "fix_outcome"
    fix_id: uuid.UUID
    outcome: Outcome
    reason: str = Field(default="", max_length=TEXT_CHARS)


ChatEvent: TypeAlias = Annotated[
    ForkEvent | ActionsEvent | QuestionsEvent | PromoteEvent | SuggestFixEvent | FixOutcomeEvent,
    Field(discriminator="type"),
]
# mypy reads the annotated union as a value of type UnionType, which TypeAdapter's overloads do not take.
_CHAT_EVENT_TYPE: Any = ChatEvent
CHAT_EVENTS: Final[TypeAdapter[ChatEvent]] = TypeAdapter(_CHAT_EVENT_TYPE)


def event_marker(event: ChatEvent) -> MarkerName:
    """The marker that encodes `event` inline."""
    match event:
        case ForkEvent():
            return "FORK"
        case ActionsEvent():
            return "ACTIONS"
        case QuestionsEvent():
            return "QUESTIONS"
        case PromoteEvent():
            return "PROMOTE"
        case SuggestFixEvent():
            return "SUGGEST_FIX"
        case FixOutcomeEvent():
            return "FIX_OUTCOME"
        case _:
            assert_never(event)


# --- decoding one payload (shared by both encodings) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Decoded:
    """What one payload gave: the event (None when the payload was rejected) and why items or all were dropped."""

    event: ChatEvent | None
    notes: tuple[str, ...] = ()


def _text(value: object, limit: int) -> str:
    """A stripped string cut to `limit`, or "" for anything that is not a string."""
    if not isinstance(value, str):
        return ""
    return value.strip()[:limit].rstrip()


def _optional_text(value: object, limit: int) -> str | None:
    return _text(value, limit) or None


def decode_fork(payload: object) -> Decoded:
    """UC-008: an object whose `options` list holds at least two options with a label."""
    if not isinstance(payload, dict):
        return Decoded(None, ("[FORK] must be a JSON object",))
    options = payload.get("options")
    if not isinstance(options, list):
        return Decoded(None, ("[FORK] needs an 'options' list",))
    notes: list[str] = []
    kept: list[ForkOption] = []
    seen: set[str] = set()
    for raw in options:
        if not isinstance(raw, dict) or not (label := _text(raw.get("label"), LABEL_CHARS)):
            notes.append("fork option without a label dropped")
            continue
        if label.casefold() in seen:
            notes.append(f"duplicate fork option {label!r} dropped")
            continue
        if len(kept) == MAX_FORK_OPTIONS:
            notes.append(f"fork options beyond {MAX_FORK_OPTIONS} dropped")
            break
        seen.add(label.casefold())
        kept.append(ForkOption(label=label, description=_text(raw.get("description"), TEXT_CHARS)))
    if len(kept) < MIN_FORK_OPTIONS:
        return Decoded(None, (*notes, f"[FORK] needs at least {MIN_FORK_OPTIONS} valid options"))
    reason = _text(payload.get("fork_reason"), TEXT_CHARS)
    return Decoded(ForkEvent(fork_reason=reason, options=tuple(kept)), tuple(notes))


def decode_actions(payload: object) -> Decoded:
    """UC-009: a non-empty list; items need a label; deduplicated by label, capped at MAX_ACTIONS."""
    if not isinstance(payload, list) or not payload:
        return Decoded(None, ("[ACTIONS] must be a non-empty JSON list",))
    notes: list[str] = []
    kept: list[ActionItem] = []
    seen: set[str] = set()
    for raw in payload:
        if not isinstance(raw, dict) or not (label := _text(raw.get("label"), LABEL_CHARS)):
            notes.append("action without a label dropped")
            continue
        if label in seen:
            notes.append(f"duplicate action {label!r} dropped")
            continue
        if len(kept) == MAX_ACTIONS:
            notes.append(f"actions beyond {MAX_ACTIONS} dropped")
            break
        seen.add(label)
        kept.append(
            ActionItem(
                label=label,
                command=_optional_text(raw.get("command"), LONG_TEXT_CHARS),
                description=_text(raw.get("description"), TEXT_CHARS),
            )
        )
    if not kept:
        return Decoded(None, (*notes, "[ACTIONS] has no valid action"))
    return Decoded(ActionsEvent(actions=tuple(kept)), tuple(notes))


def decode_questions(payload: object) -> Decoded:
    """UC-010: a non-empty list; items need text; deduplicated by text, capped at MAX_QUESTIONS."""
    if not isinstance(payload, list) or not payload:
        return Decoded(None, ("[QUESTIONS] must be a non-empty JSON list",))
    notes: list[str] = []
    kept: list[QuestionItem] = []
    seen: set[str] = set()
    for raw in payload:
        if not isinstance(raw, dict) or not (text := _text(raw.get("text"), TEXT_CHARS)):
            notes.append("question without text dropped")
            continue
        if text in seen:
            notes.append(f"duplicate question {text!r} dropped")
            continue
        if len(kept) == MAX_QUESTIONS:
            notes.append(f"questions beyond {MAX_QUESTIONS} dropped")
            break
        seen.add(text)
        kept.append(QuestionItem(text=text, context=_text(raw.get("context"), TEXT_CHARS)))
    if not kept:
        return Decoded(None, (*notes, "[QUESTIONS] has no valid question"))
    return Decoded(QuestionsEvent(questions=tuple(kept)), tuple(notes))


def decode_fact(payload: object) -> PromotedFact | str:
    """UC-011: one fact, or the reason it was rejected. A bad `source_ref` is dropped, not the fact."""
    if not isinstance(payload, dict):
        return "[PROMOTE] must be a JSON object"
    raw_type = payload.get("source_type")
    source_type = FACT_SOURCES.get(raw_type) if isinstance(raw_type, str) else None
    if source_type is None:
        return f"[PROMOTE] source_type {raw_type!r} is not one of question, diagnostic_check, ai_synthesis"
    text = _text(payload.get("text"), LONG_TEXT_CHARS)
    if not text:
        return "[PROMOTE] needs non-empty text"
    ref: uuid.UUID | None = None
    raw_ref = payload.get("source_ref")
    if isinstance(raw_ref, str) and raw_ref.strip() and source_type != "ai_synthesis":
        try:
            ref = uuid.UUID(raw_ref.strip())
        except ValueError:
            ref = None
    return PromotedFact(
        source_type=source_type,
        source_ref=ref,
        text=text,
        summary=_optional_text(payload.get("summary"), TEXT_CHARS),
    )


def merge_facts(facts: list[PromotedFact]) -> Decoded:
    """Valid facts as one event: duplicates (same source, reference and text) dropped, capped at MAX_FACTS."""
    notes: list[str] = []
    kept: list[PromotedFact] = []
    seen: set[tuple[str, uuid.UUID | None, str]] = set()
    for fact in facts:
        key = (fact.source_type, fact.source_ref, fact.text)
        if key in seen:
            notes.append(f"duplicate fact {fact.text!r} dropped")
            continue
        if len(kept) == MAX_FACTS:
            notes.append(f"facts beyond {MAX_FACTS} dropped")
            break
        seen.add(key)
        kept.append(fact)
    return Decoded(PromoteEvent(facts=tuple(kept)) if kept else None, tuple(notes))


def decode_facts(payloads: list[object]) -> Decoded:
    """Several fact payloads as one event (invalid ones noted and dropped)."""
    facts: list[PromotedFact] = []
    notes: list[str] = []
    for payload in payloads:
        fact = decode_fact(payload)
        if isinstance(fact, str):
            notes.append(fact)
        else:
            facts.append(fact)
    merged = merge_facts(facts)
    return Decoded(merged.event, (*notes, *merged.notes))


def decode_suggest_fix(payload: object) -> Decoded:
    """UC-012: non-empty title and description, finite numeric confidence (0..100, rounded and clamped)."""
    if not isinstance(payload, dict):
        return Decoded(None, ("[SUGGEST_FIX] must be a JSON object",))
    title = _text(payload.get("title"), FIX_TITLE_CHARS)
    description = _text(payload.get("description"), LONG_TEXT_CHARS)
    confidence = payload.get("confidence")
    if not title or not description:
        return Decoded(None, ("[SUGGEST_FIX] needs a non-empty title and description",))
    if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not math.isfinite(confidence):
        return Decoded(None, ("[SUGGEST_FIX] needs a numeric confidence",))
    parameters = payload.get("ai_drafted_parameters")
    script = payload.get("ai_drafted_script")
    return Decoded(
        SuggestFixEvent(
            title=title,
            description=description,
            confidence_pct=max(0, min(100, round(confidence))),
            script_template_slug=_optional_text(payload.get("script_template_slug"), SLUG_CHARS),
            # A script keeps its indentation: cut, never stripped.
            ai_drafted_script=script[:SCRIPT_CHARS] if isinstance(script, str) and script.strip() else None,
            ai_drafted_parameters=parameters if isinstance(parameters, dict) else None,
        )
    )


def decode_fix_outcome(payload: object) -> Decoded:
    """UC-013: `fix_id` a UUID (UC-020's first check), outcome success|failure|partial in any case, reason."""
    if not isinstance(payload, dict):
        return Decoded(None, ("[FIX_OUTCOME] must be a JSON object",))
    outcome = OUTCOMES.get(_text(payload.get("outcome"), 20).lower())
    if outcome is None:
        return Decoded(None, (f"[FIX_OUTCOME] outcome {payload.get('outcome')!r} is not success, failure or partial",))
    raw_id = payload.get("fix_id")
    try:
        fix_id = uuid.UUID(raw_id.strip()) if isinstance(raw_id, str) else None
    except ValueError:
        fix_id = None
    if fix_id is None:
        return Decoded(None, (f"[FIX_OUTCOME] fix_id {raw_id!r} is not a UUID",))
    return Decoded(
        FixOutcomeEvent(
            fix_id=fix_id,
            outcome=outcome,
            reason=_text(payload.get("reason"), TEXT_CHARS),
        )
    )


def decode_payload(marker: MarkerName, payload: object) -> Decoded:
    """Decode one marker block's JSON payload (for PROMOTE: one fact object)."""
    match marker:
        case "FORK":
            return decode_fork(payload)
        case "ACTIONS":
            return decode_actions(payload)
        case "QUESTIONS":
            return decode_questions(payload)
        case "PROMOTE":
            return decode_facts([payload])
        case "SUGGEST_FIX":
            return decode_suggest_fix(payload)
        case "FIX_OUTCOME":
            return decode_fix_outcome(payload)
        case _:
            assert_never(marker)


# --- the tool-call encoding ------------------------------------------------------------------------


def _string(limit: int, description: str) -> dict[str, object]:
    return {"type": "string", "maxLength": limit, "description": description}


_QUESTION_SCHEMA: Final[dict[str, object]] = {
    "type": "object",
    "properties": {
        "text": _string(TEXT_CHARS, "The question, as the engineer will read it."),
        "context": _string(TEXT_CHARS, "Why it matters, one sentence."),
    },
    "required": ["text"],
}
_ACTION_SCHEMA: Final[dict[str, object]] = {
    "type": "object",
    "properties": {
        "label": _string(LABEL_CHARS, "What to do, as a short imperative."),
        "command": {"type": ["string", "null"], "description": "A command to run, if any."},
        "description": _string(TEXT_CHARS, "What to look for in the result."),
    },
    "required": ["label"],
}
_FACT_SCHEMA: Final[dict[str, object]] = {
    "type": "object",
    "properties": {
        "source_type": {"type": "string", "enum": sorted(FACT_SOURCES)},
        "source_ref": {"type": ["string", "null"], "description": "Task-lane item id the fact came from."},
        "text": _string(LONG_TEXT_CHARS, "The fact, one sentence."),
        "summary": _string(TEXT_CHARS, "Short provenance."),
    },
    "required": ["source_type", "text"],
}

# Tool name → (marker it stands for, the argument holding the marker payload, or None for the whole object).
TOOL_MARKERS: Final[Mapping[str, tuple[MarkerName, str | None]]] = {
    "fork_diagnosis": ("FORK", None),
    "propose_actions": ("ACTIONS", "actions"),
    "ask_questions": ("QUESTIONS", "questions"),
    "promote_facts": ("PROMOTE", "facts"),
    "suggest_fix": ("SUGGEST_FIX", None),
    "propose_fix_outcome": ("FIX_OUTCOME", None),
}
TOOL_NAMES: Final[Mapping[MarkerName, str]] = {marker: name for name, (marker, _) in TOOL_MARKERS.items()}

CHAT_EVENT_TOOLS: Final[tuple[ToolDefinition, ...]] = (
    ToolDefinition(
        "fork_diagnosis",
        "Split the diagnosis into 2-4 competing hypotheses, each investigated in its own branch.",
        {
            "type": "object",
            "properties": {
                "fork_reason": _string(TEXT_CHARS, "Why the evidence does not yet favour one hypothesis."),
                "options": {
                    "type": "array",
                    "minItems": MIN_FORK_OPTIONS,
                    "maxItems": MAX_FORK_OPTIONS,
                    "items": {
                        "type": "object",
                        "properties": {
                            "label": _string(LABEL_CHARS, "Short name of the hypothesis."),
                            "description": _string(TEXT_CHARS, "What this branch will check."),
                        },
                        "required": ["label"],
                    },
                },
            },
            "required": ["options"],
        },
    ),
    ToolDefinition(
        "propose_actions",
        "Put checks or steps for the engineer in the task lane.",
        {
            "type": "object",
            "properties": {
                "actions": {"type": "array", "minItems": 1, "maxItems": MAX_ACTIONS, "items": _ACTION_SCHEMA}
            },
            "required": ["actions"],
        },
    ),
    ToolDefinition(
        "ask_questions",
        "Put questions for the engineer in the task lane.",
        {
            "type": "object",
            "properties": {
                "questions": {"type": "array", "minItems": 1, "maxItems": MAX_QUESTIONS, "items": _QUESTION_SCHEMA}
            },
            "required": ["questions"],
        },
    ),
    ToolDefinition(
        "promote_facts",
        "Record established facts in the session's 'What we know' panel.",
        {
            "type": "object",
            "properties": {"facts": {"type": "array", "minItems": 1, "maxItems": MAX_FACTS, "items": _FACT_SCHEMA}},
            "required": ["facts"],
        },
    ),
    ToolDefinition(
        "suggest_fix",
        "Propose the fix you believe resolves the problem; it replaces any earlier suggestion.",
        {
            "type": "object",
            "properties": {
                "title": _string(FIX_TITLE_CHARS, "The fix in a few words."),
                "description": _string(LONG_TEXT_CHARS, "What to do and why."),
                "confidence": {"type": "number", "minimum": 0, "maximum": 100},
                "script_template_slug": {"type": ["string", "null"]},
                "ai_drafted_script": {"type": ["string", "null"]},
                "ai_drafted_parameters": {"type": ["object", "null"]},
            },
            "required": ["title", "description", "confidence"],
        },
    ),
    ToolDefinition(
        "propose_fix_outcome",
        "Propose the outcome of a suggested fix after the engineer said how it went; the engineer confirms it.",
        {
            "type": "object",
            "properties": {
                "fix_id": {"type": "string", "format": "uuid"},
                "outcome": {"type": "string", "enum": sorted(OUTCOMES)},
                "reason": _string(TEXT_CHARS, "One line."),
            },
            "required": ["fix_id", "outcome"],
        },
    ),
)


def decode_tool_call(call: ToolCall) -> Decoded:
    """The event a chat-event tool call stands for, validated exactly like the marker with the same payload."""
    entry = TOOL_MARKERS.get(call.name)
    if entry is None:
        return Decoded(None, (f"{call.name!r} is not a chat-event tool",))
    marker, field = entry
    try:
        arguments: object = json.loads(call.arguments)
    except (ValueError, RecursionError):
        return Decoded(None, (f"{call.name!r} arguments are not valid JSON",))
    if not isinstance(arguments, dict):
        return Decoded(None, (f"{call.name!r} arguments must be a JSON object",))
    payload = arguments if field is None else arguments.get(field)
    if marker == "PROMOTE":
        if not isinstance(payload, list) or not payload:
            return Decoded(None, ("'promote_facts' needs a non-empty 'facts' list",))
        return decode_facts(payload)
    return decode_payload(marker, payload)


# --- task lane with stable ids (UC-015/016) -------------------------------------------------------


class LaneQuestion(QuestionItem):
    """A question in the task lane, with the id facts point at (`source_ref`)."""

    id: uuid.UUID


class LaneAction(ActionItem):
    """An action in the task lane, with its stable id."""

    id: uuid.UUID


class TaskLane(_Frozen):
    """`pending_task_lane`: this turn's questions and actions with ids stable across turns."""

    questions: tuple[LaneQuestion, ...] = ()
    actions: tuple[LaneAction, ...] = ()


def build_task_lane(
    previous: TaskLane | None,
    questions: QuestionsEvent | None,
    actions: ActionsEvent | None,
    *,
    new_id: Callable[[], uuid.UUID] = uuid.uuid4,
) -> TaskLane | None:
    """UC-015/016: the lane for this turn, or None (lane cleared) when the turn has no questions and no actions.

    A question whose exact text (or an action whose exact label) was in the previous lane keeps its id.
    """
    if questions is None and actions is None:
        return None
    old_q = {q.text: q.id for q in previous.questions} if previous else {}
    old_a = {a.label: a.id for a in previous.actions} if previous else {}
    return TaskLane(
        questions=tuple(LaneQuestion(id=old_q.get(q.text) or new_id(), **q.model_dump()) for q in questions.questions)
        if questions
        else (),
        actions=tuple(LaneAction(id=old_a.get(a.label) or new_id(), **a.model_dump()) for a in actions.actions)
        if actions
        else (),
    )
