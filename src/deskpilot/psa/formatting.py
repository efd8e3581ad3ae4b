"""Pure rendering of PSA ticket context into prompt text and intake summaries (no I/O)."""

from __future__ import annotations

from datetime import UTC

from deskpilot.psa.base import TicketContext, TicketNote

PROMPT_HEADING = "## PSA TICKET CONTEXT"
MAX_DESCRIPTION_CHARS = 2000
MAX_NOTE_CHARS = 600


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _note_line(note: TicketNote, limit: int) -> str:
    when = "undated"
    if note.created is not None:
        created = note.created if note.created.tzinfo else note.created.replace(tzinfo=UTC)
        when = created.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    labels = [label for flag, label in ((note.internal, "internal"), (note.resolution, "resolution")) if flag]
    who = note.author or "unknown author"
    head = f"- {when}, {who}" + (f" ({', '.join(labels)})" if labels else "")
    body = " ".join(_clip(note.text, limit).split())
    return f"{head}: {body}"


def format_ticket_context_for_prompt(
    context: TicketContext,
    *,
    heading: str = PROMPT_HEADING,
    max_description_chars: int = MAX_DESCRIPTION_CHARS,
    max_note_chars: int = MAX_NOTE_CHARS,
) -> str:
    """The ticket as a prompt section: facts first, then the description, then recent notes oldest first.

    Long texts are clipped so that a chatty ticket cannot crowd the rest of the prompt out.
    """
    ticket = context.ticket
    lines = [heading, f"Ticket #{ticket.id}: {ticket.summary.strip()}"]
    facts = [
        f"{label}: {value}"
        for label, value in (
            ("Status", ticket.status), ("Priority", ticket.priority), ("Board", ticket.board), ("Type", ticket.type)
        )
        if value
    ]
    if ticket.closed:
        facts.append("Closed: yes")
    if facts:
        lines.append(" | ".join(facts))
    if context.company is not None:
        identifier = f" ({context.company.identifier})" if context.company.identifier else ""
        lines.append(f"Company: {context.company.name}{identifier}")
    if context.contact is not None:
        reach = ", ".join(v for v in (context.contact.email, context.contact.phone) if v)
        lines.append(f"Contact: {context.contact.name or 'unnamed'}" + (f" ({reach})" if reach else ""))
    if ticket.description and ticket.description.strip():
        lines += ["", "Description:", _clip(ticket.description, max_description_chars)]
    notes = [n for n in context.notes if n.text.strip()]
    if notes:
        lines += ["", f"Recent notes ({len(notes)}, oldest first):"]
        lines += [_note_line(n, max_note_chars) for n in notes]
    return "\n".join(lines)


def intake_ticket_data(context: TicketContext) -> dict[str, str | None]:
    """The short ticket summary stored on a session's intake content (FP-014): summary, company, priority."""
    return {
        "summary": context.ticket.summary,
        "company": context.company.name if context.company else None,
        "priority": context.ticket.priority,
    }
