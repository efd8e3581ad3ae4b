"""The PSA provider interface and the vendor-neutral shapes it returns."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import ClassVar, Self

import httpx
from pydantic import BaseModel, ConfigDict, Field

from deskpilot.psa.errors import PSANotSupported, PSATimeout, PSAUnavailable

DEFAULT_TIMEOUT_S = 20.0
RECENT_NOTES = 10


class _Shape(BaseModel):
    model_config = ConfigDict(frozen=True)


class TicketInfo(_Shape):
    id: str
    summary: str
    description: str | None = Field(default=None, description="The initial description (first detail note).")
    status: str | None = None
    priority: str | None = None
    board: str | None = None
    type: str | None = None
    closed: bool = False


class CompanyInfo(_Shape):
    id: str
    name: str
    identifier: str | None = None


class ContactInfo(_Shape):
    name: str
    email: str | None = None
    phone: str | None = None


class TicketNote(_Shape):
    id: str | None = None
    text: str
    author: str | None = None
    created: datetime | None = None
    internal: bool = False
    resolution: bool = False


class TicketContext(_Shape):
    """Everything the Pilot needs to know about a ticket; `notes` are the last ten, oldest first."""

    ticket: TicketInfo
    company: CompanyInfo | None = None
    contact: ContactInfo | None = None
    notes: list[TicketNote] = Field(default_factory=list)


class TicketSummary(_Shape):
    id: str
    summary: str
    status: str | None = None
    priority: str | None = None
    board: str | None = None
    company: str | None = None
    company_identifier: str | None = None
    contact: str | None = None
    closed: bool = False


class NoteResult(_Shape):
    external_id: str | None


class TimeEntryResult(_Shape):
    external_id: str | None


class Member(_Shape):
    identifier: str
    name: str
    email: str | None = None


class ConnectionCheck(_Shape):
    detail: str


def checked_url(url: str) -> str:
    """`url` if httpx (which sends the calls) takes it as an absolute http(s) URL; else ValueError, for the
    settings' validators, so that a connection never stores a URL its calls would fail on."""
    try:
        parsed = httpx.URL(url)
        parsed.raw_host  # noqa: B018 - encodes the host as a request would (IDNA)
    except (httpx.InvalidURL, UnicodeError) as e:
        raise ValueError(f"not a valid URL: {e}") from e
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError("must be an http(s) URL")
    return url


class PSAProvider(ABC):
    """One PSA behind one set of credentials.

    Pushing a note and checking the connection are what every provider must do; the rest are optional
    capabilities that raise `PSANotSupported` (a `NotImplementedError`) naming the class. Every provider
    takes an injected `httpx.AsyncClient`; it closes only a client it created itself.
    """

    kind: ClassVar[str]

    def __init__(self, *, http_client: httpx.AsyncClient | None = None, timeout_s: float | None = None) -> None:
        self._owns_client = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout_s or DEFAULT_TIMEOUT_S)
        # An injected client keeps its own timeout unless the caller asked for one explicitly.
        self._timeout: httpx.Timeout | None = httpx.Timeout(timeout_s) if timeout_s is not None else None

    async def _send(
        self,
        method: str,
        url: str,
        *,
        vendor: str,
        params: dict[str, str] | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One HTTP call with transport failures translated; the caller maps the status code."""
        try:
            return await self._http.request(
                method, url, params=params, content=content, headers=headers,
                timeout=self._timeout if self._timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TimeoutException as e:
            raise PSATimeout(f"{vendor} did not answer {method} {httpx.URL(url).path!r} in time") from e
        except httpx.HTTPError as e:
            raise PSAUnavailable(f"cannot reach {vendor} at {httpx.URL(url).host!r}: {type(e).__name__}") from e
        except (httpx.InvalidURL, UnicodeError) as e:
            # Neither is an HTTPError (a host name IDNA cannot encode is a UnicodeError): a connection saved
            # before its URL was checked as `checked_url` does now.
            raise PSAUnavailable(f"the {vendor} connection's URL is not valid: {e}") from e

    def _unsupported(self, what: str) -> PSANotSupported:
        return PSANotSupported(f"{what} is not supported by {type(self).__name__}")

    @abstractmethod
    async def test(self) -> ConnectionCheck:
        """Check that the PSA answers and accepts the credentials; raises a PSAError otherwise."""

    @abstractmethod
    async def push_note(
        self, ticket_id: str, text: str, *, internal: bool, resolution: bool, detail: bool
    ) -> NoteResult:
        """Add a note to a ticket."""

    async def get_ticket_context(self, ticket_id: str) -> TicketContext:
        """The ticket with its company, contact and last ten notes."""
        raise self._unsupported("reading ticket context")

    async def search_tickets(
        self, query: str, *, company: str | None = None, open_only: bool = True, limit: int = 20
    ) -> list[TicketSummary]:
        """Tickets whose summary contains `query` (or whose number is `query`), newest first."""
        raise self._unsupported("ticket search")

    async def add_time_entry(
        self, ticket_id: str, member_identifier: str, hours: Decimal, notes: str, started_at: datetime
    ) -> TimeEntryResult:
        """Log `hours` (decimal hours, e.g. 0.25) on a ticket for a PSA member."""
        raise self._unsupported("time entries")

    async def list_members(self) -> list[Member]:
        """Active PSA members (technicians), for mapping deskpilot users to them."""
        raise self._unsupported("listing members")

    async def aclose(self) -> None:
        if self._owns_client:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
