"""Pure rules without a database: confidence tiers, the lifecycle table and the access matrix."""

from __future__ import annotations

import uuid

import pytest

from deskpilot.errors import Conflict, PermissionDenied
from deskpilot.pilot import access, lifecycle, tiers
from deskpilot.pilot.lifecycle import Action, SessionStatus

# --- tiers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("confidence", "tier"),
    [(0.0, "discovery"), (0.39, "discovery"), (0.4, "exploring"), (0.79, "exploring"), (0.8, "guided"),
     (1.0, "guided")],
)
def test_fp010_confidence_to_tier(confidence: float, tier: str) -> None:
    assert tiers.confidence_to_tier(confidence) == tier


def test_fp011_strong_flow_match_forces_guided_at_start() -> None:
    assert tiers.initial_confidence(0.3, 0.85) == (0.8, "guided")
    assert tiers.initial_confidence(0.9, 0.85) == (0.9, "guided")
    # 0.8 exactly is not "above 0.8".
    assert tiers.initial_confidence(0.3, 0.8) == (0.3, "discovery")
    assert tiers.initial_confidence(0.5, None) == (0.5, "exploring")


def test_fp012_later_steps_use_their_own_confidence_or_keep_the_previous() -> None:
    assert tiers.next_confidence(0.2, 0.9) == (0.2, "discovery")  # no match floor after the start
    assert tiers.next_confidence(None, 0.65) == (0.65, "exploring")
    assert tiers.next_confidence(1.7, 0.1) == (1.0, "guided")  # clamped


# --- lifecycle (FP-030, FP-031) ---------------------------------------------------------------

S = SessionStatus
EXPECTED: dict[Action, tuple[set[SessionStatus], SessionStatus | None]] = {
    Action.PAUSE: ({S.ACTIVE}, S.PAUSED),
    Action.RESUME: ({S.PAUSED}, S.ACTIVE),
    Action.RESOLVE: ({S.ACTIVE, S.PAUSED}, S.RESOLVED),
    Action.ESCALATE: ({S.ACTIVE, S.PAUSED}, S.REQUESTING_ESCALATION),
    Action.PICKUP: ({S.REQUESTING_ESCALATION}, S.ACTIVE),
    Action.ABANDON: ({S.ACTIVE, S.PAUSED}, S.ABANDONED),
    Action.LINK_TICKET: ({S.ACTIVE, S.PAUSED}, None),
    Action.RATE: (set(S), None),
    Action.RESPOND: ({S.ACTIVE}, None),
}


@pytest.mark.parametrize("action", list(EXPECTED))
@pytest.mark.parametrize("status", list(SessionStatus))
def test_fp031_transition_table(action: Action, status: SessionStatus) -> None:
    allowed_from, target = EXPECTED[action]
    if status in allowed_from:
        assert lifecycle.transition(status, action) == (target or status)
    else:
        with pytest.raises(Conflict) as caught:
            lifecycle.transition(status, action)
        assert caught.value.status == 409
        assert status.value in caught.value.detail


def test_fp031_refusal_messages_follow_the_rules() -> None:
    with pytest.raises(Conflict, match=r"^Cannot pause session in status: paused$"):
        lifecycle.transition("paused", Action.PAUSE)
    with pytest.raises(Conflict, match=r"^Session is active, not requesting_escalation$"):
        lifecycle.transition("active", Action.PICKUP)
    with pytest.raises(Conflict, match=r"^Session is paused, not active$"):
        lifecycle.transition("paused", Action.RESPOND)
    with pytest.raises(Conflict, match=r"^Cannot close session in status: resolved$"):
        lifecycle.transition("resolved", Action.ABANDON)


def test_fp030_status_fits_its_column() -> None:
    from deskpilot.pilot.models import PilotSession

    width = PilotSession.__table__.c.status.type.length
    assert max(len(s.value) for s in SessionStatus) <= width
    assert len("requesting_escalation") > 20  # the width the source overflowed


def test_fp038_self_escalation_is_refused_with_the_rules_message() -> None:
    me = uuid.uuid4()
    with pytest.raises(Conflict) as caught:
        lifecycle.check_escalation_target(me, me)
    assert caught.value.detail == "Cannot escalate a session to yourself. Use pause instead."
    assert caught.value.status == 409
    lifecycle.check_escalation_target(me, uuid.uuid4())
    lifecycle.check_escalation_target(me, None)


def test_fp031_pickup_only_by_a_different_user() -> None:
    me = uuid.uuid4()
    with pytest.raises(Conflict, match="Cannot pick up your own escalated session"):
        lifecycle.check_pickup(me, me)
    lifecycle.check_pickup(me, uuid.uuid4())


# --- access (FP-033) ------------------------------------------------------------------------

ACCOUNT = uuid.uuid4()
TEAM = uuid.uuid4()
OWNER = access.Caller(uuid.uuid4(), ACCOUNT, TEAM, "owner")
TARGET = access.Caller(uuid.uuid4(), ACCOUNT, uuid.uuid4(), "target")
PICKER = access.Caller(uuid.uuid4(), ACCOUNT, uuid.uuid4(), "picker")
TEAMMATE = access.Caller(uuid.uuid4(), ACCOUNT, TEAM, "teammate")
STRANGER = access.Caller(uuid.uuid4(), ACCOUNT, uuid.uuid4(), "stranger")
NO_TEAM = access.Caller(uuid.uuid4(), ACCOUNT, None, "no team")


def parties(status: str, *, team: uuid.UUID | None = TEAM) -> access.SessionParties:
    return access.SessionParties(owner_id=OWNER.user_id, team_id=team, status=status,
                                 escalated_to_id=TARGET.user_id, picked_up_by_id=PICKER.user_id)


@pytest.mark.parametrize("status", list(SessionStatus))
@pytest.mark.parametrize("team_access", [False, True])
@pytest.mark.parametrize(
    ("caller", "always"),
    [(OWNER, True), (TARGET, True), (PICKER, True), (TEAMMATE, False), (STRANGER, False), (NO_TEAM, False)],
)
def test_fp033_access_matrix(caller: access.Caller, always: bool, team_access: bool, status: SessionStatus) -> None:
    expected = always or (
        caller is TEAMMATE and team_access and status is SessionStatus.REQUESTING_ESCALATION
    )
    assert access.can_access(caller, parties(status), allow_team_access=team_access) is expected
    if not expected:
        with pytest.raises(PermissionDenied, match="Not authorized to access this session"):
            access.check_access(caller, parties(status), allow_team_access=team_access)


def test_fp033_a_session_without_team_gives_no_team_access() -> None:
    assert not access.can_access(NO_TEAM, parties("requesting_escalation", team=None), allow_team_access=True)
