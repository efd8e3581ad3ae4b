"""Request and response shapes of the diagnosis domain; every response carries the session's `state_version`."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from deskpilot.chat.events import FIX_TITLE_CHARS, LONG_TEXT_CHARS, TEXT_CHARS, Outcome
from deskpilot.diagnosis.fixes import FixStatus, ProposalResolution, UserDecision
from deskpilot.diagnosis.lane import NOTE_CHARS, ItemStatus, StoredLane
from deskpilot.diagnosis.models import FactSourceType

# Sources whose fact restates a task-lane item: the item is the truth, so the fact is not edited (UC-018).
ITEM_SOURCES = frozenset({FactSourceType.QUESTION, FactSourceType.DIAGNOSTIC_CHECK})


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# --- facts ------------------------------------------------------------------------------------------


class FactOut(BaseModel):
    id: uuid.UUID
    session_id: uuid.UUID
    source_type: FactSourceType
    source_ref: uuid.UUID | None
    text: str
    summary: str | None
    created_by_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    # False for question/diagnostic_check facts: edit the source item instead (UC-018).
    editable: bool


class FactList(BaseModel):
    """The session's active facts, oldest first."""

    state_version: int
    facts: list[FactOut]


class FactResult(BaseModel):
    state_version: int
    fact: FactOut


class PromotionResult(BaseModel):
    """What `record_promotions` stored this turn, and why the other items were skipped."""

    state_version: int
    facts: list[FactOut] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)


class FactCreate(_Request):
    """A note the engineer adds to "What we know" (source `user_note`)."""

    text: str = Field(min_length=1, max_length=LONG_TEXT_CHARS)
    summary: str | None = Field(default=None, max_length=TEXT_CHARS)


class FactUpdate(_Request):
    """New text and/or summary; a null or empty summary clears it."""

    text: str | None = Field(default=None, min_length=1, max_length=LONG_TEXT_CHARS)
    summary: str | None = Field(default=None, max_length=TEXT_CHARS)

    @model_validator(mode="after")
    def _something(self) -> Self:
        if "text" not in self.model_fields_set and "summary" not in self.model_fields_set:
            raise ValueError("give 'text', 'summary' or both")
        if "text" in self.model_fields_set and self.text is None:
            raise ValueError("'text' cannot be null")
        return self


class PromoteRequest(_Request):
    """Promote a task-lane item to a fact: with `proposed_text` as written, else the model states the finding."""

    item_id: uuid.UUID
    proposed_text: str | None = Field(default=None, max_length=LONG_TEXT_CHARS)
    summary: str | None = Field(default=None, max_length=TEXT_CHARS)


class FactSynthesis(BaseModel):
    """The model's statement of what a task-lane item established; `text` null when it established nothing."""

    text: str | None = Field(default=None, max_length=LONG_TEXT_CHARS)
    summary: str | None = Field(default=None, max_length=TEXT_CHARS)


# --- task lane --------------------------------------------------------------------------------------


class TaskLaneState(BaseModel):
    """The session's task lane (None when the last turn had no questions and no actions)."""

    state_version: int
    lane: StoredLane | None
    updated_at: datetime | None = None


class LaneItemUpdate(_Request):
    """Check or skip an item; `note` is the answer (question) or result (action); omitted keeps the note."""

    status: ItemStatus
    note: str | None = Field(default=None, max_length=NOTE_CHARS)


# --- suggested fixes --------------------------------------------------------------------------------


class AIOutcomeProposal(BaseModel):
    """The AI's [FIX_OUTCOME] for a fix (UC-020) and what the engineer did with it."""

    outcome: Outcome
    reason: str = ""
    proposed_at: datetime
    resolution: ProposalResolution = ProposalResolution.OPEN
    resolved_at: datetime | None = None
    resolved_by_id: uuid.UUID | None = None


class SuggestedFixOut(BaseModel):
    id: uuid.UUID
    session_id: uuid.UUID
    title: str = Field(max_length=FIX_TITLE_CHARS)
    description: str
    confidence_pct: int
    script_template_id: uuid.UUID | None
    ai_drafted_script: str | None
    ai_drafted_parameters: dict[str, JsonValue] | None
    user_decision: UserDecision
    decided_at: datetime | None
    status: FixStatus
    applied_at: datetime | None
    verified_at: datetime | None
    partial_notes: str | None
    failure_reason: str | None
    pending_reason: str | None
    ai_outcome_proposal: AIOutcomeProposal | None
    superseded_at: datetime | None
    created_at: datetime
    updated_at: datetime
    # True for the one fix of the session that is not superseded (UC-019).
    active: bool


class FixResult(BaseModel):
    state_version: int
    fix: SuggestedFixOut


class FixList(BaseModel):
    """The active fix (None when the AI never suggested one) and the superseded ones, newest first."""

    state_version: int
    active: SuggestedFixOut | None
    history: list[SuggestedFixOut]


class OutcomeUpdate(_Request):
    """The engineer's outcome for a fix, or their answer to the AI's proposal.

    * `status` alone: that outcome (partial needs `partial_notes`, failure `failure_reason`, pending
      `pending_reason`). An open AI proposal is marked accepted when it agrees, rejected when it does not.
    * `ai_proposal: "accept"`: the proposal's outcome becomes the status (`status`, if given, must agree); its
      reason fills the note the status needs unless one is given.
    * `ai_proposal: "reject"`: the proposal is marked rejected; with `status` that outcome is recorded instead,
      without it the status stays as it is.
    """

    status: FixStatus | None = None
    partial_notes: str | None = Field(default=None, max_length=LONG_TEXT_CHARS)
    failure_reason: str | None = Field(default=None, max_length=LONG_TEXT_CHARS)
    pending_reason: str | None = Field(default=None, max_length=LONG_TEXT_CHARS)
    ai_proposal: Literal["accept", "reject"] | None = None

    @model_validator(mode="after")
    def _target(self) -> Self:
        if self.status is None and self.ai_proposal is None:
            raise ValueError("give 'status', 'ai_proposal' or both")
        if self.status is FixStatus.PROPOSED:
            raise ValueError("'proposed' is where a fix starts, not an outcome")
        return self


class DecisionUpdate(_Request):
    decision: UserDecision


def proposal_dict(proposal: AIOutcomeProposal) -> dict[str, Any]:
    """The proposal as stored in `ai_outcome_proposal` (JSON)."""
    return proposal.model_dump(mode="json")
