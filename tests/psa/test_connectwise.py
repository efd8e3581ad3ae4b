"""The ConnectWise provider against the loopback fake: headers, shapes, conditions and error translation."""

from __future__ import annotations

import base64
import socket
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

from deskpilot.errors import ValidationFailed
from deskpilot.psa.connectwise import (
    ConnectWiseCredentials,
    ConnectWiseProvider,
    ConnectWiseSettings,
    search_conditions,
)
from deskpilot.psa.errors import (
    PSAAuthError,
    PSAError,
    PSANotFound,
    PSARateLimited,
    PSARejected,
    PSATimeout,
    PSAUnavailable,
)
from tests.fakes.connectwise_server import API_VERSION, CLIENT_ID, PRIVATE_KEY, FakeConnectWise, parse_conditions
from tests.psa.conftest import cw_provider


async def test_every_request_carries_basic_auth_client_id_and_versioned_accept(
    cw: ConnectWiseProvider, connectwise_server: FakeConnectWise
) -> None:
    await cw.get_ticket_context("101")
    expected = "Basic " + base64.b64encode(f"deskpilot_test+PubKeyDeskpilotAB12:{PRIVATE_KEY}".encode()).decode()
    paths = {c.path for c in connectwise_server.calls}
    assert paths == {"/service/tickets/101", "/service/tickets/101/notes", "/company/companies/19",
                     "/company/contacts/31"}
    for call in connectwise_server.calls:
        assert call.headers["authorization"] == expected
        assert call.headers["clientid"] == CLIENT_ID
        assert call.headers["accept"] == f"application/vnd.connectwise.com+json; version={API_VERSION}"
        assert call.headers["content-type"] == "application/json"


async def test_ticket_context_shape(cw: ConnectWiseProvider, connectwise_server: FakeConnectWise) -> None:
    context = await cw.get_ticket_context("#101")
    ticket = context.ticket
    assert (ticket.id, ticket.summary, ticket.status, ticket.priority, ticket.board, ticket.type) == (
        "101", "Printer offline on 2nd floor", "New", "Priority 3 - Normal", "Service Desk", "Hardware"
    )
    assert ticket.description == "Printer HP-2F shows offline for everyone since this morning."
    assert context.company is not None
    assert (context.company.id, context.company.name, context.company.identifier) == ("19", "Acme Corp", "ACME")
    # The contact record wins over the stale copy on the ticket, and the default email is chosen.
    assert context.contact is not None
    assert (context.contact.name, context.contact.email, context.contact.phone) == (
        "Jane Doe", "jane@acme.example", "555-0101"
    )
    assert next(n.text for n in context.notes).startswith("Printer HP-2F")
    first, second = context.notes
    assert (first.author, first.internal) == ("Jane Doe", False)
    assert (second.author, second.internal) == ("John Smith", True)
    assert first.created == datetime(2026, 3, 1, 8, tzinfo=UTC)
    notes_call = connectwise_server.calls_to("GET", "/service/tickets/101/notes")[0]
    assert notes_call.query == {"orderBy": "id desc", "pageSize": "10"}


async def test_ticket_without_contact_or_company_record(
    cw: ConnectWiseProvider, connectwise_server: FakeConnectWise
) -> None:
    del connectwise_server.companies[20]
    context = await cw.get_ticket_context("104")
    assert context.contact is None
    assert context.company is not None
    assert context.company.name == "Globex Inc"
    assert context.ticket.description is None
    assert context.notes == []


async def test_description_of_a_long_ticket_comes_from_its_first_detail_note(
    cw: ConnectWiseProvider, connectwise_server: FakeConnectWise
) -> None:
    for i in range(12):
        connectwise_server.add_note(101, {"text": f"update {i}", "internalAnalysisFlag": True})
    context = await cw.get_ticket_context("101")
    assert len(context.notes) == 10
    assert context.notes[-1].text == "update 11"
    assert context.ticket.description == "Printer HP-2F shows offline for everyone since this morning."
    lookups = connectwise_server.calls_to("GET", "/service/tickets/101/notes")
    assert lookups[1].query["conditions"] == "detailDescriptionFlag=true"
    assert lookups[1].query["orderBy"] == "id asc"


async def test_search_escapes_quotes_in_conditions(
    cw: ConnectWiseProvider, connectwise_server: FakeConnectWise
) -> None:
    found = await cw.search_tickets('error "809"')
    assert [t.id for t in found] == ["102"]
    call = connectwise_server.calls_to("GET", "/service/tickets")[0]
    assert call.query["conditions"] == 'summary contains "error \\"809\\"" and closedFlag=false'
    assert call.query["orderBy"] == "id desc"
    assert call.query["pageSize"] == "20"


async def test_search_open_only_company_and_number(cw: ConnectWiseProvider) -> None:
    assert [t.id for t in await cw.search_tickets("printer")] == ["101"]
    both = await cw.search_tickets("PRINTER", open_only=False)
    assert [t.id for t in both] == ["103", "101"]
    assert both[0].closed
    assert both[0].company_identifier == "GLOBEX"
    assert [t.id for t in await cw.search_tickets("printer", company="GLOBEX", open_only=False)] == ["103"]
    assert [t.id for t in await cw.search_tickets("", company="19")] == ["102", "101"]
    by_number = await cw.search_tickets("#104")
    assert [(t.id, t.summary, t.status) for t in by_number] == [("104", "Email delivery delays", "New")]
    assert len(await cw.search_tickets("", open_only=False, limit=2)) == 2


def test_search_conditions_are_parsed_back_by_the_fake() -> None:
    tricky = 'back\\slash "quoted" and or (paren)'
    conditions = search_conditions(tricky, company='O"Brien', open_only=True)
    assert conditions == (
        'summary contains "back\\\\slash \\"quoted\\" and or (paren)" and company/identifier="O\\"Brien" '
        "and closedFlag=false"
    )
    predicate = parse_conditions(conditions)
    record = {"summary": f"x {tricky} y", "company": {"identifier": 'O"Brien'}, "closedFlag": False}
    assert predicate(record)
    assert not predicate({**record, "closedFlag": True})
    assert search_conditions("", company=None, open_only=False) == ""
    assert search_conditions(" 42 ", company=None, open_only=False) == '(id=42 or summary contains "42")'


async def test_push_note_sends_the_flags(cw: ConnectWiseProvider, connectwise_server: FakeConnectWise) -> None:
    result = await cw.push_note("101", "Replaced the toner.", internal=False, resolution=True, detail=True)
    call = connectwise_server.calls_to("POST", "/service/tickets/101/notes")[0]
    assert call.body == {"text": "Replaced the toner.", "detailDescriptionFlag": True, "internalAnalysisFlag": False,
                         "resolutionFlag": True}
    stored = connectwise_server.notes[101][-1]
    assert result.external_id == str(stored["id"])
    await cw.push_note("101", "Internal only.", internal=True, resolution=False, detail=False)
    assert connectwise_server.notes[101][-1]["internalAnalysisFlag"] is True


async def test_time_entry_body(cw: ConnectWiseProvider, connectwise_server: FakeConnectWise) -> None:
    started = datetime(2026, 3, 4, 10, 30, 15, 999, tzinfo=UTC)
    result = await cw.add_time_entry("101", "jsmith", Decimal("0.25"), "Diagnosed the printer", started)
    call = connectwise_server.calls_to("POST", "/time/entries")[0]
    assert call.body == {
        "chargeToId": 101, "chargeToType": "ServiceTicket", "member": {"identifier": "jsmith"},
        "timeStart": "2026-03-04T10:30:15Z", "actualHours": 0.25, "notes": "Diagnosed the printer",
    }
    assert result.external_id == str(connectwise_server.time_entries[0]["id"])


async def test_time_entry_for_unknown_member_is_rejected(cw: ConnectWiseProvider) -> None:
    with pytest.raises(PSARejected, match="member 'nobody' not found") as caught:
        await cw.add_time_entry("101", "nobody", Decimal("1"), "x", datetime.now(UTC))
    assert caught.value.status_code == 400


async def test_list_members_only_active(cw: ConnectWiseProvider, connectwise_server: FakeConnectWise) -> None:
    members = await cw.list_members()
    assert [(m.identifier, m.name, m.email) for m in members] == [
        ("jsmith", "John Smith", "Engineer@Acme-IT.example"), ("aowner", "Ada Owner", "owner@acme-it.example"),
    ]
    call = connectwise_server.calls_to("GET", "/system/members")[0]
    assert call.query["conditions"] == "inactiveFlag=false"
    assert call.query["fields"] == "identifier,firstName,lastName,primaryEmail"


async def test_connection_check(cw: ConnectWiseProvider) -> None:
    check = await cw.test()
    assert "v2022.1" in check.detail


async def test_wrong_private_key_is_an_auth_error_without_the_key(
    connectwise_server: FakeConnectWise, http: httpx.AsyncClient
) -> None:
    provider = cw_provider(connectwise_server, http, private_key="wrong-private-key-123")
    with pytest.raises(PSAAuthError) as caught:
        await provider.test()
    assert caught.value.status_code == 401
    assert "wrong-private-key" not in str(caught.value)
    assert PRIVATE_KEY not in repr(caught.value.extra)


async def test_unknown_client_id_and_wrong_version(
    connectwise_server: FakeConnectWise, http: httpx.AsyncClient
) -> None:
    with pytest.raises(PSAAuthError):
        await cw_provider(connectwise_server, http, client_id="someone-else").test()
    with pytest.raises(PSARejected, match="HTTP 400"):
        await cw_provider(connectwise_server, http, api_version="2019.1").test()


@pytest.mark.parametrize(
    ("status", "error"),
    [(403, PSAAuthError), (404, PSANotFound), (429, PSARateLimited), (500, PSAUnavailable), (503, PSAUnavailable),
     (422, PSARejected)],
)
async def test_statuses_are_translated(
    cw: ConnectWiseProvider, connectwise_server: FakeConnectWise, status: int, error: type[PSAError]
) -> None:
    connectwise_server.inject(status, path="/service/tickets/101", headers={"Retry-After": "7"})
    with pytest.raises(error) as caught:
        await cw.get_ticket_context("101")
    assert type(caught.value) is error
    assert caught.value.status_code == status
    assert f"HTTP {status}" in caught.value.detail
    assert caught.value.__cause__ is None
    if status == 429:
        assert isinstance(caught.value, PSARateLimited)
        assert caught.value.retry_after_s == 7


async def test_unknown_ticket_is_not_found(cw: ConnectWiseProvider) -> None:
    with pytest.raises(PSANotFound, match="Ticket 999 not found"):
        await cw.get_ticket_context("999")
    with pytest.raises(ValidationFailed):
        await cw.get_ticket_context("abc")


async def test_timeout(connectwise_server: FakeConnectWise, http: httpx.AsyncClient) -> None:
    connectwise_server.inject(200, path="/system/info", delay_s=2)
    provider = cw_provider(connectwise_server, http, timeout_s=0.2)
    with pytest.raises(PSATimeout) as caught:
        await provider.test()
    assert isinstance(caught.value.__cause__, httpx.TimeoutException)
    assert caught.value.status == 504


async def test_unreachable_server(connectwise_server: FakeConnectWise, http: httpx.AsyncClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = cw_provider(connectwise_server, http, site=f"http://127.0.0.1:{port}")
    with pytest.raises(PSAUnavailable, match="cannot reach ConnectWise") as caught:
        await provider.test()
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_a_site_httpx_cannot_send_to_is_refused_and_a_stored_one_fails_as_a_psa_error(
    connectwise_server: FakeConnectWise, http: httpx.AsyncClient
) -> None:
    base = {"company_id": "acme", "client_id": "x"}
    with pytest.raises(ValueError, match="site is not a usable host name"):
        ConnectWiseSettings(site="xn--", **base)
    # A connection saved before the check: its calls fail as an unreachable PSA, not as a server error.
    stored = ConnectWiseSettings.model_construct(site="xn--", company_id="acme", client_id="x",
                                                 api_version=API_VERSION)
    credentials = ConnectWiseCredentials.model_validate(connectwise_server.credentials())
    provider = ConnectWiseProvider(stored, credentials, http_client=http)
    with pytest.raises(PSAUnavailable, match="URL is not valid") as caught:
        await provider.test()
    assert isinstance(caught.value.__cause__, httpx.InvalidURL | UnicodeError)


async def test_odd_answers(cw: ConnectWiseProvider, connectwise_server: FakeConnectWise) -> None:
    connectwise_server.inject(200, path="/system/info", body=None)
    assert (await cw.test()).detail.startswith("ConnectWise unknown version")
    connectwise_server.inject(200, path="/system/info", text="<html>maintenance</html>")
    with pytest.raises(PSAError, match="something other than JSON"):
        await cw.test()
    connectwise_server.inject(200, path="/service/tickets", body={"not": "a list"})
    with pytest.raises(PSAError, match="other than a list"):
        await cw.search_tickets("x")
    connectwise_server.inject(502, path="/system/info", text="Bad Gateway")
    with pytest.raises(PSAUnavailable, match=r"HTTP 502$"):
        await cw.test()


async def test_provider_closes_only_its_own_client(
    connectwise_server: FakeConnectWise, http: httpx.AsyncClient
) -> None:
    settings = ConnectWiseSettings.model_validate(connectwise_server.settings())
    credentials = ConnectWiseCredentials.model_validate(connectwise_server.credentials())
    async with ConnectWiseProvider(settings, credentials) as own:
        await own.test()
    assert own._http.is_closed
    async with ConnectWiseProvider(settings, credentials, http_client=http) as shared:
        await shared.test()
    assert not http.is_closed


def test_site_settings() -> None:
    base = {"company_id": "acme", "client_id": "x"}
    assert ConnectWiseSettings(site="na.myconnectwise.net/", **base).base_url == (
        "https://na.myconnectwise.net/v4_6_release/apis/3.0"
    )
    assert ConnectWiseSettings(site="http://127.0.0.1:8080", **base).base_url == (
        "http://127.0.0.1:8080/v4_6_release/apis/3.0"
    )
    for bad in ("ftp://cw.example", "https://cw.example/v4_6_release", "https://"):
        with pytest.raises(ValueError, match="site"):
            ConnectWiseSettings(site=bad, **base)
    with pytest.raises(ValueError, match="company_id"):
        ConnectWiseSettings(site="cw.example", company_id="a+b", client_id="x")
