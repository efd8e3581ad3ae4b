"""The suggested-fix state machine and decision rules as pure functions (UC-021)."""

from __future__ import annotations

import itertools

import pytest

from deskpilot.diagnosis.errors import FixDecisionNotAllowed, FixOutcomeIncomplete, FixTransitionNotAllowed
from deskpilot.diagnosis.fixes import (
    OUTCOME_STATUS,
    FixStatus,
    OutcomeNotes,
    UserDecision,
    can_transition,
    check_decision,
    check_outcome_notes,
    check_transition,
)

S = FixStatus
ALLOWED = {
    (S.PROPOSED, S.APPLIED_SUCCESS),
    (S.PROPOSED, S.APPLIED_PARTIAL),
    (S.PROPOSED, S.APPLIED_FAILURE),
    (S.PROPOSED, S.APPLIED_PENDING),
    (S.PROPOSED, S.DISMISSED),
    (S.APPLIED_PENDING, S.APPLIED_SUCCESS),
    (S.APPLIED_PENDING, S.APPLIED_PARTIAL),
    (S.APPLIED_PENDING, S.APPLIED_FAILURE),
    (S.APPLIED_PENDING, S.DISMISSED),
}


def test_uc021_transition_table_proposed_to_anything_pending_to_a_result_or_dismissed_finals_final() -> None:
    for current, target in itertools.product(FixStatus, FixStatus):
        assert can_transition(current, target) is ((current, target) in ALLOWED), (current, target)


def test_uc021_a_refused_transition_is_a_409_naming_both_statuses() -> None:
    with pytest.raises(FixTransitionNotAllowed) as refused:
        check_transition(S.APPLIED_SUCCESS, S.APPLIED_FAILURE)
    assert refused.value.status == 409
    assert refused.value.code == "fix_transition_not_allowed"
    assert refused.value.extra == {"status": "applied_success", "target": "applied_failure"}
    assert "final" in refused.value.detail
    check_transition(S.APPLIED_PENDING, S.APPLIED_SUCCESS)  # allowed: no exception


@pytest.mark.parametrize(
    ("target", "field"),
    [
        (S.APPLIED_PARTIAL, "partial_notes"),
        (S.APPLIED_FAILURE, "failure_reason"),
        (S.APPLIED_PENDING, "pending_reason"),
    ],
)
def test_uc021_partial_needs_notes_failure_and_pending_need_a_reason(target: FixStatus, field: str) -> None:
    for notes in (OutcomeNotes(), OutcomeNotes(**{field: "   "})):
        with pytest.raises(FixOutcomeIncomplete) as missing:
            check_outcome_notes(target, notes)
        assert (missing.value.status, missing.value.extra) == (422, {"field": field})
    check_outcome_notes(target, OutcomeNotes(**{field: "because"}))


def test_uc021_success_and_dismissal_need_no_note() -> None:
    check_outcome_notes(S.APPLIED_SUCCESS, OutcomeNotes())
    check_outcome_notes(S.DISMISSED, OutcomeNotes())


def test_uc013_ai_outcomes_map_onto_applied_statuses() -> None:
    assert OUTCOME_STATUS == {"success": S.APPLIED_SUCCESS, "partial": S.APPLIED_PARTIAL, "failure": S.APPLIED_FAILURE}


def test_uc021_decision_needs_the_path_it_names_and_an_open_outcome() -> None:
    check_decision(UserDecision.MANUAL, status=S.PROPOSED, has_template=False, has_ai_script=False)
    check_decision(UserDecision.USE_TEMPLATE, status=S.APPLIED_PENDING, has_template=True, has_ai_script=False)
    check_decision(UserDecision.USE_AI_SCRIPT, status=S.PROPOSED, has_template=False, has_ai_script=True)
    with pytest.raises(FixDecisionNotAllowed, match="no script template"):
        check_decision(UserDecision.USE_TEMPLATE, status=S.PROPOSED, has_template=False, has_ai_script=True)
    with pytest.raises(FixDecisionNotAllowed, match="no AI-drafted script"):
        check_decision(UserDecision.USE_AI_SCRIPT, status=S.PROPOSED, has_template=True, has_ai_script=False)
    for final in (S.APPLIED_SUCCESS, S.APPLIED_PARTIAL, S.APPLIED_FAILURE, S.DISMISSED):
        with pytest.raises(FixDecisionNotAllowed, match="can no longer change") as closed:
            check_decision(UserDecision.MANUAL, status=final, has_template=True, has_ai_script=True)
        assert closed.value.status == 409
