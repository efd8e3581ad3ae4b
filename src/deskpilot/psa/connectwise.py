"""ConnectWise Manage (PSA) provider over its REST API 3.0."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from deskpilot.errors import ValidationFailed
from deskpilot.psa.base import (
    RECENT_NOTES,
    CompanyInfo,
    ConnectionCheck,
    ContactInfo,
    Member,
    NoteResult,
    PSAProvider,
    TicketContext,
    TicketInfo,
    TicketNote,
    TicketSummary,
    TimeEntryResult,
    checked_url,
)
from deskpilot.psa.errors import PSAError, PSANotFound, error_for_status, parse_retry_after

logger = logging.getLogger(__name__)

API_PATH = "/v4_6_release/apis/3.0"
DEFAULT_API_VERSION = "2022.1"
VENDOR = "ConnectWise"
MEMBER_PAGE_SIZE = 1000
# A safety stop for member paging: 50 000 technicians is beyond any real ConnectWise site.
MAX_MEMBER_PAGES = 50
CW_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

JSONObject = dict[str, Any]


class ConnectWiseSettings(BaseModel):
    """Non-secret connection settings; `site` is a host (https is assumed) or a full http(s) origin."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site: str = Field(min_length=1, max_length=255, examples=["na.myconnectwise.net"])
    company_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$")
    client_id: str = Field(min_length=1, max_length=100, description="The developer clientId from ConnectWise.")
    api_version: str = Field(default=DEFAULT_API_VERSION, pattern=r"^\d{4}\.\d{1,2}$")

    @field_validator("site")
    @classmethod
    def _normalise_site(cls, value: str) -> str:
        value = value.strip()
        origin = _origin(value)
        try:
            checked_url(origin)
        except ValueError as e:
            raise ValueError(f"site is not a usable host name: {e}") from e
        parts = urlsplit(origin)
        if parts.query or parts.fragment:
            raise ValueError("site must be a host name such as 'na.myconnectwise.net' or an http(s) origin")
        if parts.path and parts.path != "/":
            raise ValueError("site must not contain a path; the API path is added automatically")
        return value.rstrip("/")

    @property
    def base_url(self) -> str:
        return _origin(self.site) + API_PATH


def _origin(site: str) -> str:
    """A site as an origin: https is assumed for a bare host name."""
    return site if "://" in site else f"https://{site}"


class ConnectWiseCredentials(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    public_key: str = Field(min_length=1, max_length=100)
    private_key: SecretStr = Field(min_length=1, max_length=100)


def cw_string(value: str) -> str:
    """A string literal for ConnectWise `conditions`: double quotes, with backslash and quote escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def search_conditions(query: str, *, company: str | None, open_only: bool) -> str:
    """The `conditions` expression for a ticket search; a bare number also matches the ticket id."""
    parts: list[str] = []
    text = query.strip()
    if text:
        by_summary = f"summary contains {cw_string(text)}"
        number = text.removeprefix("#")
        parts.append(f"(id={int(number)} or {by_summary})" if number.isdigit() else by_summary)
    if company:
        company = company.strip()
        parts.append(f"company/id={int(company)}" if company.isdigit() else f"company/identifier={cw_string(company)}")
    if open_only:
        parts.append("closedFlag=false")
    return " and ".join(parts)


def auth_headers(settings: ConnectWiseSettings, credentials: ConnectWiseCredentials) -> dict[str, str]:
    """Basic auth as `company+public:private`, the integrator clientId and the pinned API version."""
    raw = f"{settings.company_id}+{credentials.public_key}:{credentials.private_key.get_secret_value()}"
    return {
        "Authorization": "Basic " + base64.b64encode(raw.encode()).decode(),
        "clientId": settings.client_id,
        "Accept": f"application/vnd.connectwise.com+json; version={settings.api_version}",
        "Content-Type": "application/json",
    }


def _ticket_number(ticket_id: str) -> int:
    number = str(ticket_id).strip().removeprefix("#")
    if not number.isdigit():
        raise ValidationFailed(f"ConnectWise ticket ids are numbers, not {ticket_id!r}", code="invalid_ticket_id")
    return int(number)


def _name(reference: object) -> str | None:
    """The `name` of a ConnectWise reference object such as `{"id": 1, "name": "New"}`."""
    if isinstance(reference, dict):
        name = reference.get("name")
        return str(name) if name is not None else None
    return None


def _text(value: object) -> str | None:
    return str(value) if value not in (None, "") else None


def _communication(contact: JSONObject, kind: str) -> str | None:
    items = [i for i in contact.get("communicationItems") or [] if isinstance(i, dict)]
    matching = [i for i in items if i.get("communicationType") == kind or _name(i.get("type")) == kind]
    matching.sort(key=lambda i: not i.get("defaultFlag", False))
    return _text(matching[0].get("value")) if matching else None


def _note(raw: JSONObject) -> TicketNote:
    author = _name(raw.get("member")) or _name(raw.get("contact")) or _text(raw.get("createdBy"))
    return TicketNote(
        id=_text(raw.get("id")),
        text=str(raw.get("text") or ""),
        author=author,
        created=raw.get("dateCreated"),
        internal=bool(raw.get("internalAnalysisFlag") or raw.get("internalFlag")),
        resolution=bool(raw.get("resolutionFlag")),
    )


def _summary(raw: JSONObject) -> TicketSummary:
    reference = raw.get("company")
    company: JSONObject = reference if isinstance(reference, dict) else {}
    return TicketSummary(
        id=str(raw["id"]),
        summary=str(raw.get("summary") or ""),
        status=_name(raw.get("status")),
        priority=_name(raw.get("priority")),
        board=_name(raw.get("board")),
        company=_text(company.get("name")),
        company_identifier=_text(company.get("identifier")),
        contact=_name(raw.get("contact")) or _text(raw.get("contactName")),
        closed=bool(raw.get("closedFlag")),
    )


class ConnectWiseProvider(PSAProvider):
    """ConnectWise Manage: tickets, notes, time entries and members through REST API 3.0."""

    kind: ClassVar[str] = "connectwise"

    def __init__(
        self,
        settings: ConnectWiseSettings,
        credentials: ConnectWiseCredentials,
        *,
        http_client: httpx.AsyncClient | None = None,
        timeout_s: float | None = None,
    ) -> None:
        super().__init__(http_client=http_client, timeout_s=timeout_s)
        self.settings = settings
        self._base_url = settings.base_url
        self._headers = auth_headers(settings, credentials)

    # --- transport ----------------------------------------------------------------------------

    async def _call(
        self, method: str, path: str, *, params: dict[str, str] | None = None, body: JSONObject | None = None
    ) -> Any:
        content = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        response = await self._send(
            method, self._base_url + path, vendor=VENDOR, params=params, content=content, headers=self._headers
        )
        if response.is_error:
            raise self._error(method, path, response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as e:
            raise PSAError(f"{VENDOR} answered {method} {path!r} with something other than JSON") from e

    def _error(self, method: str, path: str, response: httpx.Response) -> PSAError:
        message = ""
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            message = str(body.get("message") or body.get("code") or "")
            details = [str(e.get("message")) for e in body.get("errors") or [] if isinstance(e, dict)]
            if details:
                message = f"{message} ({'; '.join(details)})"
        detail = f"{VENDOR} answered {method} {path!r} with HTTP {response.status_code}"
        if message:
            detail = f"{detail}: {message[:200]}"
        logger.info("ConnectWise %s %s failed with HTTP %s", method, path, response.status_code)
        return error_for_status(
            response.status_code, detail, retry_after_s=parse_retry_after(response.headers.get("retry-after"))
        )

    async def _object(self, path: str, *, params: dict[str, str] | None = None) -> JSONObject:
        value = await self._call("GET", path, params=params)
        if not isinstance(value, dict):
            raise PSAError(f"{VENDOR} answered GET {path!r} with something other than an object")
        return value

    async def _list(self, path: str, *, params: dict[str, str] | None = None) -> list[JSONObject]:
        value = await self._call("GET", path, params=params)
        if not isinstance(value, list):
            raise PSAError(f"{VENDOR} answered GET {path!r} with something other than a list")
        return [item for item in value if isinstance(item, dict)]

    # --- capabilities -------------------------------------------------------------------------

    async def test(self) -> ConnectionCheck:
        info = await self._object("/system/info")
        version = info.get("version") or "unknown version"
        return ConnectionCheck(detail=f"{VENDOR} {version} answered; credentials accepted")

    async def get_ticket_context(self, ticket_id: str) -> TicketContext:
        number = _ticket_number(ticket_id)
        raw = await self._object(f"/service/tickets/{number}")
        company_ref = raw.get("company") if isinstance(raw.get("company"), dict) else None
        contact_ref = raw.get("contact") if isinstance(raw.get("contact"), dict) else None
        # gather, not TaskGroup: callers must see our PSAError itself, not an ExceptionGroup around it.
        notes, company, contact = await asyncio.gather(
            self._recent_notes(number), self._company(company_ref), self._contact(contact_ref, raw),
            return_exceptions=True,
        )
        for outcome in (notes, company, contact):
            if isinstance(outcome, BaseException):
                raise outcome
        assert isinstance(notes, list)
        assert not isinstance(company, BaseException)
        assert not isinstance(contact, BaseException)
        description = _text(raw.get("initialDescription")) or await self._initial_description(number, notes)
        ticket = TicketInfo(
            id=str(raw.get("id", number)),
            summary=str(raw.get("summary") or ""),
            description=description,
            status=_name(raw.get("status")),
            priority=_name(raw.get("priority")),
            board=_name(raw.get("board")),
            type=_name(raw.get("type")),
            closed=bool(raw.get("closedFlag")),
        )
        return TicketContext(
            ticket=ticket,
            company=company,
            contact=contact,
            notes=[_note(n) for n in reversed(notes)],
        )

    async def _recent_notes(self, number: int) -> list[JSONObject]:
        params = {"orderBy": "id desc", "pageSize": str(RECENT_NOTES)}
        return await self._list(f"/service/tickets/{number}/notes", params=params)

    async def _initial_description(self, number: int, recent: list[JSONObject]) -> str | None:
        """ConnectWise keeps the initial description as the ticket's first detail note, not on the ticket."""
        if len(recent) < RECENT_NOTES:
            first = [n for n in reversed(recent) if n.get("detailDescriptionFlag")]
        else:
            params = {"conditions": "detailDescriptionFlag=true", "orderBy": "id asc", "pageSize": "1"}
            first = await self._list(f"/service/tickets/{number}/notes", params=params)
        return _text(first[0].get("text")) if first else None

    async def _company(self, reference: JSONObject | None) -> CompanyInfo | None:
        if reference is None or reference.get("id") is None:
            return None
        try:
            raw = await self._object(f"/company/companies/{int(reference['id'])}")
        except PSANotFound:
            raw = reference
        return CompanyInfo(
            id=str(raw.get("id", reference["id"])),
            name=str(raw.get("name") or reference.get("name") or ""),
            identifier=_text(raw.get("identifier") or reference.get("identifier")),
        )

    async def _contact(self, reference: JSONObject | None, ticket: JSONObject) -> ContactInfo | None:
        # The ticket carries a copy of the contact's name, email and phone; the contact record is fresher.
        name = _name(reference) or _text(ticket.get("contactName"))
        email = _text(ticket.get("contactEmailAddress"))
        phone = _text(ticket.get("contactPhoneNumber"))
        if reference is not None and reference.get("id") is not None:
            try:
                raw = await self._object(f"/company/contacts/{int(reference['id'])}")
            except PSANotFound:
                raw = {}
            full = " ".join(p for p in (_text(raw.get("firstName")), _text(raw.get("lastName"))) if p)
            name = full or name
            email = _communication(raw, "Email") or email
            phone = _communication(raw, "Phone") or phone
        if not (name or email or phone):
            return None
        return ContactInfo(name=name or "", email=email, phone=phone)

    async def search_tickets(
        self, query: str, *, company: str | None = None, open_only: bool = True, limit: int = 20
    ) -> list[TicketSummary]:
        params = {"orderBy": "id desc", "pageSize": str(max(1, min(limit, 1000)))}
        conditions = search_conditions(query, company=company, open_only=open_only)
        if conditions:
            params["conditions"] = conditions
        return [_summary(t) for t in await self._list("/service/tickets", params=params) if "id" in t]

    async def push_note(
        self, ticket_id: str, text: str, *, internal: bool, resolution: bool, detail: bool
    ) -> NoteResult:
        number = _ticket_number(ticket_id)
        body = {
            "text": text,
            "detailDescriptionFlag": detail,
            "internalAnalysisFlag": internal,
            "resolutionFlag": resolution,
        }
        created = await self._call("POST", f"/service/tickets/{number}/notes", body=body)
        return NoteResult(external_id=_text(created.get("id")) if isinstance(created, dict) else None)

    async def add_time_entry(
        self, ticket_id: str, member_identifier: str, hours: Decimal, notes: str, started_at: datetime
    ) -> TimeEntryResult:
        body = {
            "chargeToId": _ticket_number(ticket_id),
            "chargeToType": "ServiceTicket",
            "member": {"identifier": member_identifier},
            "timeStart": started_at.astimezone(UTC).strftime(CW_TIME_FORMAT),
            "actualHours": float(hours.quantize(Decimal("0.01"))),
            "notes": notes,
        }
        created = await self._call("POST", "/time/entries", body=body)
        return TimeEntryResult(external_id=_text(created.get("id")) if isinstance(created, dict) else None)

    async def list_members(self) -> list[Member]:
        members: list[Member] = []
        for page in range(1, MAX_MEMBER_PAGES + 1):
            params = {
                "conditions": "inactiveFlag=false",
                "fields": "identifier,firstName,lastName,primaryEmail",
                "pageSize": str(MEMBER_PAGE_SIZE),
                "page": str(page),
            }
            batch = await self._list("/system/members", params=params)
            for raw in batch:
                identifier = _text(raw.get("identifier"))
                if identifier is None:
                    continue
                name = " ".join(p for p in (_text(raw.get("firstName")), _text(raw.get("lastName"))) if p)
                email = _text(raw.get("primaryEmail"))
                members.append(Member(identifier=identifier, name=name or identifier, email=email))
            if len(batch) < MEMBER_PAGE_SIZE:
                break
        return members
