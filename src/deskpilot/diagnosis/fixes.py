"""Suggested-fix rules (UC-019 … UC-021): the outcome state machine and the engineer's decision, as pure functions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from deskpilot.chat.events import Outcome
from deskpilot.diagnosis.errors import FixDecisionNotAllowed, FixOutcomeIncomplete, FixTransitionNotAllowed


class FixStatus(StrEnum):
    """What became of a fix (UC-021). `proposed` until the engineer reports; success/partial/failure are verified."""

    PROPOSED = "proposed"
    APPLIED_SUCCESS = "applied_success"
    APPLIED_PARTIAL = "applied_partial"
    APPLIED_FAILURE = "applied_failure"
    # Applied, result not known yet (a reboot, a sync, the user has to try again tomorrow).
    APPLIED_PENDING = "applied_pending"
    DISMISSED = "dismissed"


class UserDecision(StrEnum):
    """Which path the engineer takes to apply the fix; orthogonal to `FixStatus` (UC-021)."""

    NONE = "none"  # not decided yet
    USE_TEMPLATE = "use_template"  # run the matched script template (needs `script_template_id`)
    USE_AI_SCRIPT = "use_ai_script"  # run the AI's drafted script (needs `ai_drafted_script`)
    MANUAL = "manual"  # apply it by hand, no script


class ProposalResolution(StrEnum):
    """What the engineer did with the AI's outcome proposal (UC-020)."""

    OPEN = "open"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


_S = FixStatus
# UC-021 with deskpilot's reading of "full state machine": a proposed fix may get any outcome or be dismissed; a
# pending one may still be verified or dismissed; every other status is final (a new suggestion supersedes it).
TRANSITIONS: Final[Mapping[FixStatus, frozenset[FixStatus]]] = {
    _S.PROPOSED: frozenset(
        {_S.APPLIED_SUCCESS, _S.APPLIED_PARTIAL, _S.APPLIED_FAILURE, _S.APPLIED_PENDING, _S.DISMISSED}
    ),
    _S.APPLIED_PENDING: frozenset({_S.APPLIED_SUCCESS, _S.APPLIED_PARTIAL, _S.APPLIED_FAILURE, _S.DISMISSED}),
    _S.APPLIED_SUCCESS: frozenset(),
    _S.APPLIED_PARTIAL: frozenset(),
    _S.APPLIED_FAILURE: frozenset(),
    _S.DISMISSED: frozenset(),
}
APPLIED: Final = frozenset({_S.APPLIED_SUCCESS, _S.APPLIED_PARTIAL, _S.APPLIED_FAILURE, _S.APPLIED_PENDING})
VERIFIED: Final = frozenset({_S.APPLIED_SUCCESS, _S.APPLIED_PARTIAL, _S.APPLIED_FAILURE})
# An active fix in one of these still needs the engineer's word before the session is escalated (UC-021).
NEEDS_OUTCOME: Final = frozenset({_S.PROPOSED, _S.APPLIED_PENDING})
# The decision can change until the outcome is known.
DECIDABLE: Final = frozenset({_S.PROPOSED, _S.APPLIED_PENDING})

OUTCOME_STATUS: Final[Mapping[Outcome, FixStatus]] = {
    "success": _S.APPLIED_SUCCESS,
    "partial": _S.APPLIED_PARTIAL,
    "failure": _S.APPLIED_FAILURE,
}


def can_transition(current: FixStatus, target: FixStatus) -> bool:
    return target in TRANSITIONS[current]


def check_transition(current: FixStatus, target: FixStatus) -> None:
    """Raise FixTransitionNotAllowed (409) unless `target` may follow `current`."""
    if not can_transition(current, target):
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none: the outcome is final"
        raise FixTransitionNotAllowed(
            f"a fix in status {current.value!r} cannot become {target.value!r} (allowed: {allowed})",
            extra={"status": current.value, "target": target.value},
        )


@dataclass(frozen=True, slots=True)
class OutcomeNotes:
    """The texts an outcome carries; each status requires its own (see `check_outcome_notes`)."""

    partial_notes: str | None = None
    failure_reason: str | None = None
    pending_reason: str | None = None


def check_outcome_notes(target: FixStatus, notes: OutcomeNotes) -> None:
    """Partial needs notes, failure a reason, pending a reason (422 `fix_outcome_incomplete`)."""
    required = {
        _S.APPLIED_PARTIAL: ("partial_notes", notes.partial_notes),
        _S.APPLIED_FAILURE: ("failure_reason", notes.failure_reason),
        _S.APPLIED_PENDING: ("pending_reason", notes.pending_reason),
    }.get(target)
    if required is not None and not (required[1] or "").strip():
        raise FixOutcomeIncomplete(f"{target.value!r} needs a non-empty {required[0]!r}", extra={"field": required[0]})


def check_decision(decision: UserDecision, *, status: FixStatus, has_template: bool, has_ai_script: bool) -> None:
    """The decision fits the fix: its outcome is still open, and the path chosen exists (409 otherwise)."""
    if status not in DECIDABLE:
        raise FixDecisionNotAllowed(
            f"the decision of a fix in status {status.value!r} can no longer change", extra={"status": status.value}
        )
    if decision is UserDecision.USE_TEMPLATE and not has_template:
        raise FixDecisionNotAllowed("this fix has no script template to use", extra={"decision": decision.value})
    if decision is UserDecision.USE_AI_SCRIPT and not has_ai_script:
        raise FixDecisionNotAllowed("this fix has no AI-drafted script to use", extra={"decision": decision.value})
