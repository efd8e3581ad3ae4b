"""Ticket context rendered for prompts and intake (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from deskpilot.psa.base import CompanyInfo, ContactInfo, TicketContext, TicketInfo, TicketNote
from deskpilot.psa.formatting import format_ticket_context_for_prompt, intake_ticket_data


def context(**overrides: object) -> TicketContext:
    values: dict[str, object] = {
        "ticket": TicketInfo(id="101", summary="Printer offline ", description="HP-2F offline since 8am.",
                             status="New", priority="Priority 2 - High", board="Service Desk", type="Hardware"),
        "company": CompanyInfo(id="19", name="Acme Corp", identifier="ACME"),
        "contact": ContactInfo(name="Jane Doe", email="jane@acme.example", phone="555-0101"),
        "notes": [
            TicketNote(text="Reported by phone.", author="Jane Doe", created=datetime(2026, 3, 1, 8, tzinfo=UTC)),
            TicketNote(text="Switch port\nis up.", author="John Smith", internal=True,
                       created=datetime(2026, 3, 1, 10, tzinfo=timezone(timedelta(hours=2)))),
            TicketNote(text="   "),
        ],
    }
    values.update(overrides)
    return TicketContext.model_validate(values)


def test_full_context() -> None:
    assert format_ticket_context_for_prompt(context()) == "\n".join([
        "## PSA TICKET CONTEXT",
        "Ticket #101: Printer offline",
        "Status: New | Priority: Priority 2 - High | Board: Service Desk | Type: Hardware",
        "Company: Acme Corp (ACME)",
        "Contact: Jane Doe (jane@acme.example, 555-0101)",
        "",
        "Description:",
        "HP-2F offline since 8am.",
        "",
        "Recent notes (2, oldest first):",
        "- 2026-03-01 08:00 UTC, Jane Doe: Reported by phone.",
        "- 2026-03-01 08:00 UTC, John Smith (internal): Switch port is up.",
    ])


def test_minimal_context_and_clipping() -> None:
    minimal = TicketContext(ticket=TicketInfo(id="7", summary="VPN", closed=True),
                            notes=[TicketNote(text="x" * 50, resolution=True, created=datetime(2026, 3, 1))])
    text = format_ticket_context_for_prompt(minimal, heading="## PSA TICKET CONTEXT (linked mid-session)",
                                            max_note_chars=10)
    assert text.splitlines() == [
        "## PSA TICKET CONTEXT (linked mid-session)",
        "Ticket #7: VPN",
        "Closed: yes",
        "",
        "Recent notes (1, oldest first):",
        "- 2026-03-01 00:00 UTC, unknown author (resolution): xxxxxxxxx…",
    ]
    long = format_ticket_context_for_prompt(context(ticket=TicketInfo(id="1", summary="s", description="d" * 5000)))
    assert "d" * 2000 not in long
    assert "d" * 1999 in long
    undated = format_ticket_context_for_prompt(context(notes=[TicketNote(text="n")]))
    assert undated.endswith("- undated, unknown author: n")


def test_intake_ticket_data() -> None:
    assert intake_ticket_data(context()) == {"summary": "Printer offline ", "company": "Acme Corp",
                                             "priority": "Priority 2 - High"}
    assert intake_ticket_data(context(company=None))["company"] is None


def test_context_round_trips_as_json() -> None:
    original = context()
    assert TicketContext.model_validate(original.model_dump(mode="json")) == original
