"""API and service shapes for PSA connections, member mappings and pushes."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from deskpilot.psa.base import TicketContext
from deskpilot.psa.connectwise import ConnectWiseCredentials, ConnectWiseSettings
from deskpilot.psa.models import MappingSource, PushKind, PushStatus
from deskpilot.psa.registry import PSAKind
from deskpilot.psa.webhook import WebhookCredentials, WebhookSettings

# --- connections ----------------------------------------------------------------------------


class _ConnectionCreateBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)


class ConnectWiseConnectionCreate(_ConnectionCreateBase):
    kind: Literal[PSAKind.CONNECTWISE]
    settings: ConnectWiseSettings
    credentials: ConnectWiseCredentials


class WebhookConnectionCreate(_ConnectionCreateBase):
    kind: Literal[PSAKind.WEBHOOK]
    settings: WebhookSettings
    credentials: WebhookCredentials


ConnectionCreate = Annotated[ConnectWiseConnectionCreate | WebhookConnectionCreate, Field(discriminator="kind")]


class ConnectionUpdate(BaseModel):
    """Partial update: settings keys are merged (null removes an optional key); credentials are replaced
    only for the keys given, so the stored private key survives an edit that does not mention it."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    settings: dict[str, str | None] | None = None
    credentials: dict[str, str] | None = None
    is_active: bool | None = None


class ConnectionOut(BaseModel):
    id: uuid.UUID
    name: str
    kind: PSAKind
    settings: dict[str, str]
    credentials: dict[str, str | bool] = Field(
        description="Never the secrets: a redacted hint of identifying keys and has_<secret> flags."
    )
    is_active: bool
    last_tested_at: datetime | None
    last_test_ok: bool | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


class ConnectionTestOut(BaseModel):
    ok: bool
    detail: str | None
    error: str | None
    tested_at: datetime


# --- member mappings ------------------------------------------------------------------------


class MemberMappingOut(BaseModel):
    user_id: uuid.UUID
    user_name: str
    user_email: str
    user_active: bool
    connection_id: uuid.UUID | None
    member_identifier: str | None
    source: MappingSource | None
    updated_at: datetime | None


class MemberMappingUpdate(BaseModel):
    """`member_identifier: null` removes the mapping (auto-mapping may then find one again)."""

    model_config = ConfigDict(extra="forbid")

    member_identifier: str | None = Field(min_length=1, max_length=100)
    connection_id: uuid.UUID | None = None


class AutoMapOut(BaseModel):
    connection_id: uuid.UUID
    members_found: int
    matched: int = Field(description="Users matched to a member by email in this run.")
    manual_kept: int = Field(description="Users whose manual mapping was left alone.")
    removed: int = Field(description="Automatic mappings dropped because the email no longer matches.")
    mappings: list[MemberMappingOut]


# --- pushes ---------------------------------------------------------------------------------


class NoteFlags(BaseModel):
    """Where the note lands in the PSA: discussion (detail), internal analysis and/or resolution."""

    model_config = ConfigDict(frozen=True)

    internal: bool = False
    resolution: bool = False
    detail: bool = True

    @model_validator(mode="after")
    def _one_flag(self) -> Self:
        if not (self.internal or self.resolution or self.detail):
            raise ValueError("a note needs at least one of internal, resolution or detail")
        return self


class TimeEntryDraft(BaseModel):
    """Time to log for the engineer `user_id`; hours are decimal hours (0.25 = 15 minutes)."""

    model_config = ConfigDict(frozen=True)

    user_id: uuid.UUID
    hours: Decimal = Field(gt=0, le=24)
    notes: str = Field(default="", max_length=4000)
    started_at: AwareDatetime


class PushResult(BaseModel):
    """What the caller shows after resolve/escalate; a failed push never fails the caller."""

    status: Literal["pushed", "failed", "no_psa"]
    error: str | None = None
    member_mapping_warning: str | None = None
    push_ids: list[uuid.UUID] = Field(default_factory=list)


class PushOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    connection_id: uuid.UUID
    ticket_id: str
    subject_type: str
    subject_id: uuid.UUID
    kind: PushKind
    payload: dict[str, str | bool | None]
    status: PushStatus
    attempts: int
    last_error: str | None
    external_id: str | None
    pushed_at: datetime | None
    created_at: datetime
    updated_at: datetime


# --- tickets --------------------------------------------------------------------------------


class TicketContextLoad(BaseModel):
    """Ticket context for intake: `unavailable` (with the reason) instead of an error, so intake goes on."""

    status: Literal["loaded", "unavailable"]
    context: TicketContext | None = None
    error: str | None = None
