"""Read-only views of a Pilot session and its steps: what documentation and communications need from the rows."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, TypeAlias

ActionResult: TypeAlias = Literal["success", "failure"]
EvidenceStatus: TypeAlias = Literal["confirmed", "ruled_out", "pending"]
MessageRole: TypeAlias = Literal["user", "assistant"]


@dataclass(frozen=True, slots=True)
class EvidenceItem:
    """One "What we know" item of a session: a finding and whether it is confirmed, ruled out or pending."""

    text: str
    status: EvidenceStatus


@dataclass(frozen=True, slots=True)
class OptionView:
    """One choice a question step offered: the label the engineer saw and the machine value stored."""

    label: str
    value: str


@dataclass(frozen=True, slots=True)
class MessageView:
    """One conversation message of a chat session; "user" is the engineer, "assistant" the AI."""

    role: MessageRole
    content: str


@dataclass(frozen=True, slots=True)
class SessionView:
    """What documentation and communications read from a session.

    Attributes:
        id: The session id.
        kind: "guided" or "chat".
        status: active, paused, resolved, requesting_escalation or abandoned.
        created_at: When the session started (timezone-aware).
        problem_summary: The classified one-line problem, if any.
        problem_domain: The classified domain (networking, m365, ...), if any.
        intake: The intake document: `text`, `log_content`, `client_name`/`company_name`, `ticket_data`.
        resolved_at: Set on resolve and abandon; None while active, paused or escalated.
        resolution_summary: The engineer's resolution summary, if resolved.
        escalation_reason: Why the session was escalated, if it was.
        engineer_name: The owning engineer's display name (the sign-off of client messages).
        ticket_id: The linked PSA ticket id, if any.
        ticket_data: The linked PSA ticket context (`summary`, `company{name}`, ...), if loaded on the session.
        client_id: The desk's client the session is for, if known (cost reporting).
        client_name: The desk's client name, if known (last resort for the client's name).
        evidence_items: Structured findings, if the session keeps them; else findings are derived from steps.
    """

    id: uuid.UUID
    kind: str
    status: str
    created_at: datetime
    problem_summary: str | None = None
    problem_domain: str | None = None
    intake: Mapping[str, object] = field(default_factory=dict)
    resolved_at: datetime | None = None
    resolution_summary: str | None = None
    escalation_reason: str | None = None
    engineer_name: str | None = None
    ticket_id: str | None = None
    ticket_data: Mapping[str, object] | None = None
    client_id: uuid.UUID | None = None
    client_name: str | None = None
    evidence_items: tuple[EvidenceItem, ...] = ()


@dataclass(frozen=True, slots=True)
class StepView:
    """What documentation and communications read from a step.

    Attributes:
        order: The step's `step_order` (0-based).
        step_type: The stored step type: question, action, fork or status_update.
        content: The step content: `text`, `type` (question, action, resolution_suggestion, fork, briefing,
            status_update), `options` [{label, value}], `action_type`, `resolution_summary`,
            `follow_up_recommendations`, ...
        selected_option: The machine value of the option the engineer picked.
        free_text_input: What the engineer typed.
        was_skipped: The engineer skipped the step.
        action_result: Whether the action worked ("success"/"failure"), None when not reported.
        action_details: The engineer's details about the action's result.
        responded_at: When the engineer responded.
    """

    order: int
    step_type: str
    content: Mapping[str, object] = field(default_factory=dict)
    selected_option: str | None = None
    free_text_input: str | None = None
    was_skipped: bool = False
    action_result: ActionResult | None = None
    action_details: str | None = None
    responded_at: datetime | None = None

    @property
    def text(self) -> str:
        """The step's text, stripped; "" when absent."""
        value = self.content.get("text")
        return value.strip() if isinstance(value, str) else ""

    @property
    def content_type(self) -> str:
        """`content.type`, else the stored step type (status update steps carry no `content.type`)."""
        value = self.content.get("type")
        return value if isinstance(value, str) and value else self.step_type

    @property
    def options(self) -> tuple[OptionView, ...]:
        """The options presented (`content.options`); malformed entries are left out."""
        raw = self.content.get("options")
        if not isinstance(raw, list | tuple):
            return ()
        options: list[OptionView] = []
        for item in raw:
            if not isinstance(item, Mapping):
                continue
            value = item.get("value")
            label = item.get("label")
            if value is None and label is None:
                continue
            value_text = str(value if value is not None else label)
            options.append(OptionView(label=str(label) if label is not None else value_text, value=value_text))
        return tuple(options)

    @property
    def follow_up_recommendations(self) -> tuple[str, ...]:
        """`content.follow_up_recommendations`, non-empty strings only."""
        raw = self.content.get("follow_up_recommendations")
        if not isinstance(raw, list | tuple):
            return ()
        return tuple(item.strip() for item in raw if isinstance(item, str) and item.strip())

    def option_label(self, value: str) -> str:
        """The label shown for option `value`; the value itself when it was not among the options."""
        return next((option.label for option in self.options if option.value == value), value)
