"""Errors raised by the Pilot domain, each with a stable code the API turns into problem+json."""

from __future__ import annotations

from deskpilot.errors import Conflict, NotConfigured, NotFound, PermissionDenied, UpstreamError, ValidationFailed

# DeskpilotError
# ├── UserError
# │   ├── NotFound
# │   │   ├── SessionNotFound          no such session in this account                    404
# │   │   └── BranchNotFound           the session has no such branch                     404
# │   ├── PermissionDenied
# │   │   └── SessionAccessDenied      visible in the account, not to this engineer       403
# │   ├── Conflict
# │   │   ├── InvalidSessionState      the action is not allowed in the session's status  409
# │   │   ├── StepLimitReached         30 steps taken (FP-001)                            409
# │   │   ├── StepAlreadyAnswered      another response to this step won the race         409
# │   │   ├── SessionChanged           the session changed since it was read              409
# │   │   ├── GenerationPending        the next step has not been generated yet           409
# │   │   ├── NoGenerationPending      retry_generation with nothing to generate          409
# │   │   ├── SelfEscalation           escalating to oneself (FP-038)                     409
# │   │   ├── OwnSessionPickup         picking up one's own escalation (FP-041)           409
# │   │   ├── BranchClosed             switching to a dead-end or solved branch           409
# │   │   └── NotBranching             a branch action on a session that never forked     409
# │   └── ValidationFailed
# │       ├── IntakeTooLarge           intake over 100 KB                                 422
# │       ├── IntakeEmpty              no text, log or ticket                             422
# │       ├── UnknownOption            a response names an option the step did not offer  422
# │       └── InvalidResponse          a response the step cannot take (skip not allowed) 422
# └── RunFailure
#     ├── NotConfigured
#     │   └── NoLLMNoFlow              no LLM configured and no flow matches              503
#     └── UpstreamError
#         └── StepGenerationFailed     the model failed; the session waits for a retry    502


class SessionNotFound(NotFound):
    code = "session_not_found"


class BranchNotFound(NotFound):
    code = "branch_not_found"


class SessionAccessDenied(PermissionDenied):
    code = "session_access_denied"


class InvalidSessionState(Conflict):
    code = "invalid_session_state"


class StepLimitReached(Conflict):
    code = "max_steps_reached"


class StepAlreadyAnswered(Conflict):
    code = "step_already_answered"


class SessionChanged(Conflict):
    code = "session_changed"


class GenerationPending(Conflict):
    code = "generation_pending"


class NoGenerationPending(Conflict):
    code = "no_generation_pending"


class SelfEscalation(Conflict):
    code = "self_escalation"


class OwnSessionPickup(Conflict):
    code = "own_session_pickup"


class BranchClosed(Conflict):
    code = "branch_closed"


class NotBranching(Conflict):
    code = "not_branching"


class IntakeTooLarge(ValidationFailed):
    code = "intake_too_large"


class IntakeEmpty(ValidationFailed):
    code = "intake_empty"


class UnknownOption(ValidationFailed):
    code = "unknown_option"


class InvalidResponse(ValidationFailed):
    code = "invalid_response"


class NoLLMNoFlow(NotConfigured):
    """No model answers and no approved flow matches; `extra["session_id"]` is the session that keeps the intake."""

    code = "no_llm_no_flow"
    title = "No LLM and no matching flow"


class StepGenerationFailed(UpstreamError):
    """The next step could not be generated; the engineer's input is stored and `retry_generation` continues.

    `extra` carries `session_id` and `cause` (the LLM error's code, e.g. `llm_invalid_output`, `llm_timeout`).
    """

    code = "step_generation_failed"
    title = "Next step not generated"
