"""RFC 9457 problem+json responses with a stable `code` for every error."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from deskpilot.errors import DeskpilotError

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://deskpilot.dev/problems/"

_HTTP_CODES = {
    400: "bad_request",
    401: "authentication_required",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "limit_exceeded",
}


_STANDARD_FIELDS = frozenset({"type", "title", "status", "detail", "code", "instance", "request_id"})


class ProblemDetails(BaseModel):
    """An error (RFC 9457). `code` is stable for clients to branch on; some problems add members of their own
    (`session_id`, `errors`, …)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=[TYPE_BASE + "not_found"])
    title: str
    status: int
    detail: str
    code: str = Field(examples=["not_found"])
    instance: str
    request_id: str | None = None


# Every API operation documents its errors as this default response: whatever the status, a problem+json body.
DOCUMENTED_ERRORS: dict[int | str, dict[str, Any]] = {
    "default": {
        "description": "An error: RFC 9457 problem+json with a stable `code`.",
        "content": {PROBLEM_MEDIA_TYPE: {"schema": ProblemDetails.model_json_schema()}},
    }
}


def problem(
    status: int, code: str, title: str, detail: str, request: Request, extra: Mapping[str, Any] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "instance": request.url.path,
    }
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    # Extension members never overwrite the standard ones (RFC 9457 section 3.2).
    body.update({k: v for k, v in (extra or {}).items() if k not in _STANDARD_FIELDS})
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "cookie")]
    return ".".join(parts) or str(loc[0]) if loc else "request"


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DeskpilotError)
    if exc.status >= 500:
        logger.warning("request %s failed: %s (%s)", request.url.path, exc.code, exc.detail)
    return problem(exc.status, exc.code, exc.title, exc.detail, request, exc.extra)


def _message(error: Mapping[str, Any]) -> str:
    message = str(error.get("msg", "invalid"))
    if error.get("type") == "json_invalid":
        # FastAPI's message is only "JSON decode error"; the decoder's says what and where.
        reason = (error.get("ctx") or {}).get("error")
        if reason:
            return f"{message}: {reason}"
    return message


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"field": _location(err.get("loc", ())), "message": _message(err), "type": err.get("type")}
        for err in exc.errors()
    ]
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    return problem(422, "validation_failed", "Validation failed", summary or "request is invalid", request,
                   {"errors": errors})


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route for {request.method} {request.url.path}"
    return problem(exc.status_code, code, code.replace("_", " ").capitalize(), detail, request)


DATABASE_BUSY_RETRY_AFTER_S = 2


async def _database_busy(request: Request, exc: Exception) -> JSONResponse:
    """Every pooled database connection stayed in use for the pool's whole timeout: overload, not a bug."""
    assert isinstance(exc, PoolTimeout)
    logger.warning("request %s %s found no free database connection: %s", request.method, request.url.path, exc)
    response = problem(
        503, "database_busy", "Database busy",
        "the server has no free database connection right now; retry shortly", request,
    )
    response.headers["Retry-After"] = str(DATABASE_BUSY_RETRY_AFTER_S)
    return response


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "internal_error", "Internal error", "an unexpected error occurred", request)


def install(app: FastAPI) -> None:
    app.add_exception_handler(DeskpilotError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # sqlalchemy.exc.TimeoutError (pool exhausted) is translated here, never leaked as a 500.
    app.add_exception_handler(PoolTimeout, _database_busy)
    app.add_exception_handler(Exception, _unhandled)
