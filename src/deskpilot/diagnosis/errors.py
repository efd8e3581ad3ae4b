"""Errors raised by the diagnosis domain, each with a stable code the API turns into problem+json."""

from __future__ import annotations

from deskpilot.errors import Conflict, NotFound, PermissionDenied, ValidationFailed

# DeskpilotError
# └── UserError
#     ├── NotFound
#     │   ├── FactNotFound               no such active fact in this session                      404
#     │   ├── TaskLaneItemNotFound       the session's task lane has no such item                 404
#     │   └── SuggestedFixNotFound       no such suggested fix in this session                    404
#     ├── PermissionDenied
#     │   └── FactNotEditable            a question/diagnostic_check fact: edit the source item   403
#     ├── Conflict
#     │   ├── FixSuperseded              the fix was replaced by a newer suggestion               409
#     │   ├── FixTransitionNotAllowed    the outcome cannot follow the fix's status               409
#     │   ├── NoAIOutcomeProposal        confirm/reject asked, but the AI proposed nothing open   409
#     │   └── FixDecisionNotAllowed      the decision does not fit the fix (no template, final)   409
#     └── ValidationFailed
#         ├── FactInvalid                empty text (also a ValueError, as UC-017 expects)        422
#         │   └── FactSourceInvalid      source_ref not in the lane, of the wrong kind, or on a user note  422
#         ├── FactSynthesisEmpty         the model found nothing to state about the item          422
#         ├── FixOutcomeIncomplete       partial without notes, failure/pending without a reason  422
#         └── ProposalMismatch           "accept" the AI's proposal with a different status       422


class FactNotFound(NotFound):
    code = "fact_not_found"


class TaskLaneItemNotFound(NotFound):
    code = "task_lane_item_not_found"


class SuggestedFixNotFound(NotFound):
    code = "suggested_fix_not_found"


class FactNotEditable(PermissionDenied):
    code = "fact_not_editable"


class FixSuperseded(Conflict):
    code = "fix_superseded"


class FixTransitionNotAllowed(Conflict):
    code = "fix_transition_not_allowed"


class NoAIOutcomeProposal(Conflict):
    code = "no_ai_outcome_proposal"


class FixDecisionNotAllowed(Conflict):
    code = "fix_decision_not_allowed"


class FactInvalid(ValidationFailed, ValueError):
    """A fact that cannot be stored. Also a ValueError: UC-017 skips such an AI-promoted fact with a warning."""

    code = "fact_invalid"


class FactSourceInvalid(FactInvalid):
    """A fact's `source_ref` does not name an item of the session's task lane of the right kind (UC-017)."""

    code = "fact_source_invalid"


class FactSynthesisEmpty(ValidationFailed):
    code = "fact_synthesis_empty"


class FixOutcomeIncomplete(ValidationFailed):
    code = "fix_outcome_incomplete"


class ProposalMismatch(ValidationFailed):
    code = "ai_proposal_mismatch"
