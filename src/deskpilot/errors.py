"""Root of deskpilot's exception hierarchy.

DeskpilotError
├── UserError                  the caller asked for something wrong (4xx)
│   ├── ValidationFailed       input is malformed                    422
│   ├── NotFound               no such resource in this account      404
│   ├── PermissionDenied       resource visible, action not allowed  403
│   ├── AuthenticationRequired no or bad credentials                 401
│   ├── Conflict               wrong state for this action           409
│   └── LimitExceeded          a quota or budget is spent            429
└── RunFailure                 something we depend on failed (5xx)
    ├── NotConfigured          a feature needs configuration        503
    └── UpstreamError          a provider or service failed          502
"""

from __future__ import annotations

from typing import Any, ClassVar


class DeskpilotError(Exception):
    """Base of every error deskpilot raises on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str, *, code: str | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code  # type: ignore[misc]
        self.extra: dict[str, Any] = extra or {}


class UserError(DeskpilotError):
    status = 400
    code = "bad_request"
    title = "Bad request"


class ValidationFailed(UserError):
    status = 422
    code = "validation_failed"
    title = "Validation failed"


class NotFound(UserError):
    status = 404
    code = "not_found"
    title = "Not found"


class PermissionDenied(UserError):
    status = 403
    code = "permission_denied"
    title = "Permission denied"


class AuthenticationRequired(UserError):
    status = 401
    code = "authentication_required"
    title = "Authentication required"


class Conflict(UserError):
    status = 409
    code = "conflict"
    title = "Conflict"


class LimitExceeded(UserError):
    status = 429
    code = "limit_exceeded"
    title = "Limit exceeded"


class RunFailure(DeskpilotError):
    status = 500
    code = "run_failure"
    title = "Run failure"


class NotConfigured(RunFailure):
    status = 503
    code = "not_configured"
    title = "Not configured"


class UpstreamError(RunFailure):
    status = 502
    code = "upstream_error"
    title = "Upstream error"
