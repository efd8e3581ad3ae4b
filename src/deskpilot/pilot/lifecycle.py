"""The session state machine (FP-030, FP-031): a pure transition table with the rules' guards and messages."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from deskpilot.pilot.errors import InvalidSessionState, OwnSessionPickup, SelfEscalation


class SessionStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    RESOLVED = "resolved"
    # 21 characters: the source's varchar(20) overflowed on it (FP-030); the column here is String(32).
    REQUESTING_ESCALATION = "requesting_escalation"
    ABANDONED = "abandoned"


class Action(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    RESOLVE = "resolve"
    ESCALATE = "escalate"
    PICKUP = "pickup"
    ABANDON = "abandon"
    LINK_TICKET = "link_ticket"
    RATE = "rate"
    RESPOND = "respond"
    # Not in the source's table: generating a step again and working on branches are part of responding,
    # so they follow `respond`'s rule (active only); marking a branch is bookkeeping, allowed while paused.
    GENERATE = "generate"
    SWITCH_BRANCH = "switch_branch"
    REVIVE_BRANCH = "revive_branch"
    MARK_BRANCH = "mark_branch"


@dataclass(frozen=True, slots=True)
class Transition:
    """From which statuses an action is allowed, where it leads (None: status unchanged) and the refusal."""

    allowed_from: frozenset[SessionStatus]
    to: SessionStatus | None
    refusal: str

    def message(self, status: str) -> str:
        return self.refusal.format(status=status)


_S = SessionStatus
_OPEN: Final = frozenset({_S.ACTIVE, _S.PAUSED})
_ACTIVE: Final = frozenset({_S.ACTIVE})

TRANSITIONS: Final[Mapping[Action, Transition]] = {
    Action.PAUSE: Transition(_ACTIVE, _S.PAUSED, "Cannot pause session in status: {status}"),
    Action.RESUME: Transition(frozenset({_S.PAUSED}), _S.ACTIVE, "Cannot resume session in status: {status}"),
    Action.RESOLVE: Transition(_OPEN, _S.RESOLVED, "Cannot resolve session in status: {status}"),
    Action.ESCALATE: Transition(_OPEN, _S.REQUESTING_ESCALATION, "Cannot escalate session in status: {status}"),
    Action.PICKUP: Transition(
        frozenset({_S.REQUESTING_ESCALATION}), _S.ACTIVE, "Session is {status}, not requesting_escalation"
    ),
    Action.ABANDON: Transition(_OPEN, _S.ABANDONED, "Cannot close session in status: {status}"),
    Action.LINK_TICKET: Transition(_OPEN, None, "Cannot link ticket to session in status: {status}"),
    Action.RATE: Transition(frozenset(SessionStatus), None, "Cannot rate session in status: {status}"),
    Action.RESPOND: Transition(_ACTIVE, None, "Session is {status}, not active"),
    Action.GENERATE: Transition(_ACTIVE, None, "Session is {status}, not active"),
    Action.SWITCH_BRANCH: Transition(_ACTIVE, None, "Cannot switch branches of session in status: {status}"),
    Action.REVIVE_BRANCH: Transition(_ACTIVE, None, "Cannot revive a branch of session in status: {status}"),
    Action.MARK_BRANCH: Transition(_OPEN, None, "Cannot mark a branch of session in status: {status}"),
}

CLOSED_STATUSES: Final = frozenset({_S.RESOLVED, _S.ABANDONED})
SELF_ESCALATION_MESSAGE: Final = "Cannot escalate a session to yourself. Use pause instead."
OWN_PICKUP_MESSAGE: Final = "Cannot pick up your own escalated session"


def allowed(status: str, action: Action) -> bool:
    return status in TRANSITIONS[action].allowed_from


def transition(status: str, action: Action) -> SessionStatus:
    """The status after `action`; raises InvalidSessionState (409) with the rule's message when not allowed."""
    rule = TRANSITIONS[action]
    if status not in rule.allowed_from:
        raise InvalidSessionState(rule.message(status), extra={"session_status": status, "action": action.value})
    return rule.to if rule.to is not None else SessionStatus(status)


def check_escalation_target(caller_id: uuid.UUID, target_id: uuid.UUID | None) -> None:
    """Escalating to oneself is refused (FP-038); no target means the whole team."""
    if target_id is not None and target_id == caller_id:
        raise SelfEscalation(SELF_ESCALATION_MESSAGE)


def check_pickup(caller_id: uuid.UUID, owner_id: uuid.UUID) -> None:
    """Only a different engineer may pick an escalated session up (FP-031)."""
    if caller_id == owner_id:
        raise OwnSessionPickup(OWN_PICKUP_MESSAGE)
