"""Errors of the PSA domain; httpx and vendor errors are translated into these at the provider adapters.

DeskpilotError
├── UserError
│   ├── NotFound
│   │   ├── PSAConnectionNotFound     no such connection in this account              404
│   │   ├── PSAPushNotFound           no such push record in this account             404
│   │   └── NoPSAConnection           the account has no active connection            404
│   ├── Conflict
│   │   ├── PSAConnectionNameTaken    another connection has this name                409
│   │   ├── PSAConnectionInactive     the connection was deleted (deactivated)        409
│   │   └── PSAPushAlreadyDone        retrying a push that already went through       409
│   └── ValidationFailed
│       └── InvalidPSAConfig          settings or credentials do not fit the kind     422
└── RunFailure
    └── UpstreamError
        └── PSAError                  the PSA refused or failed a request             502
            ├── PSAAuthError          401/403: keys, client id or permissions wrong   502
            ├── PSANotFound           the ticket/company/contact does not exist       404
            ├── PSARejected           other 4xx: the PSA refused the request          502
            ├── PSANotSupported       the provider cannot do this (NotImplementedError) 501
            └── PSAUnavailable        5xx, unreachable                                503
                ├── PSARateLimited    429                                             503
                └── PSATimeout        no answer within the timeout                    504
"""

from __future__ import annotations

from deskpilot.errors import Conflict, NotFound, UpstreamError, ValidationFailed


class PSAError(UpstreamError):
    """The PSA refused or failed a request; `status_code` is the PSA's HTTP status when there was one."""

    code = "psa_error"
    title = "PSA error"

    def __init__(self, detail: str, *, status_code: int | None = None, code: str | None = None) -> None:
        super().__init__(detail, code=code, extra={"psa_status": status_code} if status_code is not None else None)
        self.status_code = status_code


class PSAAuthError(PSAError):
    # 502, not 401: the caller's own credentials are fine, the stored PSA keys are not.
    code = "psa_auth_failed"
    title = "PSA authentication failed"


class PSANotFound(PSAError):
    status = 404
    code = "psa_not_found"
    title = "Not found in the PSA"


class PSARejected(PSAError):
    code = "psa_rejected"
    title = "PSA rejected the request"


class PSANotSupported(PSAError, NotImplementedError):
    status = 501
    code = "psa_not_supported"
    title = "Not supported by this PSA provider"


class PSAUnavailable(PSAError):
    status = 503
    code = "psa_unavailable"
    title = "PSA unavailable"


class PSARateLimited(PSAUnavailable):
    code = "psa_rate_limited"
    title = "PSA rate limit reached"

    def __init__(self, detail: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(detail, status_code=429)
        self.retry_after_s = retry_after_s
        self.extra["retry_after_s"] = retry_after_s


class PSATimeout(PSAUnavailable):
    status = 504
    code = "psa_timeout"
    title = "PSA timed out"


class PSAConnectionNotFound(NotFound):
    code = "psa_connection_not_found"


class PSAPushNotFound(NotFound):
    code = "psa_push_not_found"


class NoPSAConnection(NotFound):
    code = "no_psa_connection"


class PSAConnectionNameTaken(Conflict):
    code = "psa_connection_name_taken"


class PSAConnectionInactive(Conflict):
    code = "psa_connection_inactive"


class PSAPushAlreadyDone(Conflict):
    code = "psa_push_already_done"


class InvalidPSAConfig(ValidationFailed):
    code = "invalid_psa_config"


def error_for_status(status_code: int, detail: str, *, retry_after_s: float | None = None) -> PSAError:
    """Map a PSA's HTTP error status to our error: auth, missing, throttled, down, or refused."""
    if status_code in (401, 403):
        return PSAAuthError(detail, status_code=status_code)
    if status_code == 404:
        return PSANotFound(detail, status_code=status_code)
    if status_code == 429:
        return PSARateLimited(detail, retry_after_s=retry_after_s)
    if status_code >= 500 or status_code == 408:
        return PSAUnavailable(detail, status_code=status_code)
    return PSARejected(detail, status_code=status_code)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds; None for dates or garbage."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None
