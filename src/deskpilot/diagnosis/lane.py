"""The task lane as stored: this turn's questions and actions with stable ids and the engineer's check/skip (pure)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from enum import StrEnum
from typing import Final, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field

from deskpilot.chat.events import (
    LONG_TEXT_CHARS,
    TEXT_CHARS,
    ActionsEvent,
    LaneAction,
    LaneQuestion,
    QuestionsEvent,
    TaskLane,
    build_task_lane,
)
from deskpilot.chat.markers import clean_user_message

NOTE_CHARS: Final = LONG_TEXT_CHARS
ItemKind: TypeAlias = Literal["question", "action"]


class ItemStatus(StrEnum):
    """Where the engineer is with a task-lane item; the AI's lane starts every new item as pending."""

    PENDING = "pending"
    DONE = "done"
    SKIPPED = "skipped"


class _Stored(BaseModel):
    # Stored rows are read back with the same model, so unknown keys are ignored rather than refused: a row
    # written by a newer version must not make the lane unreadable.
    model_config = ConfigDict(frozen=True, extra="ignore")


class QuestionState(_Stored):
    """A question in the lane, with the engineer's status and answer."""

    id: uuid.UUID
    text: str = Field(min_length=1, max_length=TEXT_CHARS)
    context: str = Field(default="", max_length=TEXT_CHARS)
    status: ItemStatus = ItemStatus.PENDING
    answer: str | None = Field(default=None, max_length=NOTE_CHARS)


class ActionState(_Stored):
    """An action in the lane, with the engineer's status and result."""

    id: uuid.UUID
    label: str = Field(min_length=1)
    command: str | None = None
    description: str = ""
    status: ItemStatus = ItemStatus.PENDING
    result: str | None = Field(default=None, max_length=NOTE_CHARS)


class StoredLane(_Stored):
    """`session_task_lanes.lane`: the current questions and actions (UC-015), ids stable across turns (UC-016)."""

    questions: tuple[QuestionState, ...] = ()
    actions: tuple[ActionState, ...] = ()

    def find(self, item_id: uuid.UUID) -> QuestionState | ActionState | None:
        """The item with this id, question or action, or None."""
        for question in self.questions:
            if question.id == item_id:
                return question
        for action in self.actions:
            if action.id == item_id:
                return action
        return None


def item_kind(item: QuestionState | ActionState) -> ItemKind:
    return "question" if isinstance(item, QuestionState) else "action"


def _ids_only(lane: StoredLane) -> TaskLane:
    return TaskLane(
        questions=tuple(LaneQuestion(id=q.id, text=q.text, context=q.context) for q in lane.questions),
        actions=tuple(
            LaneAction(id=a.id, label=a.label, command=a.command, description=a.description) for a in lane.actions
        ),
    )


def next_lane(
    previous: StoredLane | None,
    questions: QuestionsEvent | None,
    actions: ActionsEvent | None,
    *,
    new_id: Callable[[], uuid.UUID] = uuid.uuid4,
) -> StoredLane | None:
    """UC-015/UC-016: the lane after a turn, or None (cleared) when the turn has no questions and no actions.

    Ids come from `chat.events.build_task_lane` (a question with the exact stripped text, an action with the exact
    label of the previous lane keeps its id; any other item gets `new_id()`). An item that keeps its id also keeps
    the engineer's status and note: it is the same item, and facts may point at it.
    """
    built = build_task_lane(_ids_only(previous) if previous else None, questions, actions, new_id=new_id)
    if built is None:
        return None
    old_q = {q.id: q for q in previous.questions} if previous else {}
    old_a = {a.id: a for a in previous.actions} if previous else {}
    out_q: list[QuestionState] = []
    for q in built.questions:
        kept_q = old_q.get(q.id)
        out_q.append(
            QuestionState(
                id=q.id,
                text=q.text,
                context=q.context,
                status=kept_q.status if kept_q else ItemStatus.PENDING,
                answer=kept_q.answer if kept_q else None,
            )
        )
    out_a: list[ActionState] = []
    for a in built.actions:
        kept_a = old_a.get(a.id)
        out_a.append(
            ActionState(
                id=a.id,
                label=a.label,
                command=a.command,
                description=a.description,
                status=kept_a.status if kept_a else ItemStatus.PENDING,
                result=kept_a.result if kept_a else None,
            )
        )
    return StoredLane(questions=tuple(out_q), actions=tuple(out_a))


def with_item_status(
    lane: StoredLane, item_id: uuid.UUID, status: ItemStatus, *, note: str | None, set_note: bool
) -> StoredLane | None:
    """The lane with one item's status (and, when `set_note`, its answer/result) changed; None if no such item."""
    item = lane.find(item_id)
    if item is None:
        return None
    if isinstance(item, QuestionState):
        changed_q = item.model_copy(update={"status": status, **({"answer": note} if set_note else {})})
        return lane.model_copy(update={"questions": tuple(changed_q if q.id == item_id else q for q in lane.questions)})
    changed_a = item.model_copy(update={"status": status, **({"result": note} if set_note else {})})
    return lane.model_copy(update={"actions": tuple(changed_a if a.id == item_id else a for a in lane.actions)})


def clean_user_text(text: str) -> str:
    """UC-006: a user message as stored: `_(not yet completed)_` → `(pending)`, `_(skipped)_` → `(skipped)`.

    The markers are the console's way of showing the task lane in the message; stored verbatim, the model would
    read them back and re-inject stale items. The rule itself lives in `chat.markers` (one place for it).
    """
    return clean_user_message(text)
