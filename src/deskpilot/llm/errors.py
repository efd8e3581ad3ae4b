"""Errors of the LLM layer; provider SDK exceptions are translated into these at the adapters."""

from __future__ import annotations

from collections.abc import Sequence

from deskpilot.errors import LimitExceeded, NotConfigured, RunFailure, UpstreamError

# DeskpilotError
# ├── UserError
# │   └── LimitExceeded
# │       └── BudgetExceeded            the run's token budget would be passed by the next call
# └── RunFailure
#     ├── NotConfigured
#     │   └── LLMNotConfigured          no model/provider set for this purpose; names the setting to set
#     ├── ToolFailed                    a tool function raised something other than a deskpilot error
#     └── UpstreamError
#         ├── ProviderError             the provider refused or broke the request (retryable=False)
#         │   ├── ProviderRejected      400/401/403/404/422...: fix the request or configuration
#         │   └── ProviderUnavailable   5xx, connection errors (retryable=True: FallbackModel moves on)
#         │       ├── ProviderRateLimited   429
#         │       ├── ProviderTimeout       the per-call timeout passed
#         │       └── AllModelsFailed       every model of a fallback chain failed retryably
#         ├── StructuredOutputError     the reply did not validate, even after the corrective retry
#         └── ToolStepLimitExceeded     the model still asked for tools after max_tool_steps rounds


class LLMNotConfigured(NotConfigured):
    """No usable model for a purpose: the message says which setting to set."""

    code = "llm_not_configured"
    title = "LLM not configured"


class BudgetExceeded(LimitExceeded):
    """The next call could pass the run's token budget, so it was not sent."""

    code = "llm_budget_exceeded"
    title = "LLM budget exceeded"


class ProviderError(UpstreamError):
    """The provider refused or failed the request; `retryable` says whether another model may succeed."""

    code = "llm_provider_error"
    title = "LLM provider error"
    retryable: bool = False

    def __init__(
        self,
        detail: str,
        *,
        model: str | None = None,
        status_code: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(detail, code=code, extra={"model": model, "status_code": status_code})
        self.model = model
        self.status_code = status_code


class ProviderRejected(ProviderError):
    """The provider refused this request (bad request, bad key, unknown model): retrying elsewhere will not help."""

    code = "llm_provider_rejected"


class ProviderUnavailable(ProviderError):
    """The provider is down, overloaded or unreachable: the next model of a fallback chain may answer."""

    code = "llm_provider_unavailable"
    retryable = True


class ProviderRateLimited(ProviderUnavailable):
    """HTTP 429 from the provider."""

    code = "llm_rate_limited"

    def __init__(
        self,
        detail: str,
        *,
        model: str | None = None,
        status_code: int | None = 429,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(detail, model=model, status_code=status_code)
        self.retry_after_s = retry_after_s
        self.extra["retry_after_s"] = retry_after_s


class ProviderTimeout(ProviderUnavailable):
    """The call took longer than its timeout."""

    code = "llm_timeout"


class AllModelsFailed(ProviderUnavailable):
    """Every model of a fallback chain failed with a retryable error."""

    code = "llm_all_models_failed"

    def __init__(self, errors: Sequence[ProviderError], *, model: str | None = None) -> None:
        summary = "; ".join(f"{e.model}: {e.detail}" for e in errors)
        super().__init__(f"every model of the fallback chain failed: {summary}", model=model)
        self.errors = tuple(errors)


class StructuredOutputError(UpstreamError):
    """The model's reply did not validate into the requested type, even after one corrective retry."""

    code = "llm_invalid_output"
    title = "LLM output did not validate"

    def __init__(self, detail: str, *, raw_output: str, first_raw_output: str, validation_error: str) -> None:
        super().__init__(detail, extra={"validation_error": validation_error})
        self.raw_output = raw_output
        self.first_raw_output = first_raw_output
        self.validation_error = validation_error


class ToolStepLimitExceeded(UpstreamError):
    """The model kept asking for tools after the run's allowed number of tool rounds."""

    code = "llm_tool_step_limit"
    title = "LLM tool step limit reached"

    def __init__(self, detail: str, *, max_steps: int, pending_tools: Sequence[str]) -> None:
        super().__init__(detail, extra={"max_steps": max_steps, "pending_tools": list(pending_tools)})
        self.max_steps = max_steps
        self.pending_tools = tuple(pending_tools)


class ToolFailed(RunFailure):
    """A tool function raised an unexpected exception (the original is chained as __cause__)."""

    code = "llm_tool_failed"
    title = "Tool failed"


def error_for_status(
    status_code: int, detail: str, *, model: str | None, retry_after_s: float | None = None
) -> ProviderError:
    """Map an HTTP status from a provider to our error: 408/409/429/5xx may succeed elsewhere, the rest not."""
    if status_code == 429:
        return ProviderRateLimited(detail, model=model, retry_after_s=retry_after_s)
    if status_code in (408, 409) or status_code >= 500:
        return ProviderUnavailable(detail, model=model, status_code=status_code)
    return ProviderRejected(detail, model=model, status_code=status_code)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds; None for dates or garbage."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None
