"""Who may act on a session (FP-033), as a pure rule applied on top of account scoping."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Final

from deskpilot.events.audit import Actor
from deskpilot.pilot.errors import SessionAccessDenied
from deskpilot.pilot.lifecycle import SessionStatus

ACCESS_DENIED_MESSAGE: Final = "Not authorized to access this session"


@dataclass(frozen=True, slots=True)
class Caller:
    """The engineer calling the service: the API builds it from its principal."""

    user_id: uuid.UUID
    account_id: uuid.UUID
    team_id: uuid.UUID | None
    name: str

    @property
    def actor(self) -> Actor:
        return Actor(self.user_id, self.name)


@dataclass(frozen=True, slots=True)
class SessionParties:
    """The session fields the access rule reads."""

    owner_id: uuid.UUID
    team_id: uuid.UUID | None
    status: str
    escalated_to_id: uuid.UUID | None
    picked_up_by_id: uuid.UUID | None


def can_access(caller: Caller, parties: SessionParties, *, allow_team_access: bool = False) -> bool:
    """FP-033: the owner, the escalation target and the engineer who picked it up always may.

    With `allow_team_access` (viewing the escalation and picking it up), members of the session's team may too,
    but only while the session is requesting escalation.
    """
    if caller.user_id in (parties.owner_id, parties.escalated_to_id, parties.picked_up_by_id):
        return True
    return (
        allow_team_access
        and parties.team_id is not None
        and caller.team_id == parties.team_id
        and parties.status == SessionStatus.REQUESTING_ESCALATION
    )


def check_access(caller: Caller, parties: SessionParties, *, allow_team_access: bool = False) -> None:
    """Raise SessionAccessDenied (403) unless `can_access`."""
    if not can_access(caller, parties, allow_team_access=allow_team_access):
        raise SessionAccessDenied(ACCESS_DENIED_MESSAGE)
