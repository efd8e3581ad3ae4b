"""The generic webhook provider: signed deliveries to a loopback receiver, and signature verification."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

from deskpilot.psa.errors import PSAAuthError, PSAError, PSANotSupported, PSAUnavailable
from deskpilot.psa.webhook import (
    SIGNATURE_HEADER,
    WebhookCredentials,
    WebhookProvider,
    WebhookSettings,
    sign,
    verify_signature,
)
from tests.psa.conftest import WEBHOOK_SECRET, WebhookReceiver

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z


def provider(receiver: WebhookReceiver, http: httpx.AsyncClient, **settings: str) -> WebhookProvider:
    return WebhookProvider(
        WebhookSettings.model_validate({"url": f"{receiver.url}/hooks/psa", **settings}),
        WebhookCredentials.model_validate({"secret": WEBHOOK_SECRET}),
        http_client=http,
    )


# --- signatures (pure) ----------------------------------------------------------------------


def test_signature_format_matches_the_documented_recipe() -> None:
    body = b'{"event":"note"}'
    header = sign("s3cret-s3cret-s3cret", body, NOW)
    expected = hmac.new(b"s3cret-s3cret-s3cret", f"{NOW}.".encode() + body, hashlib.sha256).hexdigest()
    assert header == f"t={NOW},v1={expected}"
    assert verify_signature("s3cret-s3cret-s3cret", header, body, now=NOW + 10)


def test_tampered_body_wrong_secret_and_garbage_fail() -> None:
    body = b'{"event":"note","text":"hello"}'
    header = sign("secret-one-secret-one", body, NOW)
    assert not verify_signature("secret-one-secret-one", header, body.replace(b"hello", b"HELLO"), now=NOW)
    assert not verify_signature("secret-two-secret-two", header, body, now=NOW)
    for bad in (None, "", "t=abc,v1=00", f"t={NOW}", "v1=00", "garbage"):
        assert not verify_signature("secret-one-secret-one", bad, body, now=NOW)


def test_stale_and_future_timestamps_fail() -> None:
    body = b"{}"
    header = sign("secret-one-secret-one", body, NOW)
    assert verify_signature("secret-one-secret-one", header, body, now=NOW + 300)
    assert not verify_signature("secret-one-secret-one", header, body, now=NOW + 301)
    assert not verify_signature("secret-one-secret-one", header, body, now=NOW - 301)
    assert verify_signature("secret-one-secret-one", header, body, tolerance_s=1000, now=NOW + 900)


def test_any_of_several_v1_values_may_match_during_rotation() -> None:
    body = b"{}"
    new = sign("new-secret-new-secret", body, NOW).split(",")[1]
    old = sign("old-secret-old-secret", body, NOW).split(",")[1]
    header = f"t={NOW},{old},{new}"
    assert verify_signature("new-secret-new-secret", header, body, now=NOW)
    assert verify_signature("old-secret-old-secret", header, body, now=NOW)


# --- deliveries -----------------------------------------------------------------------------


async def test_note_delivery_is_signed_json(webhook_receiver: WebhookReceiver, http: httpx.AsyncClient) -> None:
    result = await provider(webhook_receiver, http).push_note(
        "T-9", "Fixed the VPN.", internal=False, resolution=True, detail=True
    )
    assert result.external_id == "ext-1"
    delivery = webhook_receiver.deliveries[0]
    assert (delivery.method, delivery.path, delivery.event, delivery.signature_ok) == (
        "POST", "/hooks/psa", "note", True
    )
    assert delivery.body == {"event": "note", "ticket_id": "T-9", "text": "Fixed the VPN.", "internal": False,
                             "resolution": True, "detail": True}


async def test_time_entry_delivery(webhook_receiver: WebhookReceiver, http: httpx.AsyncClient) -> None:
    webhook_receiver.answer = "ok"  # a plain-text acknowledgement is fine for pushes
    started = datetime(2026, 3, 4, 10, 30, tzinfo=UTC)
    result = await provider(webhook_receiver, http).add_time_entry("T-9", "jsmith", Decimal("0.25"), "VPN", started)
    assert result.external_id is None
    delivery = webhook_receiver.deliveries[0]
    assert delivery.event == "time_entry"
    assert delivery.body == {"event": "time_entry", "ticket_id": "T-9", "member_identifier": "jsmith", "hours": 0.25,
                             "notes": "VPN", "started_at": "2026-03-04T10:30:00+00:00"}


async def test_ping_and_errors(webhook_receiver: WebhookReceiver, http: httpx.AsyncClient) -> None:
    hook = provider(webhook_receiver, http)
    assert "signed ping" in (await hook.test()).detail
    assert webhook_receiver.deliveries[0].event == "ping"
    webhook_receiver.secret = "the-receiver-has-another-secret"
    with pytest.raises(PSAAuthError):
        await hook.test()
    webhook_receiver.secret = WEBHOOK_SECRET
    webhook_receiver.status = 500
    with pytest.raises(PSAUnavailable, match="HTTP 500"):
        await hook.push_note("1", "x", internal=True, resolution=False, detail=False)


async def test_context_and_search_need_urls(webhook_receiver: WebhookReceiver, http: httpx.AsyncClient) -> None:
    hook = provider(webhook_receiver, http)
    with pytest.raises(PSANotSupported, match="not supported by the webhook provider") as caught:
        await hook.get_ticket_context("1")
    assert isinstance(caught.value, NotImplementedError)
    with pytest.raises(PSANotSupported):
        await hook.search_tickets("printer")
    with pytest.raises(NotImplementedError, match="WebhookProvider"):
        await hook.list_members()


async def test_context_url_with_template(webhook_receiver: WebhookReceiver, http: httpx.AsyncClient) -> None:
    webhook_receiver.answer = {
        "ticket": {"id": "T 9", "summary": "VPN down"},
        "company": {"id": "c1", "name": "Acme"},
        "notes": [{"text": "first", "internal": True}],
    }
    hook = provider(webhook_receiver, http, context_url=f"{webhook_receiver.url}/tickets/{{ticket_id}}")
    context = await hook.get_ticket_context("T 9")
    assert context.ticket.summary == "VPN down"
    assert context.notes[0].internal
    delivery = webhook_receiver.deliveries[0]
    assert (delivery.method, delivery.path, delivery.event, delivery.signature_ok) == (
        "GET", "/tickets/T 9", "ticket_context", True
    )


async def test_context_url_without_template_and_search(
    webhook_receiver: WebhookReceiver, http: httpx.AsyncClient
) -> None:
    hook = provider(
        webhook_receiver, http, context_url=f"{webhook_receiver.url}/context", search_url=f"{webhook_receiver.url}/s"
    )
    webhook_receiver.answer = {"ticket": {"summary": "missing id"}}
    with pytest.raises(PSAError, match="does not validate"):
        await hook.get_ticket_context("42")
    assert webhook_receiver.deliveries[0].query == {"ticket_id": "42"}
    webhook_receiver.answer = [{"id": str(i), "summary": f"ticket {i}"} for i in range(5)]
    found = await hook.search_tickets("printer", company="ACME", limit=3)
    assert [t.id for t in found] == ["0", "1", "2"]
    assert webhook_receiver.deliveries[1].query == {"q": "printer", "open_only": "true", "limit": "3",
                                                     "company": "ACME"}
    webhook_receiver.answer = {"not": "a list"}
    with pytest.raises(PSAError, match="do not validate"):
        await hook.search_tickets("printer")
    webhook_receiver.answer = "not json"
    with pytest.raises(PSAError, match="other than JSON"):
        await hook.search_tickets("printer")


async def test_receiver_rejects_a_stale_delivery(webhook_receiver: WebhookReceiver, http: httpx.AsyncClient) -> None:
    stale = WebhookProvider(
        WebhookSettings(url=webhook_receiver.url),
        WebhookCredentials.model_validate({"secret": WEBHOOK_SECRET}),
        http_client=http,
        clock=lambda: time.time() - 600,
    )
    with pytest.raises(PSAAuthError):
        await stale.push_note("1", "x", internal=True, resolution=False, detail=False)
    assert webhook_receiver.deliveries[0].signature_ok is False


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="http"):
        WebhookSettings(url="ftp://example.com/hook")
    with pytest.raises(ValueError, match="secret"):
        WebhookCredentials.model_validate({"secret": "short"})
    assert SIGNATURE_HEADER == "X-Deskpilot-Signature"
