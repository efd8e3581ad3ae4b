"""Session communications: status updates for four audiences and streamed four-section ticket notes."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Final, Literal, TypeAlias, assert_never

from deskpilot.llm import LLM, CallContext, Message, Purpose, Usage
from deskpilot.pilot.documentation import diagnostic_steps, elapsed, engineer_response, hours_display, outcome_word
from deskpilot.pilot.views import MessageView, SessionView, StepView

logger = logging.getLogger(__name__)

Audience: TypeAlias = Literal["ticket_notes", "client_update", "request_info", "email_draft"]
Length: TypeAlias = Literal["quick", "full"]
UpdateContext: TypeAlias = Literal["status", "resolution", "escalation"]

STATUS_UPDATE_MAX_TOKENS: Final = 1500
TICKET_NOTES_MAX_TOKENS: Final = 1500
TICKET_NOTES_MESSAGES: Final = 20
TICKET_NOTES_MESSAGE_CHARS: Final = 500
DEFAULT_SIGN_OFF: Final = "Your support team"
NO_STEPS: Final = "No diagnostic steps yet."
# Steps that are not diagnostic work the engineer did: the AI's own fix proposal, the escalation briefing
# (a recap of earlier steps) and earlier status updates.
SUMMARY_SKIPPED_TYPES: Final = frozenset({"resolution_suggestion", "briefing", "status_update"})
TICKET_NOTES_SECTIONS: Final = ("Problem Summary", "Steps Taken", "Resolution", "Next Steps")
SUBJECT_TYPE: Final = "pilot_session"

# Words a client update must not contain; the prompt lists them as examples of what to avoid.
CLIENT_JARGON: Final = (
    "DNS",
    "MX record",
    "transport rule",
    "registry",
    "GPO",
    "Group Policy",
    "connector",
    "DHCP",
    "VLAN",
    "firewall rule",
    "Active Directory",
    "PowerShell",
    "SMTP",
    "SSL/TLS certificate",
    "event log",
    "cache",
    "driver",
    "VPN tunnel",
)

_STATUS_WORDS: Mapping[str, str] = {
    "active": "in progress",
    "paused": "paused",
    "resolved": "resolved",
    "requesting_escalation": "escalated, waiting for another engineer",
    "abandoned": "closed without a resolution",
}


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def client_name(session: SessionView) -> str | None:
    """The client's name (FP-047): the PSA ticket's company, else the intake's client/company name.

    The ticket context is looked for on the session, then in the intake; the desk's own client record is the
    last resort.
    """
    for ticket in (session.ticket_data, session.intake.get("ticket_data")):
        if isinstance(ticket, Mapping):
            company = ticket.get("company")
            if isinstance(company, Mapping) and (name := _text(company.get("name"))):
                return name
    for key in ("client_name", "company_name"):
        if name := _text(session.intake.get(key)):
            return name
    return _text(session.client_name) or None


def sign_off(session: SessionView) -> str:
    """Who signs client messages: the engineer's name, else "Your support team"."""
    return _text(session.engineer_name) or DEFAULT_SIGN_OFF


def time_spent_hours(session: SessionView, now: datetime) -> str:
    """Time spent on the session in decimal hours, e.g. "0.25 hrs" (up to `resolved_at` once closed)."""
    return hours_display(elapsed(session, now))


def _status_words(status: str) -> str:
    return _STATUS_WORDS.get(status, status)


def _summarised(steps: Iterable[StepView]) -> list[StepView]:
    kept = (s for s in steps if s.content_type not in SUMMARY_SKIPPED_TYPES and s.text)
    return sorted(kept, key=lambda s: s.order)


def summarise_steps(steps: Iterable[StepView]) -> list[str]:
    """One line per diagnostic step for an update's context (FP-047), in session order.

    Resolution suggestions, briefings, status updates and steps without text are left out. A line reads
    "3. Check the spooler — Running [Succeeded]": the option's label (not its machine value) or the typed
    text, "(skipped)" for a skipped step, and the action's outcome in brackets.
    """
    lines = []
    for step in _summarised(steps):
        line = f"{step.order + 1}. {step.text}"
        response = engineer_response(step)
        if step.was_skipped:
            line += " (skipped)"
        elif response:
            line += f" — {response}"
        word = outcome_word(step)
        if word is not None:
            details = _text(step.action_details)
            line += f" [{word} — {details}]" if details else f" [{word}]"
        lines.append(line)
    return lines


def build_what_we_know(session: SessionView, steps: Iterable[StepView]) -> str:
    """The "What we know" block (FP-050); "" when nothing is known yet.

    With evidence items: "Confirmed:", "Ruled out:" and "Still investigating:" groups. Without: "Findings so
    far:" from the answered, non-skipped diagnostic steps (what was asked or done, and the answer/outcome).
    """
    if session.evidence_items:
        groups: dict[str, list[str]] = {"confirmed": [], "ruled_out": [], "pending": []}
        for item in session.evidence_items:
            if text := item.text.strip():
                groups[item.status].append(text)
        parts = []
        for title, key in (("Confirmed", "confirmed"), ("Ruled out", "ruled_out"), ("Still investigating", "pending")):
            if groups[key]:
                parts.append(f"{title}:\n" + "\n".join(f"  - {text}" for text in groups[key]))
        return "\n".join(parts)
    findings = []
    for step in _summarised(steps):
        if step.was_skipped:
            continue
        answer = [part for part in (engineer_response(step), outcome_word(step)) if part]
        if answer:
            findings.append(f"{step.text} — {'; '.join(answer)}")
    if not findings:
        return ""
    return "Findings so far:\n" + "\n".join(f"  - {finding}" for finding in findings)


# ---------------------------------------------------------------------------------------------------------
# Status updates (FP-047 .. FP-049)


def _context_label(context: UpdateContext, *, internal: bool) -> str:
    match context:
        case "status":
            return "progress update while the work is still going on"
        case "resolution":
            return "close-out summary now that the issue is fixed" if internal else "message that the issue is fixed"
        case "escalation":
            if internal:
                return "handoff note: the issue is being passed to another engineer"
            return "update that a specialist is joining to help"
        case unreachable:
            assert_never(unreachable)


def _client_guidance(context: UpdateContext) -> str:
    match context:
        case "status":
            return (
                "The work is still going on: say what has been done so far and what comes next. Give no "
                "timeline, no estimate and no promise of when it will be fixed."
            )
        case "resolution":
            return (
                "This is good news: the problem is fixed. Say in plain words what was wrong and what was done about it."
            )
        case "escalation":
            return (
                "A specialist is being brought in to help. Present it as a normal way to get the problem solved, "
                "never as a failure, and keep the tone reassuring."
            )
        case unreachable:
            assert_never(unreachable)


def _email_subject(context: UpdateContext) -> str:
    match context:
        case "status":
            return "Update: [short description of the issue]"
        case "resolution":
            return "Resolved: [short description of the issue]"
        case "escalation":
            return "Update: [short description of the issue] — Specialist Assistance"
        case unreachable:
            assert_never(unreachable)


def _length_rule(length: Length) -> str:
    match length:
        case "quick":
            return "Length: quick. One or two sentences in total, only what matters most."
        case "full":
            return "Length: full. A complete breakdown: what was checked, what was found, and what happens next."
        case unreachable:
            assert_never(unreachable)


_TIME_RULE = (
    "Time spent is given in decimal hours (for example 0.25 hrs). If you mention it, copy it in that form; "
    "never turn it into minutes or hours and minutes."
)
_NO_JARGON = (
    "Never use technical jargon. Terms such as "
    + ", ".join(f'"{term}"' for term in CLIENT_JARGON)
    + " and anything like them are banned; describe the effect the client noticed instead."
)
_NO_INTERNALS = "Never mention server names, IP addresses, internal tool names or ticket IDs."


def _greeting_rule(client: str | None) -> str:
    if client:
        return f'Address the client as "{client}".'
    return 'Open with a simple greeting such as "Hi,".'


def _rules(lines: Iterable[str]) -> str:
    return "\n".join(f"- {line}" for line in lines if line)


def build_status_update_prompt(
    audience: Audience,
    length: Length,
    context: UpdateContext,
    *,
    client_name: str | None,
    engineer_name: str,
) -> str:
    """The system prompt of a status update (FP-048).

    Args:
        audience: ticket_notes (internal, plain text), client_update, request_info or email_draft.
        length: quick (one or two sentences) or full (complete breakdown); request_info ignores it.
        context: status, resolution or escalation; request_info ignores it.
        client_name: How to address the client, if known.
        engineer_name: The sign-off of client-facing messages.
    """
    label = _context_label(context, internal=audience == "ticket_notes")
    match audience:
        case "ticket_notes":
            if length == "full":
                shape = (
                    'Structure: a short paragraph on the current status; then a line "What We Know:" followed by '
                    "the confirmed findings, the causes ruled out and the open questions, one line each; then a "
                    'line "Next Steps:" followed by what happens next.'
                )
            else:
                shape = "Give the current status and the single most important finding or next step."
            extra = {
                "status": "",
                "resolution": "This closes the ticket: state the root cause and exactly what fixed it.",
                "escalation": (
                    "This hands the ticket over: state what was tried, what failed, and why it is being "
                    "escalated, so the next engineer does not repeat the work."
                ),
            }[context]
            rules = _rules(
                [
                    "Technical, factual and concise. Do not soften anything.",
                    "No greetings, pleasantries or sign-off.",
                    "Plain text only: the PSA shows notes as raw text, so no markdown (no #, no **bold**, no "
                    "bullet symbols). Section labels are plain lines ending with a colon.",
                    shape,
                    extra,
                    _length_rule(length),
                    _TIME_RULE,
                ]
            )
            return (
                f"You write an internal PSA ticket note for other engineers: a {label}.\n\nRules:\n{rules}\n\n"
                "Reply with the note text only: no JSON, no code fences, no introduction."
            )
        case "client_update":
            rules = _rules(
                [
                    "Professional, calm and reassuring, in plain language a non-technical business owner understands.",
                    _NO_JARGON,
                    _NO_INTERNALS,
                    _greeting_rule(client_name),
                    f"Sign off with: {engineer_name}",
                    _client_guidance(context),
                    _length_rule(length),
                    _TIME_RULE,
                ]
            )
            return (
                f"You write a message to a client of an IT service provider: a {label}.\n\nRules:\n{rules}\n\n"
                "Reply with the message text only: no JSON, no code fences, no introduction."
            )
        case "request_info":
            rules = _rules(
                [
                    "Friendly, short and non-technical.",
                    "Open with one plain sentence saying what you are working on.",
                    "Then list the questions you need answered as a numbered list (1., 2., ...); each one clear "
                    "and answerable by someone who is not technical.",
                    _NO_JARGON,
                    _NO_INTERNALS,
                    _greeting_rule(client_name),
                    f"Sign off with: {engineer_name}",
                    "Keep it short: this is a targeted request for information, not a status update.",
                ]
            )
            return (
                "You write a message asking a client of an IT service provider for the information the engineer "
                f"needs to continue.\n\nRules:\n{rules}\n\n"
                "Reply with the message text only: no JSON, no code fences, no introduction."
            )
        case "email_draft":
            rules = _rules(
                [
                    f'The very first line is the subject, in the form "Subject: {_email_subject(context)}". When '
                    'the email mainly asks the client for information, use "Subject: Quick Question: [short '
                    'description of the issue]" instead.',
                    "After the subject: greeting, body, sign-off.",
                    "Professional, calm and reassuring, in plain language a non-technical reader understands.",
                    _NO_JARGON,
                    _NO_INTERNALS,
                    _greeting_rule(client_name),
                    f"End with a professional sign-off from: {engineer_name}",
                    _client_guidance(context),
                    _length_rule(length),
                    _TIME_RULE,
                ]
            )
            return (
                f"You write a complete email to a client of an IT service provider: a {label}.\n\nRules:\n{rules}"
                "\n\nReply with the email only (subject line and body): no JSON, no code fences, no introduction."
            )
        case unreachable:
            assert_never(unreachable)


def build_status_update_context(
    session: SessionView, steps: Sequence[StepView], *, context: UpdateContext, now: datetime
) -> str:
    """The user message of a status update (FP-049): the session's facts, "What we know" and the steps."""
    parts = [
        f"Session status: {_status_words(session.status)}",
        f"Time spent: {time_spent_hours(session, now)} (decimal hours)",
        f"Problem summary: {_text(session.problem_summary) or 'Not yet determined'}",
    ]
    if session.problem_domain:
        parts.append(f"Problem domain: {session.problem_domain}")
    if client := client_name(session):
        parts.append(f"Client: {client}")
    if session.ticket_id:
        parts.append(f"Ticket ID: {session.ticket_id}")
    if what_we_know := build_what_we_know(session, steps):
        parts.append(f"\nWhat we know:\n{what_we_know}")
    summary = summarise_steps(steps)
    parts.append("\nDiagnostic steps taken:\n" + ("\n".join(summary) if summary else NO_STEPS))
    if context == "resolution" and (resolution := _text(session.resolution_summary)):
        parts.append(f"\nResolution: {resolution}")
    if context == "escalation" and (reason := _text(session.escalation_reason)):
        parts.append(f"\nEscalation reason: {reason}")
    return "\n".join(parts)


_FENCE = re.compile(r"^\s*```[\w-]*[ \t]*\n(?P<body>.*?)\n?```\s*$", re.DOTALL)


def _strip_fences(text: str) -> str:
    # Models wrap answers in a code fence although told not to; the fence would show in a PSA note.
    match = _FENCE.match(text)
    return (match.group("body") if match else text).strip()


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A generated status update with what the caller stores and returns (FP-049).

    The caller stores it as a `status_update` step with `step_content()` and `confidence_at_step=1.0`,
    increments the session's step count and adds `usage` to the session's tokens.
    """

    content: str
    audience: Audience
    length: Length
    context: UpdateContext
    client_name: str | None
    time_spent_display: str
    steps_completed: int
    generated_at: datetime
    usage: Usage
    record_id: uuid.UUID

    def step_content(self) -> dict[str, str | None]:
        """The `content` of the status update step."""
        return {
            "audience": self.audience,
            "length": self.length,
            "context": self.context,
            "generated_content": self.content,
            "client_name": self.client_name,
        }


def _call_context(session: SessionView) -> CallContext:
    return CallContext(client_id=session.client_id, subject_type=SUBJECT_TYPE, subject_id=session.id)


async def generate_status_update(
    llm: LLM,
    session: SessionView,
    steps: Sequence[StepView],
    *,
    audience: Audience,
    length: Length,
    context: UpdateContext,
    account_id: uuid.UUID,
    now: datetime,
) -> StatusUpdate:
    """Write a status update for an audience (FP-047 .. FP-049) with the `quick` model.

    Args:
        llm: The LLM facade.
        session: The session.
        steps: All its steps (status updates and briefings among them are ignored).
        audience: ticket_notes, client_update, request_info or email_draft.
        length: quick or full.
        context: status, resolution or escalation.
        account_id: The account the call is made for.
        now: The current time (time spent, `generated_at`).

    Raises:
        deskpilot.llm.LLMNotConfigured, deskpilot.llm.ProviderError: as raised by the facade.
    """
    client = client_name(session)
    system = build_status_update_prompt(audience, length, context, client_name=client, engineer_name=sign_off(session))
    user = build_status_update_context(session, steps, context=context, now=now)
    result = await llm.text(
        Purpose.QUICK,
        [Message.system(system), Message.user(user)],
        account_id=account_id,
        context=_call_context(session),
        max_tokens=STATUS_UPDATE_MAX_TOKENS,
    )
    return StatusUpdate(
        content=_strip_fences(result.value),
        audience=audience,
        length=length,
        context=context,
        client_name=client,
        time_spent_display=time_spent_hours(session, now),
        steps_completed=len(summarise_steps(steps)),
        generated_at=now,
        usage=result.usage,
        record_id=result.record_id,
    )


# ---------------------------------------------------------------------------------------------------------
# Ticket notes (FP-051)

TICKET_NOTES_PROMPT: Final = """\
You write the internal notes an IT engineer files on a PSA ticket once a troubleshooting session ends.

Write exactly these four markdown sections, in this order, and nothing else:

## Problem Summary
What was reported and the first symptoms, in one to three sentences.

## Steps Taken
The checks made, commands run and findings, as a "-" bullet list.

## Resolution
What fixed the issue, specifically and technically. If it is not fixed, say so and give the current state.

## Next Steps
Follow-up items, things to monitor, preventive measures. Write "None" if there are none.

Rules:
- Technical, concise and factual; include the specific settings, commands and error messages you were given.
- Use only the four "## " headings and "-" bullets: no other headings, no bold, no tables.
- Write "None" under a section that has nothing to say; never leave one out.
- No greetings, sign-off or pleasantries; no introduction before the first heading; no code fences around the reply.
- Time spent is given in decimal hours (for example 0.25 hrs); if you mention it, keep that form.
"""


def _step_notes(steps: Iterable[StepView]) -> str:
    entries = []
    for step in diagnostic_steps(steps):
        response = engineer_response(step)
        if not step.text and response is None:
            continue
        label = "Suggested fix" if step.content_type == "resolution_suggestion" else f"Step {step.order + 1}"
        entry = f"{label}: {step.text or '(no text)'}"
        if response is not None:
            entry += f"\n  Engineer response: {response}"
        word = outcome_word(step)
        if word is not None:
            details = _text(step.action_details)
            entry += f"\n  Outcome: {word}" + (f" — {details}" if details else "")
        entries.append(entry)
    return "\n".join(entries)


def _message_notes(messages: Sequence[MessageView]) -> str:
    lines = []
    for message in messages[-TICKET_NOTES_MESSAGES:]:
        match message.role:
            case "user":
                speaker = "Engineer"
            case "assistant":
                speaker = "AI Assistant"
            case unreachable:
                assert_never(unreachable)
        lines.append(f"{speaker}: {message.content[:TICKET_NOTES_MESSAGE_CHARS]}")
    return "\n".join(lines)


def build_ticket_notes_context(
    session: SessionView, steps_or_messages: Sequence[StepView] | Sequence[MessageView], *, now: datetime
) -> str:
    """The user message of the ticket notes (FP-051).

    The source is the conversation when messages are given (chat sessions: the last 20, each cut to 500
    characters, labelled Engineer / AI Assistant), else the steps (guided sessions, with option labels and
    outcomes).
    """
    messages = [item for item in steps_or_messages if isinstance(item, MessageView)]
    steps = [item for item in steps_or_messages if isinstance(item, StepView)]
    parts = [
        f"Session status: {_status_words(session.status)}",
        f"Time spent: {time_spent_hours(session, now)} (decimal hours)",
        f"Problem summary: {_text(session.problem_summary) or 'Not specified'}",
    ]
    if session.problem_domain:
        parts.append(f"Problem domain: {session.problem_domain}")
    if resolution := _text(session.resolution_summary):
        parts.append(f"Resolution notes: {resolution}")
    if reason := _text(session.escalation_reason):
        parts.append(f"Escalation reason: {reason}")
    if what_we_know := build_what_we_know(session, steps):
        parts.append(f"\nWhat we know:\n{what_we_know}")
    if messages:
        parts.append(f"\nSession conversation:\n{_message_notes(messages)}")
    else:
        parts.append(f"\nSession steps:\n{_step_notes(steps) or 'No session data.'}")
    return "\n".join(parts)


class TicketNotesStream:
    """The ticket notes as text deltas; afterwards `notes` holds the repaired four-section text to store.

    Use as `async for delta in stream` (optionally inside `async with stream:` to close the provider's stream
    when leaving early). When the model cannot stream, the whole reply arrives as one delta.
    """

    __slots__ = ("_account_id", "_context", "_events", "_llm", "_messages", "_parts", "_result")

    def __init__(
        self, llm: LLM, messages: list[Message], *, account_id: uuid.UUID | None, context: CallContext
    ) -> None:
        self._llm = llm
        self._messages = messages
        self._account_id = account_id
        self._context = context
        self._parts: list[str] = []
        self._result: tuple[Usage, bool] | None = None
        self._events = self._generate()

    async def _generate(self) -> AsyncGenerator[str, None]:
        stream = self._llm.stream(
            Purpose.DRAFTER,
            self._messages,
            account_id=self._account_id,
            context=self._context,
            max_tokens=TICKET_NOTES_MAX_TOKENS,
        )
        delivered = False
        try:
            async with stream:
                async for delta in stream:
                    delivered = True
                    self._parts.append(delta)
                    yield delta
            self._result = (stream.result.usage, True)
            return
        except NotImplementedError:
            # Only a model without streaming raises this, and it does so before any delta.
            if delivered:
                raise
        logger.info("model for %r cannot stream; sending the ticket notes in one piece", Purpose.DRAFTER.value)
        result = await self._llm.text(
            Purpose.DRAFTER,
            self._messages,
            account_id=self._account_id,
            context=self._context,
            max_tokens=TICKET_NOTES_MAX_TOKENS,
        )
        self._result = (result.usage, False)
        if result.value:
            self._parts.append(result.value)
            yield result.value

    def __aiter__(self) -> TicketNotesStream:
        return self

    async def __anext__(self) -> str:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        await self._events.aclose()

    async def __aenter__(self) -> TicketNotesStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    @property
    def text(self) -> str:
        """The raw text received so far."""
        return "".join(self._parts)

    @property
    def finished(self) -> bool:
        """Whether the reply has been received in full."""
        return self._result is not None

    @property
    def notes(self) -> str:
        """The notes to store: the reply repaired to exactly the four sections; only once finished."""
        if self._result is None:
            raise RuntimeError("the ticket notes stream has not finished yet")
        return ensure_four_sections(self.text)

    @property
    def usage(self) -> Usage:
        """Tokens used, to add to the session; only once finished."""
        if self._result is None:
            raise RuntimeError("the ticket notes stream has not finished yet")
        return self._result[0]

    @property
    def streamed(self) -> bool:
        """Whether the model streamed (False when the non-streaming fallback answered); only once finished."""
        if self._result is None:
            raise RuntimeError("the ticket notes stream has not finished yet")
        return self._result[1]


def stream_ticket_notes(
    llm: LLM,
    session: SessionView,
    steps_or_messages: Sequence[StepView] | Sequence[MessageView],
    *,
    account_id: uuid.UUID | None,
    now: datetime | None = None,
) -> TicketNotesStream:
    """Stream the session's ticket notes (FP-051) from the `drafter` model.

    Nothing is sent until the first delta is awaited; routing and provider errors are raised then. After
    the stream ends, store `stream.notes` (always exactly the four sections) and add `stream.usage` to the
    session; a streaming client may replace what it showed with `stream.notes`.

    Args:
        llm: The LLM facade.
        session: The session.
        steps_or_messages: The steps (guided sessions) or the conversation messages (chat sessions).
        account_id: The account the call is made for.
        now: The current time for time spent; default the current UTC time.
    """
    user = build_ticket_notes_context(session, steps_or_messages, now=now or datetime.now(UTC))
    messages = [Message.system(TICKET_NOTES_PROMPT), Message.user(user)]
    return TicketNotesStream(llm, messages, account_id=account_id, context=_call_context(session))


# ---------------------------------------------------------------------------------------------------------
# Repairing the four sections

_SECTION_ALIASES: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    (
        "Problem Summary",
        ("problem summary", "summary", "problem", "issue", "issue summary", "problem description", "reported issue"),
    ),
    (
        "Steps Taken",
        (
            "steps taken",
            "steps",
            "diagnostic steps",
            "troubleshooting steps",
            "troubleshooting",
            "actions taken",
            "work performed",
        ),
    ),
    ("Resolution", ("resolution", "fix", "solution", "resolution summary", "outcome")),
    (
        "Next Steps",
        ("next steps", "follow-up", "follow up", "follow-up items", "follow-up actions", "recommendations"),
    ),
)
_EMPHASIS = re.compile(r"\*\*|__")
_MARKDOWN_HEADING = re.compile(r"#{1,6}(\s|$)")


def _heading(line: str) -> tuple[str | None, str, bool]:
    """(section, text after the heading, is a markdown heading) for a heading line; section None otherwise."""
    stripped = line.strip()
    # "#1 printer" is text, not a heading; a known title is still recognised without the space ("##Resolution").
    is_markdown = _MARKDOWN_HEADING.match(stripped) is not None
    # Inline text after "Title:" counts only on a marked-up heading or a canonical title, so a plain
    # "Fix: ..." line inside Steps Taken stays where it is.
    marked = is_markdown or stripped.startswith(("**", "__"))
    core = _EMPHASIS.sub("", stripped.lstrip("#")).strip()
    lowered = core.lower()
    for section, aliases in _SECTION_ALIASES:
        for alias in aliases:
            if lowered.rstrip(":").strip() == alias:
                return section, "", is_markdown
            if (marked or alias == section.lower()) and lowered.startswith(alias + ":"):
                return section, core[len(alias) + 1 :].strip(), is_markdown
    return None, "", is_markdown


def ensure_four_sections(text: str) -> str:
    """Repair ticket notes to exactly `## Problem Summary`, `## Steps Taken`, `## Resolution`, `## Next Steps`.

    Headings are recognised with any level, in bold, with a trailing colon, or under a common alias ("Fix",
    "Follow-up", ...). Sections are put in order, repeated ones merged, and missing or empty ones read
    "None". Other headings become plain "Title:" lines inside the section they appear in. Text before the
    first section is dropped as chatter when a Problem Summary exists, else it becomes the Problem Summary.
    A code fence around the whole reply is removed.
    """
    bodies: dict[str, list[str]] = {section: [] for section in TICKET_NOTES_SECTIONS}
    preamble: list[str] = []
    current: list[str] = preamble
    seen: set[str] = set()
    for line in _strip_fences(text).splitlines():
        section, rest, is_markdown = _heading(line)
        if section is not None:
            current = bodies[section]
            if section in seen and current:
                current.append("")
            seen.add(section)
            if rest:
                current.append(rest)
        elif is_markdown:
            title = _EMPHASIS.sub("", line.strip().lstrip("#")).strip().rstrip(":")
            if title:
                current.append(f"{title}:")
        else:
            current.append(line.rstrip())
    if "Problem Summary" not in seen:
        bodies["Problem Summary"] = preamble
    rendered = []
    for section in TICKET_NOTES_SECTIONS:
        body = "\n".join(bodies[section]).strip()
        rendered.append(f"## {section}\n{body or 'None'}")
    return "\n\n".join(rendered) + "\n"
