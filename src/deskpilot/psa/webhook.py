"""Generic webhook provider for PSAs without a built-in provider: signed JSON POSTs to a receiver you run.

Every request carries `X-Deskpilot-Event` (note, time_entry, ping, ticket_context, ticket_search) and
`X-Deskpilot-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>`. A receiver
verifies it on the raw bytes before parsing JSON, with `verify_signature` or the same three steps in any
language: split the header on commas into `t` and `v1` values; reject if `t` is more than five minutes
from now (replays); compute the HMAC over `f"{t}.".encode() + raw_body` and compare it in constant time
with each `v1`. GET requests (context, search) are signed over an empty body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError, field_validator

from deskpilot.psa.base import (
    ConnectionCheck,
    NoteResult,
    PSAProvider,
    TicketContext,
    TicketSummary,
    TimeEntryResult,
    checked_url,
)
from deskpilot.psa.errors import PSAError, PSANotSupported, error_for_status, parse_retry_after

SIGNATURE_HEADER = "X-Deskpilot-Signature"
EVENT_HEADER = "X-Deskpilot-Event"
DEFAULT_TOLERANCE_S = 300
VENDOR = "the webhook receiver"

_SUMMARIES = TypeAdapter(list[TicketSummary])


def _http_url(value: str | None) -> str | None:
    if value is None:
        return None
    return checked_url(value.strip())


class WebhookSettings(BaseModel):
    """Where to send pushes; `context_url` (may contain `{ticket_id}`) and `search_url` are optional GETs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=1, max_length=2000)
    context_url: str | None = Field(default=None, max_length=2000)
    search_url: str | None = Field(default=None, max_length=2000)

    @field_validator("url", "context_url", "search_url")
    @classmethod
    def _check_urls(cls, value: str | None) -> str | None:
        return _http_url(value)


class WebhookCredentials(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    secret: SecretStr = Field(min_length=16, max_length=200)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The `X-Deskpilot-Signature` value for `body` sent at `timestamp` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(
    secret: str, header: str | None, body: bytes, tolerance_s: int = DEFAULT_TOLERANCE_S, *, now: float | None = None
) -> bool:
    """True when `header` signs `body` with `secret` and its timestamp is within `tolerance_s` of `now`.

    Several `v1` values are accepted so that a sender can sign with an old and a new secret while rotating.
    """
    if not header:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp).partition(",v1=")[2]
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


class WebhookProvider(PSAProvider):
    """Posts notes and time entries as signed JSON; reads tickets only when the receiver offers GET URLs."""

    kind: ClassVar[str] = "webhook"

    def __init__(
        self,
        settings: WebhookSettings,
        credentials: WebhookCredentials,
        *,
        http_client: httpx.AsyncClient | None = None,
        timeout_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(http_client=http_client, timeout_s=timeout_s)
        self.settings = settings
        self._secret = credentials.secret
        self._clock = clock

    def _headers(self, event: str, body: bytes) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "User-Agent": "deskpilot",
            EVENT_HEADER: event,
            SIGNATURE_HEADER: sign(self._secret.get_secret_value(), body, int(self._clock())),
        }

    async def _request(
        self, method: str, url: str, event: str, *, body: bytes = b"", params: dict[str, str] | None = None
    ) -> Any:
        response = await self._send(
            method, url, vendor=VENDOR, params=params, content=body or None, headers=self._headers(event, body)
        )
        if response.is_error:
            raise error_for_status(
                response.status_code,
                f"{VENDOR} answered the {event!r} event with HTTP {response.status_code}",
                retry_after_s=parse_retry_after(response.headers.get("retry-after")),
            )
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            if method == "GET":
                raise PSAError(f"{VENDOR} answered the {event!r} event with something other than JSON") from None
            # A receiver may acknowledge a push with plain text; only GETs need a JSON answer.
            return None

    async def _post(self, event: str, payload: dict[str, object]) -> Any:
        body = json.dumps({"event": event, **payload}, separators=(",", ":")).encode()
        return await self._request("POST", self.settings.url, event, body=body)

    async def test(self) -> ConnectionCheck:
        await self._post("ping", {"sent_at": datetime.fromtimestamp(self._clock(), UTC).isoformat()})
        return ConnectionCheck(detail="the webhook receiver accepted a signed ping")

    async def push_note(
        self, ticket_id: str, text: str, *, internal: bool, resolution: bool, detail: bool
    ) -> NoteResult:
        answer = await self._post(
            "note",
            {"ticket_id": ticket_id, "text": text, "internal": internal, "resolution": resolution, "detail": detail},
        )
        return NoteResult(external_id=_external_id(answer))

    async def add_time_entry(
        self, ticket_id: str, member_identifier: str, hours: Decimal, notes: str, started_at: datetime
    ) -> TimeEntryResult:
        answer = await self._post(
            "time_entry",
            {
                "ticket_id": ticket_id,
                "member_identifier": member_identifier,
                "hours": float(hours.quantize(Decimal("0.01"))),
                "notes": notes,
                "started_at": started_at.astimezone(UTC).isoformat(),
            },
        )
        return TimeEntryResult(external_id=_external_id(answer))

    async def get_ticket_context(self, ticket_id: str) -> TicketContext:
        template = self.settings.context_url
        if template is None:
            raise PSANotSupported(
                "reading ticket context is not supported by the webhook provider without a context_url"
            )
        if "{ticket_id}" in template:
            url, params = template.replace("{ticket_id}", quote(str(ticket_id), safe="")), None
        else:
            url, params = template, {"ticket_id": str(ticket_id)}
        answer = await self._request("GET", url, "ticket_context", params=params)
        try:
            return TicketContext.model_validate(answer)
        except ValidationError as e:
            raise PSAError(f"{VENDOR} sent a ticket context that does not validate: {e.error_count()} errors") from e

    async def search_tickets(
        self, query: str, *, company: str | None = None, open_only: bool = True, limit: int = 20
    ) -> list[TicketSummary]:
        if self.settings.search_url is None:
            raise PSANotSupported("ticket search is not supported by the webhook provider without a search_url")
        params = {"q": query, "open_only": str(open_only).lower(), "limit": str(limit)}
        if company:
            params["company"] = company
        answer = await self._request("GET", self.settings.search_url, "ticket_search", params=params)
        try:
            return _SUMMARIES.validate_python(answer)[:limit]
        except ValidationError as e:
            raise PSAError(f"{VENDOR} sent search results that do not validate: {e.error_count()} errors") from e


def _external_id(answer: object) -> str | None:
    if isinstance(answer, dict) and answer.get("id") not in (None, ""):
        return str(answer["id"])
    return None
