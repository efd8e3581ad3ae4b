"""The stored task lane as pure functions: UC-015 (lane or cleared), UC-016 (stable ids), UC-006 (hygiene)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable

from deskpilot.diagnosis.lane import ItemStatus, StoredLane, clean_user_text, next_lane, with_item_status
from tests.diagnosis.conftest import actions, questions


def counter() -> Callable[[], uuid.UUID]:
    numbers = itertools.count(1)
    return lambda: uuid.UUID(int=next(numbers))


def test_uc015_no_questions_and_no_actions_clear_the_lane() -> None:
    previous = next_lane(None, questions("Is MFA on?"), None)
    assert previous is not None
    assert next_lane(previous, None, None) is None
    assert next_lane(None, None, None) is None


def test_uc015_a_turn_with_only_questions_or_only_actions_has_a_lane() -> None:
    only_q = next_lane(None, questions("Is MFA on?"), None, new_id=counter())
    only_a = next_lane(None, None, actions("Clear credentials"), new_id=counter())
    assert only_q is not None
    assert only_a is not None
    assert ([q.text for q in only_q.questions], only_q.actions) == (["Is MFA on?"], ())
    assert (only_a.questions, [a.label for a in only_a.actions]) == ((), ["Clear credentials"])
    assert only_a.actions[0].command == "run Clear credentials"
    assert all(q.status is ItemStatus.PENDING for q in only_q.questions)
    assert all(a.status is ItemStatus.PENDING for a in only_a.actions)


def test_uc016_ids_are_kept_for_the_same_question_text_and_action_label() -> None:
    first = next_lane(None, questions("Is MFA on?", "Which client?"), actions("Clear credentials"), new_id=counter())
    assert first is not None
    second = next_lane(
        first,
        questions("Which client?", "Is MFA enforced?"),
        actions("Clear credentials", "Reset profile"),
        new_id=lambda: uuid.UUID(int=99),
    )
    assert second is not None
    ids = {q.text: q.id for q in first.questions} | {a.label: a.id for a in first.actions}
    assert second.questions[0].id == ids["Which client?"]
    assert second.questions[1].id == uuid.UUID(int=99)  # new text, new id
    assert second.actions[0].id == ids["Clear credentials"]
    assert second.actions[1].id == uuid.UUID(int=99)


def test_uc016_matching_is_exact_so_a_reworded_question_is_a_new_item() -> None:
    first = next_lane(None, questions("Is MFA on?"), None, new_id=counter())
    assert first is not None
    second = next_lane(first, questions("is MFA on?"), None, new_id=lambda: uuid.UUID(int=77))
    assert second is not None
    assert second.questions[0].id == uuid.UUID(int=77)


def test_uc016_a_kept_item_keeps_the_engineers_status_and_note_a_new_one_is_pending() -> None:
    first = next_lane(None, questions("Is MFA on?"), actions("Clear credentials"), new_id=counter())
    assert first is not None
    answered = with_item_status(first, first.questions[0].id, ItemStatus.DONE, note="Yes, per-user", set_note=True)
    assert answered is not None
    second = next_lane(answered, questions("Is MFA on?", "Since when?"), actions("Clear credentials"))
    assert second is not None
    assert (second.questions[0].status, second.questions[0].answer) == (ItemStatus.DONE, "Yes, per-user")
    assert (second.questions[1].status, second.questions[1].answer) == (ItemStatus.PENDING, None)
    assert second.actions[0].status is ItemStatus.PENDING


def test_item_status_sets_the_answer_or_result_and_keeps_it_unless_asked() -> None:
    lane = next_lane(None, questions("Is MFA on?"), actions("Clear credentials"), new_id=counter())
    assert lane is not None
    action_id = lane.actions[0].id
    done = with_item_status(lane, action_id, ItemStatus.DONE, note="Cleared 3 entries", set_note=True)
    assert done is not None
    assert (done.actions[0].status, done.actions[0].result) == (ItemStatus.DONE, "Cleared 3 entries")
    assert done.questions == lane.questions
    skipped = with_item_status(done, action_id, ItemStatus.SKIPPED, note=None, set_note=False)
    assert skipped is not None
    assert (skipped.actions[0].status, skipped.actions[0].result) == (ItemStatus.SKIPPED, "Cleared 3 entries")
    assert with_item_status(lane, uuid.uuid4(), ItemStatus.DONE, note=None, set_note=False) is None


def test_the_lane_round_trips_through_its_stored_json() -> None:
    lane = next_lane(None, questions("Is MFA on?"), actions("Clear credentials"))
    assert lane is not None
    stored = lane.model_dump(mode="json")
    assert set(stored["questions"][0]) == {"id", "text", "context", "status", "answer"}
    assert set(stored["actions"][0]) == {"id", "label", "command", "description", "status", "result"}
    assert StoredLane.model_validate(stored) == lane
    assert lane.find(lane.actions[0].id) == lane.actions[0]
    assert lane.find(uuid.uuid4()) is None


def test_uc006_task_lane_markers_in_a_user_message_are_neutralised() -> None:
    message = "Checked MFA _(not yet completed)_\nReset profile _(skipped)_\nCleared creds: done"
    assert clean_user_text(message) == "Checked MFA (pending)\nReset profile (skipped)\nCleared creds: done"
    assert clean_user_text("_(not yet completed)_ _(not yet completed)_") == "(pending) (pending)"
    assert clean_user_text("nothing to change (pending)") == "nothing to change (pending)"
