"""A loopback ConnectWise Manage REST API 3.0 with in-memory data, strict auth checks and error injection."""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.fakes._server import ScriptedServer, wait_or_disconnect

API = "/v4_6_release/apis/3.0"
COMPANY_ID = "deskpilot_test"
PUBLIC_KEY = "PubKeyDeskpilotAB12"
PRIVATE_KEY = "PrivKey-s3cr3t-9f3c-DO-NOT-LEAK"
CLIENT_ID = "6f1c2b0e-1d2a-4c3b-9e8f-0a1b2c3d4e5f"
API_VERSION = "2022.1"

Record = dict[str, Any]


@dataclass
class CWRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class Injection:
    status: int
    method: str | None
    path: str | None
    times: int
    delay_s: float
    body: Record | None
    headers: dict[str, str] = field(default_factory=dict)
    text: str | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (self.path is None or path.startswith(self.path))


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "errors": None}, status_code=status, headers=headers)


# --- conditions ---------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+(?:\.\d+)?)|(?P<op>!=|<=|>=|=|<|>)'
    r"|(?P<paren>[()])|(?P<word>[A-Za-z_][\w/]*))"
)


class ConditionError(ValueError):
    pass


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise ConditionError(f"cannot parse conditions at {text[pos:]!r}")
        pos = match.end()
        kind = match.lastgroup
        value = match.group(kind or "")
        if kind == "str":
            out.append(("value", re.sub(r"\\(.)", r"\1", value[1:-1])))
        elif kind == "num":
            out.append(("value", float(value) if "." in value else int(value)))
        elif kind == "word" and value.lower() in ("true", "false"):
            out.append(("value", value.lower() == "true"))
        elif kind == "word" and value.lower() == "null":
            out.append(("value", None))
        elif kind == "word" and value.lower() in ("and", "or", "contains", "like", "not"):
            out.append((value.lower(), value))
        else:
            out.append((kind or "", value))
    return out


def _field(record: Record, path: str) -> Any:
    value: Any = record
    for part in path.split("/"):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _compare(left: Any, op: str, right: Any) -> bool:
    if isinstance(left, str) and isinstance(right, str):
        left, right = left.lower(), right.lower()
    if op == "contains":
        return isinstance(left, str) and isinstance(right, str) and right in left
    if op == "like":
        pattern = "^" + ".*".join(re.escape(p) for p in str(right).split("%")) + "$"
        return isinstance(left, str) and re.match(pattern, left) is not None
    if op == "=":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if left is None or right is None:
        return False
    return {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[op]


def parse_conditions(text: str) -> Callable[[Record], bool]:
    """The subset of ConnectWise `conditions` the provider uses: comparisons, contains, like, and/or, parens."""
    tokens = _tokens(text)
    pos = 0

    def peek() -> str | None:
        return tokens[pos][0] if pos < len(tokens) else None

    def take(kind: str) -> Any:
        nonlocal pos
        if peek() != kind:
            raise ConditionError(f"expected {kind} in conditions {text!r}")
        pos += 1
        return tokens[pos - 1][1]

    def expression() -> Callable[[Record], bool]:
        parts = [conjunction()]
        while peek() == "or":
            take("or")
            parts.append(conjunction())
        return lambda r: any(p(r) for p in parts)

    def conjunction() -> Callable[[Record], bool]:
        parts = [factor()]
        while peek() == "and":
            take("and")
            parts.append(factor())
        return lambda r: all(p(r) for p in parts)

    def factor() -> Callable[[Record], bool]:
        if peek() == "paren" and tokens[pos][1] == "(":
            take("paren")
            inner = expression()
            if take("paren") != ")":
                raise ConditionError(f"unbalanced parentheses in {text!r}")
            return inner
        path = take("word")
        kind = peek()
        op = take(kind) if kind in ("op", "contains", "like") else None
        if op is None:
            raise ConditionError(f"expected an operator after {path!r} in {text!r}")
        value = take("value")
        return lambda r: _compare(_field(r, path), str(op).lower(), value)

    predicate = expression()
    if pos != len(tokens):
        raise ConditionError(f"unexpected {tokens[pos][1]!r} in conditions {text!r}")
    return predicate


# --- the server ---------------------------------------------------------------------------------------


def _stamp(day: int, hour: int) -> str:
    return datetime(2026, 3, day, hour, 0, tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeConnectWise(ScriptedServer):
    """GET tickets/notes/companies/contacts/members/system info, POST notes and time entries.

    Every request must carry Basic auth for `company+public:private` (401 otherwise), the `clientId`
    header (400 when missing, 401 when unknown) and `Accept: application/vnd.connectwise.com+json;
    version=<api_version>` (400 otherwise). `calls` records every request; `inject` makes the next
    matching requests fail (or stall) on purpose.
    """

    def __init__(self) -> None:
        self.company_id = COMPANY_ID
        self.public_key = PUBLIC_KEY
        self.private_key = PRIVATE_KEY
        self.client_id = CLIENT_ID
        self.api_version = API_VERSION
        self.calls: list[CWRequest] = []
        self._injections: list[Injection] = []
        self._data_lock = threading.Lock()
        self.tickets: dict[int, Record] = {}
        self.notes: dict[int, list[Record]] = {}
        self.companies: dict[int, Record] = {}
        self.contacts: dict[int, Record] = {}
        self.members: list[Record] = []
        self.time_entries: list[Record] = []
        self._next_id = 1000
        super().__init__()
        self.seed()

    @property
    def site(self) -> str:
        return self.url

    def settings(self) -> dict[str, str]:
        return {
            "site": self.site,
            "company_id": self.company_id,
            "client_id": self.client_id,
            "api_version": self.api_version,
        }

    def credentials(self) -> dict[str, str]:
        return {"public_key": self.public_key, "private_key": self.private_key}

    # --- data -----------------------------------------------------------------------------------------

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def seed(self) -> None:
        acme = {"id": 19, "identifier": "ACME", "name": "Acme Corp", "phoneNumber": "555-0100"}
        globex = {"id": 20, "identifier": "GLOBEX", "name": "Globex Inc"}
        self.companies = {19: acme, 20: globex}
        self.contacts = {
            31: {
                "id": 31,
                "firstName": "Jane",
                "lastName": "Doe",
                "company": {"id": 19, "identifier": "ACME"},
                "communicationItems": [
                    {
                        "id": 1,
                        "type": {"id": 2, "name": "Direct"},
                        "value": "555-0101",
                        "defaultFlag": True,
                        "communicationType": "Phone",
                    },
                    {
                        "id": 2,
                        "type": {"id": 1, "name": "Email"},
                        "value": "jane.old@acme.example",
                        "defaultFlag": False,
                        "communicationType": "Email",
                    },
                    {
                        "id": 3,
                        "type": {"id": 1, "name": "Email"},
                        "value": "jane@acme.example",
                        "defaultFlag": True,
                        "communicationType": "Email",
                    },
                ],
            }
        }
        self.members = [
            {
                "id": 1,
                "identifier": "jsmith",
                "firstName": "John",
                "lastName": "Smith",
                "primaryEmail": "Engineer@Acme-IT.example",
                "inactiveFlag": False,
            },
            {
                "id": 2,
                "identifier": "aowner",
                "firstName": "Ada",
                "lastName": "Owner",
                "primaryEmail": "owner@acme-it.example",
                "inactiveFlag": False,
            },
            {
                "id": 3,
                "identifier": "gone",
                "firstName": "Old",
                "lastName": "Timer",
                "primaryEmail": "lead@acme-it.example",
                "inactiveFlag": True,
            },
        ]
        self.tickets = {}
        self.notes = {}
        self.time_entries = []
        self.add_ticket(
            101,
            "Printer offline on 2nd floor",
            company=acme,
            contact_id=31,
            status="New",
            notes=[
                {
                    "text": "Printer HP-2F shows offline for everyone since this morning.",
                    "detailDescriptionFlag": True,
                    "contact": {"id": 31, "name": "Jane Doe"},
                },
                {
                    "text": "Checked the switch port, link is up.",
                    "internalAnalysisFlag": True,
                    "member": {"id": 1, "identifier": "jsmith", "name": "John Smith"},
                },
            ],
        )
        self.add_ticket(102, 'VPN error "809" for remote users', company=acme, status="In Progress")
        self.add_ticket(103, "Printer toner low", company=globex, status="Closed", closed=True)
        self.add_ticket(104, "Email delivery delays", company=globex, status="New")

    def add_ticket(
        self,
        ticket_id: int,
        summary: str,
        *,
        company: Record,
        contact_id: int | None = None,
        status: str = "New",
        closed: bool = False,
        notes: list[Record] | None = None,
    ) -> Record:
        ticket: Record = {
            "id": ticket_id,
            "summary": summary,
            "recordType": "ServiceTicket",
            "board": {"id": 1, "name": "Service Desk"},
            "status": {"id": 10, "name": status},
            "priority": {"id": 4, "name": "Priority 3 - Normal"},
            "type": {"id": 7, "name": "Hardware"},
            "company": {"id": company["id"], "identifier": company["identifier"], "name": company["name"]},
            "closedFlag": closed,
            "_info": {"lastUpdated": _stamp(2, 9)},
        }
        if contact_id is not None:
            contact = self.contacts[contact_id]
            ticket["contact"] = {"id": contact_id, "name": f"{contact['firstName']} {contact['lastName']}"}
            ticket["contactName"] = ticket["contact"]["name"]
            ticket["contactEmailAddress"] = "stale@acme.example"
        self.tickets[ticket_id] = ticket
        self.notes[ticket_id] = []
        for i, note in enumerate(notes or []):
            self.add_note(ticket_id, note, created=_stamp(1, 8 + i))
        return ticket

    def add_note(self, ticket_id: int, note: Record, *, created: str | None = None) -> Record:
        record = {
            "id": self.new_id(),
            "ticketId": ticket_id,
            "text": "",
            "detailDescriptionFlag": False,
            "internalAnalysisFlag": False,
            "resolutionFlag": False,
            "dateCreated": created or _stamp(3, 12),
            "createdBy": "api",
            "internalFlag": False,
            "externalFlag": False,
        }
        record.update(note)
        self.notes[ticket_id].append(record)
        return record

    def reset(self) -> None:
        super().reset()
        with self._data_lock:
            self.calls.clear()
            self._injections.clear()
            self.company_id, self.public_key, self.private_key = COMPANY_ID, PUBLIC_KEY, PRIVATE_KEY
            self.client_id, self.api_version = CLIENT_ID, API_VERSION
            self.seed()

    def inject(
        self,
        status: int,
        *,
        method: str | None = None,
        path: str | None = None,
        times: int = 1,
        delay_s: float = 0.0,
        body: Record | None = None,
        headers: dict[str, str] | None = None,
        text: str | None = None,
    ) -> None:
        """Answer the next `times` requests matching method/path prefix (relative to the API root) with `status`.

        `delay_s` holds the answer back, for client timeouts; `text` answers with a non-JSON body.
        """
        with self._data_lock:
            self._injections.append(Injection(status, method, path, times, delay_s, body, headers or {}, text))

    def calls_to(self, method: str, path: str) -> list[CWRequest]:
        return [c for c in self.calls if c.method == method and c.path == path]

    # --- HTTP -----------------------------------------------------------------------------------------

    def build_app(self) -> Starlette:
        return Starlette(routes=[Route(API + "/{rest:path}", self._dispatch, methods=["GET", "POST"])])

    def _auth_problem(self, request: Request) -> Response | None:
        expected = base64.b64encode(f"{self.company_id}+{self.public_key}:{self.private_key}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return _error(401, "Unauthorized", "Authentication failed: company, public or private key is wrong")
        client_id = request.headers.get("clientid")
        if not client_id:
            return _error(400, "BadRequest", "clientId header is required")
        if client_id != self.client_id:
            return _error(401, "Unauthorized", "clientId is not registered")
        if request.headers.get("accept") != f"application/vnd.connectwise.com+json; version={self.api_version}":
            return _error(400, "BadRequest", "Accept header must name a supported API version")
        return None

    async def _dispatch(self, request: Request) -> Response:
        path = "/" + request.path_params["rest"]
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        with self._data_lock:
            self.calls.append(
                CWRequest(
                    request.method,
                    path,
                    dict(request.query_params),
                    {k.lower(): v for k, v in request.headers.items()},
                    body,
                )
            )
        problem = self._auth_problem(request)
        if problem is not None:
            return problem
        injection = self._take_injection(request.method, path)
        if injection is not None:
            if injection.delay_s and not await wait_or_disconnect(request, injection.delay_s):
                return Response(status_code=499)
            if injection.text is not None:
                return PlainTextResponse(injection.text, status_code=injection.status, headers=injection.headers)
            if injection.status < 400:
                return JSONResponse(injection.body or {}, status_code=injection.status, headers=injection.headers)
            return JSONResponse(
                injection.body or {"code": "Injected", "message": f"injected HTTP {injection.status}"},
                status_code=injection.status,
                headers=injection.headers,
            )
        try:
            with self._data_lock:
                return self._route(request.method, path, dict(request.query_params), body)
        except ConditionError as e:
            return _error(400, "InvalidConditions", str(e))

    def _take_injection(self, method: str, path: str) -> Injection | None:
        with self._data_lock:
            for injection in self._injections:
                if injection.matches(method, path):
                    injection.times -= 1
                    if injection.times <= 0:
                        self._injections.remove(injection)
                    return injection
        return None

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> Response:
        parts = path.strip("/").split("/")
        match method, parts:
            case "GET", ["system", "info"]:
                return JSONResponse({"version": "v2022.1.88888", "isCloud": True, "serverTimeZone": "UTC"})
            case "GET", ["service", "tickets"]:
                return self._listing(list(self.tickets.values()), query)
            case "GET", ["service", "tickets", ticket_id] if ticket_id.isdigit():
                ticket = self.tickets.get(int(ticket_id))
                if ticket is None:
                    return _error(404, "NotFound", f"Ticket {ticket_id} not found")
                return JSONResponse(ticket)
            case "GET", ["service", "tickets", ticket_id, "notes"] if ticket_id.isdigit():
                if int(ticket_id) not in self.tickets:
                    return _error(404, "NotFound", f"Ticket {ticket_id} not found")
                return self._listing(self.notes[int(ticket_id)], query)
            case "POST", ["service", "tickets", ticket_id, "notes"] if ticket_id.isdigit():
                return self._post_note(int(ticket_id), body)
            case "GET", ["company", "companies", company_id] if company_id.isdigit():
                company = self.companies.get(int(company_id))
                return JSONResponse(company) if company else _error(404, "NotFound", "Company not found")
            case "GET", ["company", "contacts", contact_id] if contact_id.isdigit():
                contact = self.contacts.get(int(contact_id))
                return JSONResponse(contact) if contact else _error(404, "NotFound", "Contact not found")
            case "GET", ["system", "members"]:
                return self._listing(self.members, query)
            case "POST", ["time", "entries"]:
                return self._post_time_entry(body)
        return _error(404, "NotFound", f"no route {method} {path}")

    def _listing(self, records: list[Record], query: dict[str, str]) -> Response:
        rows = [copy.deepcopy(r) for r in records]
        if query.get("conditions"):
            predicate = parse_conditions(query["conditions"])
            rows = [r for r in rows if predicate(r)]
        if query.get("orderBy"):
            name, _, direction = query["orderBy"].partition(" ")
            rows.sort(key=lambda r: (_field(r, name) is None, _field(r, name)), reverse=direction.lower() == "desc")
        page_size = min(int(query.get("pageSize", "25")), 1000)
        page = int(query.get("page", "1"))
        rows = rows[(page - 1) * page_size : page * page_size]
        if query.get("fields"):
            wanted = query["fields"].split(",")
            rows = [{k: v for k, v in r.items() if k in wanted} for r in rows]
        return JSONResponse(rows)

    def _post_note(self, ticket_id: int, body: Any) -> Response:
        if ticket_id not in self.tickets:
            return _error(404, "NotFound", f"Ticket {ticket_id} not found")
        if not isinstance(body, dict) or not body.get("text"):
            return _error(400, "InvalidObject", "text is required")
        flags = ("detailDescriptionFlag", "internalAnalysisFlag", "resolutionFlag")
        if not any(body.get(f) for f in flags):
            return _error(
                400, "InvalidObject", "one of detailDescriptionFlag, internalAnalysisFlag, resolutionFlag must be true"
            )
        note = self.add_note(ticket_id, {k: body[k] for k in ("text", *flags) if k in body})
        return JSONResponse(note, status_code=201)

    def _post_time_entry(self, body: Any) -> Response:
        if not isinstance(body, dict):
            return _error(400, "InvalidObject", "a JSON object is required")
        if body.get("chargeToType") != "ServiceTicket" or body.get("chargeToId") not in self.tickets:
            return _error(400, "InvalidObject", "chargeToId must be an existing service ticket")
        identifier = (body.get("member") or {}).get("identifier")
        if not any(m["identifier"] == identifier and not m["inactiveFlag"] for m in self.members):
            return _error(400, "InvalidObject", f"member {identifier!r} not found")
        try:
            datetime.strptime(str(body.get("timeStart")), "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            return _error(400, "InvalidObject", "timeStart must look like 2026-03-01T09:00:00Z")
        entry = {"id": self.new_id(), **body}
        self.time_entries.append(entry)
        return JSONResponse(entry, status_code=201)


@pytest.fixture(scope="session")
def connectwise_server_session() -> Iterator[FakeConnectWise]:
    with FakeConnectWise() as server:
        yield server


@pytest.fixture
def connectwise_server(connectwise_server_session: FakeConnectWise) -> FakeConnectWise:
    """The fake ConnectWise with fresh seed data, no injections and an empty request log."""
    connectwise_server_session.reset()
    return connectwise_server_session
