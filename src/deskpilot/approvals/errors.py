"""Errors raised by the approvals domain; each has a stable problem code."""

from __future__ import annotations

from pydantic import ValidationError

from deskpilot.errors import Conflict, NotFound, UserError, ValidationFailed


class ApprovalNotFound(NotFound):
    code = "approval_not_found"


class ApprovalNotPending(Conflict):
    """The request was already decided (or has run); a decision cannot change it."""

    code = "approval_not_pending"


class ApprovalExpired(UserError):
    """The request expired before anyone decided; the call it stood for will never run."""

    status = 410
    code = "approval_expired"
    title = "Approval expired"


class ApprovalArgumentsInvalid(ValidationFailed):
    """Arguments (the model's or an engineer's edit) do not satisfy the tool's argument model.

    `extra["errors"]` lists `{"field", "message"}` for each problem.
    """

    code = "approval_arguments_invalid"

    @classmethod
    def from_validation(cls, tool_name: str, exc: ValidationError) -> ApprovalArgumentsInvalid:
        errors = [
            {"field": ".".join(str(p) for p in err["loc"]) or "(arguments)", "message": err["msg"]}
            for err in exc.errors(include_url=False)
        ]
        shown = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        return cls(f"invalid arguments for tool {tool_name!r}: {shown}{more}", extra={"errors": errors})


class ApprovalDecisionInvalid(ValidationFailed):
    """A decision is malformed: edit without arguments, arguments without edit, an unknown or repeated target."""

    code = "approval_decision_invalid"


class ApprovalCallMismatch(Conflict):
    """The same tool call id was already stored with another tool or other arguments."""

    code = "approval_call_mismatch"


class ApprovalToolUnknown(Conflict):
    """The tool is not registered in this process, so edited arguments cannot be validated."""

    code = "approval_tool_unknown"
