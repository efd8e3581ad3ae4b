"""Chat copilot service: chat sessions, streamed turns with markers and tools, reconnects, approvals, lifecycle."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

import anyio
import httpx
from sqlalchemy import Row, bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from deskpilot.chat import effects, prompts
from deskpilot.chat import stream as frames
from deskpilot.chat.context import ContextCache, TurnContext
from deskpilot.chat.errors import (
    CannotSend,
    ChatSessionNotFound,
    FixOutcomeRequired,
    ImageNotFound,
    ImagesNotSupported,
    MessageEmpty,
    MessageTooLarge,
    NothingToRegenerate,
    NothingToResume,
    ThreadBusy,
    TurnNotFound,
)
from deskpilot.chat.events import CHAT_EVENT_TOOLS, decode_tool_call
from deskpilot.chat.images import check_images, with_image_note
from deskpilot.chat.markers import clean_user_message, parse_reply, visible_prefix
from deskpilot.chat.models import ChatTurn, MessageImage
from deskpilot.chat.schemas import (
    MAX_IMAGES,
    MAX_MESSAGE_CHARS,
    ChatCreate,
    ChatDetail,
    ChatMessageOut,
    ChatRename,
    ChatSessionOut,
    MessageIn,
    ResumeIn,
    TurnOut,
)
from deskpilot.chat.stored_images import history_images, image_counts, image_writes, stored_image
from deskpilot.chat.stream import TurnStream, TurnStreams
from deskpilot.chat.tools import CHAT_TOOLS, TOOLS_BY_NAME, ToolDeps
from deskpilot.diagnosis import service as diagnosis
from deskpilot.errors import DeskpilotError
from deskpilot.events import audit, notifications
from deskpilot.events.pubsub import PubSub
from deskpilot.identity import service as identity
from deskpilot.knowledge import service as knowledge
from deskpilot.llm import LLM, CallContext, Message, Purpose, ToolCall
from deskpilot.llm.messages import ImagePart
from deskpilot.pilot import branches as branching
from deskpilot.pilot import escalation, similar
from deskpilot.pilot.access import Caller, check_access
from deskpilot.pilot.engine import session_parties
from deskpilot.pilot.errors import BranchClosed, BranchNotFound
from deskpilot.pilot.lifecycle import Action, SessionStatus, check_escalation_target, check_pickup, transition
from deskpilot.pilot.models import PilotSession, SessionBranch, SessionMessage
from deskpilot.pilot.schemas import BranchNode, EscalateRequest
from deskpilot.security.crypto import SecretBox
from deskpilot.storage import Database, utcnow
from deskpilot.storage.batch import Write, WriteConflict, commit_writes, insert_row, update_row

logger = logging.getLogger(__name__)

CHAT: Final = "chat"
SUBJECT_TYPE: Final = "chat"
# A `running` turn older than this that no process is streaming was cut off (crash, kill -9): it is closed.
STALE_TURN: Final = timedelta(minutes=15)
TITLE_WAIT_S: Final = 2.0
# How long a message's commit waits for its model request to be on the wire (a new TLS connection can take
# longer: the commit then goes first).
SEND_WAIT_S: Final = 0.05
_BUSY: Final = "This chat is still answering the previous message; wait for it to finish"
SUGGESTED_FLOWS: Final = 3
SIMILAR_SESSIONS: Final = 3
TEMPLATES_IN_PROMPT: Final = 10
HISTORY_MESSAGES: Final = 60
# Rounds of tool calls approved for the rest of the chat (approve_always) that one turn runs before it stops.
MAX_GRANTED_ROUNDS: Final = 3
KNOWLEDGE_KEY: Final = "knowledge"
# Role of an assistant message a regenerated reply replaced: kept for the record, out of the conversation.
REPLACED: Final = "replaced"
_MARKUP_CHARS: Final = ("[", "`", "~")


@dataclass(frozen=True, slots=True)
class ChatDeps:
    """What a chat turn needs beyond the request: the database (turns outlive requests), LLM, streams, PSA."""

    database: Database
    llm: LLM
    streams: TurnStreams
    secrets: SecretBox
    http_client: httpx.AsyncClient | None = None
    pubsub: PubSub | None = None
    # Prompt contexts of recently answered chats (None: every turn reads the database).
    contexts: ContextCache | None = None


# --- sessions -----------------------------------------------------------------------------------


async def load_chat(
    db: AsyncSession, caller: Caller, session_id: uuid.UUID, *, allow_team_access: bool = False
) -> PilotSession:
    """UC-003: a chat the caller may act on ("Chat session not found" for anything that is not a chat).

    FP-033 as for guided sessions: the owner, the escalation target and whoever picked it up; with
    `allow_team_access` (reading it, picking it up) the team too while it requests escalation.
    """
    session = await db.get(PilotSession, session_id)
    if session is None or session.kind != CHAT:
        raise ChatSessionNotFound("Chat session not found")
    check_access(caller, session_parties(session), allow_team_access=allow_team_access)
    return session


def session_out(session: PilotSession) -> ChatSessionOut:
    return ChatSessionOut(
        id=session.id, title=session.title, status=session.status, problem_summary=session.problem_summary,
        step_count=session.step_count, state_version=session.state_version, is_branching=session.is_branching,
        active_branch_id=session.active_branch_id, total_input_tokens=session.total_input_tokens,
        total_output_tokens=session.total_output_tokens, created_at=session.created_at,
        updated_at=session.updated_at,
    )


def turn_out(turn: ChatTurn) -> TurnOut:
    return TurnOut(
        id=turn.id, session_id=turn.session_id, status=turn.status, user_message_id=turn.user_message_id,
        assistant_message_id=turn.assistant_message_id, content=turn.content, parts=list(turn.parts),
        error_code=turn.error_code, input_tokens=turn.input_tokens, output_tokens=turn.output_tokens,
        started_at=turn.started_at, finished_at=turn.finished_at,
    )


async def create_chat(db: AsyncSession, caller: Caller, request: ChatCreate) -> ChatSessionOut:
    """UC-002: an empty active chat in discovery, titled "New Chat" until the first message names it."""
    if request.client_id is not None:
        await identity.get_client(db, request.client_id)  # this account's client, or 404 client_not_found
    session = PilotSession(
        id=uuid.uuid4(), account_id=caller.account_id, kind=CHAT, user_id=caller.user_id, team_id=caller.team_id,
        client_id=request.client_id, status=SessionStatus.ACTIVE, intake_type="free_text", intake={},
        title=(request.title or "").strip() or prompts.NEW_CHAT_TITLE, confidence_tier="discovery",
        confidence_score=0.0,
    )
    db.add(session)
    await db.commit()
    return session_out(session)


async def list_chats(db: AsyncSession, caller: Caller, *, limit: int = 50) -> list[ChatSessionOut]:
    rows = await db.scalars(
        select(PilotSession)
        .where(
            PilotSession.kind == CHAT,
            PilotSession.involving(caller.user_id),
        )
        .order_by(PilotSession.updated_at.desc())
        .limit(limit)
    )
    return [session_out(s) for s in rows]


def _touch(session: PilotSession) -> None:
    """A branch's status or findings are in the prompt (sibling summaries, revival evidence): updating the session
    row bumps its `state_version`, so no kept prompt context (`ContextCache`) outlives the change."""
    session.updated_at = utcnow()


async def _active_branch(db: AsyncSession, session: PilotSession) -> SessionBranch | None:
    if not session.is_branching or session.active_branch_id is None:
        return None
    return await db.get(SessionBranch, session.active_branch_id)


async def _conversation(
    db: AsyncSession, session: PilotSession, branch: SessionBranch | None, *, before_seq: int | None = None
) -> list[SessionMessage]:
    stmt = select(SessionMessage).where(branching.history_filter(session.id, branch))
    if before_seq is not None:
        stmt = stmt.where(SessionMessage.seq < before_seq)
    rows = await db.scalars(stmt.order_by(SessionMessage.seq.desc()).limit(HISTORY_MESSAGES))
    return list(reversed(list(rows)))


async def get_chat(db: AsyncSession, caller: Caller, session_id: uuid.UUID) -> ChatDetail:
    """The session, the active branch's conversation and the last turn (for a page reload mid-stream).

    The last turn is read before the messages: on SQLite each read sees the latest commit, so a turn read as
    finished guarantees its reply is in the messages read after it.
    """
    session = await load_chat(db, caller, session_id, allow_team_access=True)
    last = await db.scalar(
        select(ChatTurn).where(ChatTurn.session_id == session.id).order_by(ChatTurn.started_at.desc()).limit(1)
    )
    branch = await _active_branch(db, session)
    counts = await image_counts(db, session.id)
    messages = [
        ChatMessageOut(id=m.id, role="user" if m.role == "user" else "assistant", content=m.content,
                       branch_id=m.branch_id, seq=m.seq, created_at=m.created_at, images=counts.get(m.id, 0))
        for m in await _conversation(db, session, branch)
        if m.role in ("user", "assistant")
    ]
    return ChatDetail(session=session_out(session), messages=messages, last_turn=turn_out(last) if last else None)


async def message_image(
    db: AsyncSession, caller: Caller, session_id: uuid.UUID, message_id: uuid.UUID, position: int
) -> MessageImage:
    """An image kept with a message of the chat (whoever may read the chat may see it)."""
    session = await load_chat(db, caller, session_id, allow_team_access=True)
    image = await stored_image(db, session.id, message_id, position)
    if image is None:
        raise ImageNotFound(f"Message {message_id} has no image {position}")
    return image


async def rename(db: AsyncSession, caller: Caller, session_id: uuid.UUID, request: ChatRename) -> ChatSessionOut:
    """Give the chat the engineer's title; a title still being generated for the first turn no longer replaces it."""
    session = await load_chat(db, caller, session_id)
    session.title = request.title
    await db.commit()
    return session_out(session)


# --- lifecycle ----------------------------------------------------------------------------------


async def change_status(
    db: AsyncSession, caller: Caller, session_id: uuid.UUID, action: Action, *, note: str | None = None
) -> ChatSessionOut:
    """Pause, resume, resolve or abandon a chat with the guided sessions' rules (FP-031).

    Resolving marks the active suggested fix successful (UC-021); `note` is the resolution summary of a resolve,
    the reason of an abandon.
    """
    session = await load_chat(db, caller, session_id)
    new_status = transition(session.status, action)
    if action is Action.RESOLVE:
        await effects.on_resolve(db, session)
        session.resolved_at = utcnow()
        session.resolution_summary = note or session.resolution_summary
    elif action is Action.ABANDON:
        session.resolved_at = utcnow()
        session.resolution_notes = note or session.resolution_notes
    session.status = new_status
    await db.commit()
    return session_out(session)


async def escalate(
    db: AsyncSession, deps: ChatDeps, caller: Caller, session_id: uuid.UUID, request: EscalateRequest
) -> ChatSessionOut:
    """Hand the chat to another engineer or the team (FP-038 rules); an open suggested fix needs its outcome first.

    UC-021: while the active fix is still proposed or pending, the escalation is refused with the fix in the
    problem (`fix`), so the engineer says how it went and the next person reads an honest record.
    """
    session = await load_chat(db, caller, session_id)
    new_status = transition(session.status, Action.ESCALATE)
    check_escalation_target(caller.user_id, request.target_user_id)
    pending = await diagnosis.fix_needing_outcome(db, account_id=session.account_id, session_id=session.id)
    if pending is not None:
        raise FixOutcomeRequired(
            f"Say how the suggested fix {pending.title!r} went before escalating",
            extra={"fix": pending.model_dump(mode="json")},
        )
    _, sent = await escalation.hand_over(
        db, session, caller, request, new_status,
        title=f"Escalated chat: {session.title or 'chat'}", link=f"/chat/{session.id}",
    )
    audit.record(db, account_id=session.account_id, actor=caller.actor, action="chat.session.escalate",
                 resource_type=SUBJECT_TYPE, resource_id=session.id, details={"notified": len(sent)})
    await db.commit()
    if deps.pubsub is not None:
        for notification in sent:
            await notifications.publish_notification(deps.pubsub, notification)
    return session_out(session)


async def pickup(db: AsyncSession, caller: Caller, session_id: uuid.UUID) -> ChatSessionOut:
    """Take over a chat escalated to the team or to the caller (FP-041): it becomes active, in the caller's hands."""
    session = await load_chat(db, caller, session_id, allow_team_access=True)
    new_status = transition(session.status, Action.PICKUP)
    check_pickup(caller.user_id, session.user_id)
    session.status = new_status
    session.picked_up_by_id = caller.user_id
    session.picked_up_at = utcnow()
    audit.record(db, account_id=session.account_id, actor=caller.actor, action="chat.session.pickup",
                 resource_type=SUBJECT_TYPE, resource_id=session.id)
    await db.commit()
    return session_out(session)


# --- branches (UC-022/023) -----------------------------------------------------------------------


async def _running_turn(db: AsyncSession, session_id: uuid.UUID) -> ChatTurn | None:
    return await db.scalar(select(ChatTurn).where(ChatTurn.session_id == session_id, ChatTurn.status == "running"))


async def _refuse_while_answering(db: AsyncSession, session_id: uuid.UUID) -> None:
    # Moving to another branch mid-reply would store the reply on a branch the engineer already left.
    if await _running_turn(db, session_id) is not None:
        raise ThreadBusy("The chat is still answering; change branches when the reply is done")


async def branch_tree(db: AsyncSession, caller: Caller, session_id: uuid.UUID) -> list[BranchNode]:
    """The chat's branch map (empty until its first fork)."""
    session = await load_chat(db, caller, session_id)
    return branching.build_tree(await branching.load_branches(db, session.id), session.active_branch_id)


async def _chat_branch(
    db: AsyncSession, caller: Caller, session_id: uuid.UUID, branch_id: uuid.UUID
) -> tuple[PilotSession, SessionBranch]:
    session = await load_chat(db, caller, session_id)
    branch = await db.get(SessionBranch, branch_id)
    if branch is None or branch.session_id != session.id:
        raise BranchNotFound(f"branch {str(branch_id)!r} not found in this chat")
    return session, branch


async def switch_branch(
    db: AsyncSession, caller: Caller, session_id: uuid.UUID, branch_id: uuid.UUID
) -> list[BranchNode]:
    """Continue the chat on another branch; its conversation is its ancestors' up to the fork, then its own."""
    session, target = await _chat_branch(db, caller, session_id, branch_id)
    transition(session.status, Action.SWITCH_BRANCH)
    await _refuse_while_answering(db, session.id)
    if target.status in branching.CLOSED_STATUSES:
        raise BranchClosed(f"Branch {target.label!r} is marked {target.status.replace('_', ' ')}; revive it first")
    if target.status == "untried":
        target.status = "active"
    session.active_branch_id = target.id
    _touch(session)
    await db.commit()
    return branching.build_tree(await branching.load_branches(db, session.id), session.active_branch_id)


async def mark_branch(
    db: AsyncSession, caller: Caller, session_id: uuid.UUID, branch_id: uuid.UUID, status: str
) -> list[BranchNode]:
    """Mark a branch a dead end or solved; leaving the active branch moves to an open sibling or the parent."""
    session, target = await _chat_branch(db, caller, session_id, branch_id)
    transition(session.status, Action.MARK_BRANCH)
    if target.parent_branch_id is None:
        raise BranchClosed("The main line cannot be marked; mark one of its branches")
    await _refuse_while_answering(db, session.id)
    target.status = status
    if target.id == session.active_branch_id:
        move_to = branching.branch_after_closing(target, await branching.load_branches(db, session.id))
        if move_to is not None:
            move_to.status = "active" if move_to.status == "untried" else move_to.status
            session.active_branch_id = move_to.id
    _touch(session)
    await db.commit()
    return branching.build_tree(await branching.load_branches(db, session.id), session.active_branch_id)


async def revive_branch(
    db: AsyncSession, caller: Caller, session_id: uuid.UUID, branch_id: uuid.UUID, evidence: str
) -> list[BranchNode]:
    """Reopen a dead-end branch with new evidence and continue on it; its next prompt carries the evidence."""
    session, target = await _chat_branch(db, caller, session_id, branch_id)
    transition(session.status, Action.REVIVE_BRANCH)
    await _refuse_while_answering(db, session.id)
    if target.status != "dead_end":
        raise BranchClosed(f"Only a dead-end branch can be revived; {target.label!r} is {target.status}")
    target.status = "revived"
    target.findings = branching.with_finding(target.findings, f"New evidence: {evidence.strip()}"[:300])
    session.active_branch_id = target.id
    _touch(session)
    await db.commit()
    return branching.build_tree(await branching.load_branches(db, session.id), session.active_branch_id)


# --- turns --------------------------------------------------------------------------------------


@dataclass(slots=True)
class TurnPlan:
    """Everything the detached turn task needs; no ORM object crosses from the request into the task."""

    account_id: uuid.UUID
    session_id: uuid.UUID
    turn_id: uuid.UUID
    caller: Caller
    branch_id: uuid.UUID | None
    assistant_message_id: uuid.UUID
    assistant_seq: int
    text: str
    # The chat is still "New Chat" and this message has text: it names the chat (a first message of images
    # only leaves that to the first one with words).
    names_chat: bool = False
    # A resumed turn: the paused reply's tool calls and their results, sent after the conversation.
    continuation: list[Message] = field(default_factory=list)
    # The paused reply's seq: a resumed turn's history stops before it.
    continuation_seq: int = 0
    # The images of this turn's user message, sent to the model with it (and kept: `stored_images`).
    images: tuple[ImagePart, ...] = ()
    # A regenerated reply: the seq of the user message answered again (the history stops before it).
    user_seq: int | None = None

    @property
    def history_before(self) -> int:
        # A message turn sends this turn's user message itself (seq just before the assistant's row); a resumed
        # turn ends its history with the paused reply, which `continuation` repeats with its tool calls.
        if self.continuation:
            return self.continuation_seq
        return self.user_seq if self.user_seq is not None else self.assistant_seq - 1


def _check_message(message: MessageIn, llm: LLM) -> tuple[str, tuple[ImagePart, ...]]:
    """The message's text and checked images; a message may be images only (UC-003).

    Images need a chat route whose every model takes them (`LLM.supports_images`), else SS-043's
    MODEL_DOES_NOT_SUPPORT_IMAGE_INPUT; without any chat model this is the 503 of `LLMNotConfigured`.
    """
    text = message.text.strip()
    images: tuple[ImagePart, ...] = ()
    if message.images:
        if not llm.supports_images(Purpose.CHAT):
            raise ImagesNotSupported(
                "The chat model does not accept images; send the text only, or route chat to a vision-capable "
                "model (DESKPILOT_LLM__VISION_MODELS lists them)"
            )
        images = check_images(message.images)
    if not text and not images:
        raise MessageEmpty("The message is empty")
    if len(text) > MAX_MESSAGE_CHARS:
        raise MessageTooLarge(f"The message is over {MAX_MESSAGE_CHARS:,} characters; attach less of the log")
    return text, images


async def _close_stale_turn(db: AsyncSession, streams: TurnStreams, session_id: uuid.UUID) -> bool:
    """Close the session's running turn if it was cut off (no process streams it and it is old); True if closed."""
    running = await _running_turn(db, session_id)
    if running is None or streams.get(running.id) is not None or utcnow() - running.started_at < STALE_TURN:
        return False
    running.status, running.error_code, running.finished_at = "interrupted", "TURN_ABANDONED", utcnow()
    await db.commit()
    return True


async def _check_not_busy(db: AsyncSession, streams: TurnStreams, session_id: uuid.UUID) -> None:
    """SS-043's THREAD_BUSY unless the running turn was cut off: then it is closed and the new turn may start."""
    if await _running_turn(db, session_id) is not None and not await _close_stale_turn(db, streams, session_id):
        raise ThreadBusy(_BUSY)


def _new_message(session: PilotSession, branch_id: uuid.UUID | None, role: str, content: str) -> SessionMessage:
    session.message_seq += 1
    return SessionMessage(
        id=uuid.uuid4(), account_id=session.account_id, session_id=session.id, branch_id=branch_id,
        seq=session.message_seq, role=role, content=content, created_at=utcnow(),
    )


async def _open_turn(
    db: AsyncSession, session: PilotSession, caller: Caller, *, kind: str, user_text: str | None
) -> tuple[ChatTurn, SessionMessage | None, SessionMessage]:
    """Insert the turn, the user's message and the assistant's empty row, and commit them (SS-036 step 5).

    The partial unique index on running turns settles a race between two requests: the loser is THREAD_BUSY.
    """
    turn = ChatTurn(
        id=uuid.uuid4(), account_id=session.account_id, session_id=session.id, user_id=caller.user_id,
        branch_id=session.active_branch_id, kind=kind, status="running", parts=[], started_at=utcnow(),
    )
    user = _new_message(session, turn.branch_id, "user", user_text) if user_text is not None else None
    assistant = _new_message(session, turn.branch_id, "assistant", "")
    turn.user_message_id = user.id if user else None
    turn.assistant_message_id = assistant.id
    db.add_all([r for r in (turn, user, assistant) if r is not None])
    try:
        await db.commit()
    except (IntegrityError, StaleDataError):
        await db.rollback()
        raise ThreadBusy(_BUSY) from None
    return turn, user, assistant


def _plan(session: PilotSession, caller: Caller, turn: ChatTurn, assistant: SessionMessage, text: str) -> TurnPlan:
    return TurnPlan(
        account_id=session.account_id, session_id=session.id, turn_id=turn.id, caller=caller,
        branch_id=turn.branch_id, assistant_message_id=assistant.id, assistant_seq=assistant.seq, text=text,
    )


def _announce(stream: TurnStream, plan: TurnPlan, *announce: dict[str, Any]) -> None:
    """The turn's opening frames (SS-035), `announce`, the assistant row's id (SS-036) and the thinking step."""
    stream.emit(
        *frames.opening_parts(plan.assistant_message_id, plan.turn_id),
        *announce,
        frames.data_part("assistant-message-id",
                         {"message_id": str(plan.assistant_message_id), "turn_id": str(plan.turn_id)}),
        frames.thinking_part(plan.text, images=len(plan.images)),
    )


def _launch(deps: ChatDeps, plan: TurnPlan, *announce: dict[str, Any]) -> TurnStream:
    """Open the turn's stream with its opening frames, then run the turn detached from the request."""
    stream = deps.streams.open(plan.turn_id)
    _announce(stream, plan, *announce)
    deps.streams.run(stream, _run_turn(deps, plan, stream))
    return stream


# What a message needs of its session before the model is asked; built once, scoped by account explicitly (a
# Core read on the connection: the ORM's tenant criteria do not apply to it).
_SESSIONS = PilotSession.__table__
_MESSAGE_HEAD: Final = select(
    _SESSIONS.c.kind, _SESSIONS.c.status, _SESSIONS.c.user_id, _SESSIONS.c.team_id, _SESSIONS.c.escalated_to_id,
    _SESSIONS.c.picked_up_by_id, _SESSIONS.c.step_count, _SESSIONS.c.message_seq, _SESSIONS.c.state_version,
    _SESSIONS.c.title, _SESSIONS.c.problem_summary, _SESSIONS.c.active_branch_id,
).where(_SESSIONS.c.id == bindparam("session_id"), _SESSIONS.c.account_id == bindparam("account_id"))


async def send_message(
    db: AsyncSession, deps: ChatDeps, caller: Caller, session_id: uuid.UUID, message: MessageIn
) -> TurnStream:
    """Start a turn: the user's message is committed and announced before any model output (SS-036).

    Time to the first token is kept short: the session's head is one Core read, the prompt context comes from
    `deps.contexts` when the chat has not changed since its last turn (else it is read in this transaction), the
    model is asked first and the turn's rows commit as one batch while it reads; every frame of the turn is held
    until they have. The turn then runs detached from the request; read it from the returned stream (or
    `wait_for_turn`).
    """
    text, images = _check_message(message, deps.llm)
    conn = await db.connection()
    head = (await conn.execute(_MESSAGE_HEAD, {"session_id": session_id, "account_id": caller.account_id})).first()
    if head is None or head.kind != CHAT:
        raise ChatSessionNotFound("Chat session not found")
    check_access(caller, session_parties(head))
    if head.status not in (SessionStatus.ACTIVE, SessionStatus.PAUSED):
        raise CannotSend(f"Cannot send messages to a {head.status} session")
    deps.llm.model_for(Purpose.CHAT)  # no provider for chat: a 503 before anything is stored
    names_chat = head.title in (None, "", prompts.NEW_CHAT_TITLE) and bool(text.strip())
    branch_id: uuid.UUID | None = head.active_branch_id
    # The text notes the images, which are kept beside it (`stored_images`): a later turn on a model without
    # vision, or past the newest few images, still knows they were there.
    stored_text = with_image_note(clean_user_message(text), len(images))
    user_id = uuid.uuid4()
    plan = TurnPlan(
        account_id=caller.account_id, session_id=session_id, turn_id=uuid.uuid4(), caller=caller,
        branch_id=branch_id, assistant_message_id=uuid.uuid4(), assistant_seq=head.message_seq + 2,
        text=text, names_chat=names_chat, images=images,
    )
    context = deps.contexts.get(session_id, head.state_version, branch_id) if deps.contexts else None
    if context is None:
        session = await db.get(PilotSession, session_id)
        if session is None or session.state_version != head.state_version:
            raise ThreadBusy("This chat changed while the message was sent; send it again")
        context = await _read_in(db, session, branch_id, plan.history_before, images=takes_images(deps.llm))
    stream = deps.streams.open(plan.turn_id)
    gate = _Gate()
    sent = asyncio.get_running_loop().create_future()

    def on_sent() -> None:
        if not sent.done():
            sent.set_result(None)

    task = deps.streams.run(stream, _run_turn(deps, plan, stream, context=context, gate=gate, on_sent=on_sent))
    try:
        # One event loop: the turn task builds the prompt and puts the request on the wire first; the turn's
        # rows are then written and the opening frames go out while the model reads it. (A first turn retrieves
        # knowledge before asking: nothing to wait for.)
        if context.knowledge is not None:
            await asyncio.wait({sent, task}, timeout=SEND_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
        await commit_writes(db, [
            *_turn_writes(caller, head, plan, user_id, stored_text),
            *image_writes(caller.account_id, session_id, user_id, images, utcnow()),
        ])
    except BaseException as error:
        # Nothing of the turn was stored: it ends without output.
        gate.settle(False)
        task.cancel()
        deps.streams.discard(plan.turn_id)
        if not isinstance(error, IntegrityError | WriteConflict):
            raise
        # Another turn holds the session (the running-turn index, or the session's version moved).
        if await _close_stale_turn(db, deps.streams, session_id):
            return await send_message(db, deps, caller, session_id, message)
        raise ThreadBusy(_BUSY) from None
    # The text too: a second tab following this turn (after its own THREAD_BUSY) can show the message.
    _announce(stream, plan, frames.data_part(
        "user-message-id", {"message_id": str(user_id), "turn_id": str(plan.turn_id), "text": stored_text}))
    gate.settle(True)
    return stream


def _turn_writes(
    caller: Caller, head: Row[Any], plan: TurnPlan, user_id: uuid.UUID, stored_text: str
) -> list[Write]:
    """The running turn, the user's message, the assistant's empty row and the session's compare-and-set."""
    now, session_id, branch_id = utcnow(), plan.session_id, plan.branch_id
    user_seq = plan.assistant_seq - 1
    text = plan.text
    changes: dict[str, Any] = {
        "message_seq": user_seq + 1, "step_count": head.step_count + 2,  # UC-004: the display count
        "state_version": head.state_version + 1, "updated_at": now,
    }
    if head.status == SessionStatus.PAUSED:
        changes["status"] = SessionStatus.ACTIVE.value
    if plan.names_chat:
        changes["title"] = prompts.fallback_title(text)
    if text.strip() and not head.problem_summary:  # the first message with words (images alone say nothing)
        changes["problem_summary"] = prompts.fallback_title(text)[:200]

    def message_row(message_id: uuid.UUID, seq: int, role: str, content: str) -> Write:
        return insert_row(SessionMessage, {
            "id": message_id, "account_id": caller.account_id, "session_id": session_id, "branch_id": branch_id,
            "seq": seq, "role": role, "content": content, "created_at": now,
        })

    return [
        insert_row(ChatTurn, {
            "id": plan.turn_id, "account_id": caller.account_id, "session_id": session_id,
            "user_id": caller.user_id, "branch_id": branch_id, "kind": "message", "status": "running",
            "user_message_id": user_id, "assistant_message_id": plan.assistant_message_id, "content": "",
            "parts": [], "error_code": None, "model": None, "input_tokens": 0, "output_tokens": 0,
            "started_at": now, "finished_at": None,
        }),
        message_row(user_id, user_seq, "user", stored_text),
        message_row(plan.assistant_message_id, user_seq + 1, "assistant", ""),
        update_row(PilotSession, {"id": session_id, "account_id": caller.account_id,
                                  "state_version": head.state_version}, changes),
    ]


async def wait_for_turn(deps: ChatDeps, stream: TurnStream, account_id: uuid.UUID) -> TurnOut:
    """The finished turn as stored (the JSON answer of POST /messages)."""
    async for _ in stream.follow(stream.last_id):
        pass
    async with deps.database.session(account_id) as db:
        turn = await db.get(ChatTurn, stream.turn_id)
        if turn is None:
            raise TurnNotFound("The turn is gone")
        return turn_out(turn)


async def turn_frames(
    db: AsyncSession, deps: ChatDeps, caller: Caller, session_id: uuid.UUID, turn_id: uuid.UUID | None, after: int
) -> AsyncIterator[str] | None:
    """A reconnecting client's frames (Last-Event-ID = `after`): the rest of a live turn, or its final state.

    None when the session has no turn at all. A turn running in another process is followed through the relay
    when there is one (several processes share Redis); without it, or once it has nothing more, the turn is
    waited for and replayed from its stored state.
    """
    session = await load_chat(db, caller, session_id)
    stmt = select(ChatTurn).where(ChatTurn.session_id == session.id)
    stmt = stmt.where(ChatTurn.id == turn_id) if turn_id else stmt.order_by(ChatTurn.started_at.desc()).limit(1)
    turn = await db.scalar(stmt)
    if turn is None:
        if turn_id is not None:
            raise TurnNotFound("No such turn in this chat")
        return None
    live = deps.streams.get(turn.id)
    if live is not None:
        return live.follow(after, batched=True)
    await db.close()
    return _elsewhere(deps, caller.account_id, turn.id, after)


async def _elsewhere(deps: ChatDeps, account_id: uuid.UUID, turn_id: uuid.UUID, after: int) -> AsyncIterator[str]:
    """A turn another process runs (or ran): its frames as they are relayed, else its stored final state."""
    relay, sent = deps.streams.relay, after
    if relay is not None:

        async def still_running() -> bool:
            turn = await _stored_turn(deps, account_id, turn_id)
            return turn is not None and turn.status == "running"

        async for last_id, frames_text, ended in relay.follow(turn_id, after, still_running):
            sent = last_id
            yield frames_text
            if ended:
                return
    # Ids go on after the last frame the client got (from the relay or before): the replay replaces the message.
    async for replayed in _replay(deps, account_id, turn_id, sent):
        yield replayed


async def _stored_turn(deps: ChatDeps, account_id: uuid.UUID, turn_id: uuid.UUID) -> ChatTurn | None:
    """The turn as committed now (its own short session: the reader of a turn outlives any request's)."""
    async with deps.database.session(account_id) as db:
        return await db.get(ChatTurn, turn_id)


async def _replay(deps: ChatDeps, account_id: uuid.UUID, turn_id: uuid.UUID, after: int) -> AsyncIterator[str]:
    while True:
        turn = await _stored_turn(deps, account_id, turn_id)
        if turn is None:
            return
        if turn.status != "running":
            break
        await asyncio.sleep(0.5)
    error = (turn.error_code, "The turn did not finish") if turn.error_code else None
    parts = frames.replay_parts(
        turn.assistant_message_id, turn.id, turn.content, turn.parts, status=turn.status, error=error
    )
    # Ids continue after what the client saw, so its Last-Event-ID bookkeeping keeps working; the first part
    # (`start` with the same message id, then `data-turn-info` with replay) tells it to replace the message.
    for i, part in enumerate(parts, start=after + 1):
        yield frames.encode(i, part)


# --- running a turn -----------------------------------------------------------------------------


class _TurnDropped(Exception):
    """The request could not store the turn's rows (THREAD_BUSY, an error): the turn ends without output."""


class _Gate:
    """Holds a turn's output back until the request has committed the turn's rows (SS-036).

    The model is asked while those rows commit; `wait` passes once they have, and raises `_TurnDropped` when
    they could not be (the request then cancels the turn, which stores nothing).
    """

    __slots__ = ("_settled",)

    def __init__(self, is_open: bool | None = None) -> None:
        self._settled: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if is_open is not None:
            self._settled.set_result(is_open)

    def settle(self, is_open: bool) -> None:
        if not self._settled.done():
            self._settled.set_result(is_open)

    @property
    def is_open(self) -> bool:
        return self._settled.done() and self._settled.result()

    async def opened(self) -> bool:
        # Shielded: a cancelled waiter must not cancel the future the request settles.
        return await asyncio.shield(self._settled)

    async def wait(self) -> None:
        if not self.is_open and not await self.opened():
            raise _TurnDropped


@dataclass(slots=True)
class _Outcome:
    raw: str = ""
    shown: str = ""
    text_open: bool = False
    status: str = "running"
    error: tuple[str, str] | None = None
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    parts: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: tuple[ToolCall, ...] = ()
    title: str | None = None
    knowledge: tuple[list[str], list[dict[str, Any]]] | None = None


def _shown(raw: str) -> str:
    # Plain prose (no bracket, backtick or tilde yet) needs no scan: it is shown as it came.
    if not any(c in raw for c in _MARKUP_CHARS):
        return raw.rstrip()
    return visible_prefix(raw)


def _emit_text(stream: TurnStream, outcome: _Outcome) -> bool:
    """Emit what the reply shows beyond what was sent; True if a frame was emitted."""
    shown = _shown(outcome.raw)
    if not shown.startswith(outcome.shown) or len(shown) == len(outcome.shown):
        return False
    delta = shown[len(outcome.shown):]
    outcome.shown = shown
    if not outcome.text_open:
        outcome.text_open = True
        stream.emit({"type": "text-start", "id": frames.TEXT_PART_ID})
    stream.emit({"type": "text-delta", "id": frames.TEXT_PART_ID, "delta": delta})
    return True


async def _read(deps: ChatDeps, plan: TurnPlan) -> TurnContext:
    """Read the conversation and the session's state in one short transaction of the turn's own."""
    async with deps.database.session(plan.account_id) as db:
        session = await db.get(PilotSession, plan.session_id)
        if session is None:
            raise ChatSessionNotFound("Chat session not found")
        return await _read_in(db, session, plan.branch_id, plan.history_before, images=takes_images(deps.llm))


def takes_images(llm: LLM) -> bool:
    """Whether the chat's models take images (UC-003): only then are images accepted, shown to them again, and
    offered by the console."""
    return llm.configured and llm.supports_images(Purpose.CHAT)


async def _read_in(
    db: AsyncSession, session: PilotSession, branch_id: uuid.UUID | None, before_seq: int, *, images: bool
) -> TurnContext:
    """What a prompt needs from the database: the branch's conversation before `before_seq` (with the newest kept
    images on their messages when `images`), the session's state."""
    branch = await db.get(SessionBranch, branch_id) if branch_id else None
    rows = (await db.execute(
        select(SessionMessage.id, SessionMessage.role, SessionMessage.content)
        .where(branching.history_filter(session.id, branch), SessionMessage.seq < before_seq,
               SessionMessage.role.in_(("user", "assistant")), SessionMessage.content != "")
        .order_by(SessionMessage.seq.desc())
        .limit(HISTORY_MESSAGES)
    )).all()
    pictures = await history_images(db, [row.id for row in rows if row.role == "user"]) if images else {}
    history = [
        Message.user(row.content, pictures.get(row.id, ())) if row.role == "user" else Message.assistant(row.content)
        for row in reversed(rows)
    ]
    context = TurnContext(history=history, state=await effects.session_state(db, session),
                       team_id=session.team_id, domain=session.problem_domain)
    if branch is not None and session.is_branching:
        all_branches = await branching.load_branches(db, session.id)
        context.siblings = branching.sibling_summary(branching.siblings_for(branch, all_branches))
        if branch.status == "revived" and branch.findings:
            context.revival = branch.findings[-1]
    cached = (session.intake or {}).get(KNOWLEDGE_KEY)
    if isinstance(cached, dict):
        context.knowledge = (list(cached.get("snippets") or []), list(cached.get("suggested") or []))
    return context


async def _retrieve(deps: ChatDeps, plan: TurnPlan, context: TurnContext) -> tuple[list[str], list[dict[str, Any]]]:
    """UC-005: runbooks, similar resolved sessions and script templates for this message: prompt snippets and
    the suggested flows."""
    async with deps.database.session(plan.account_id) as db:
        flows = await knowledge.find_matches(db, plan.account_id, plan.text, context.domain,
                                             limit=SUGGESTED_FLOWS, team_id=context.team_id)
        alike = await similar.find_similar(
            db, account_id=plan.account_id, session_id=plan.session_id, intake={"text": plan.text},
            problem_summary=None, problem_domain=context.domain, limit=SIMILAR_SESSIONS,
        )
        templates = await knowledge.top_templates_for_prompt(db, context.team_id, limit=TEMPLATES_IN_PROMPT)
    snippets = [f"Runbook “{f.name}” (match {f.score:.2f}): {'; '.join(f.reasons)}" for f in flows]
    snippets += [
        f"Resolved earlier: {s.problem_summary or 'a similar problem'} — {s.resolution_summary or 'no summary'}"
        for s in alike
    ]
    snippets += [
        f"Script template `{t.slug}` ({t.language}): {t.name}. {t.description} Parameters: {', '.join(t.parameters)}"
        for t in templates
    ]
    suggested = [{"flow_id": str(f.flow_id), "name": f.name, "score": round(f.score, 3)} for f in flows]
    return snippets, suggested


async def _refresh_knowledge(deps: ChatDeps, plan: TurnPlan, context: TurnContext, stream: TurnStream,
                             outcome: _Outcome, gate: _Gate) -> None:
    """Retrieval for this message while the model answers: suggested flows now, prompt snippets next turn."""
    try:
        snippets, suggested = await _retrieve(deps, plan, context)
    except Exception:
        logger.warning("chat turn %s: knowledge retrieval failed", plan.turn_id, exc_info=True)
        return
    outcome.knowledge = (snippets, suggested)
    if suggested:
        await gate.wait()
        stream.emit(frames.data_part("suggested-flows", suggested))


async def _make_title(llm: LLM, plan: TurnPlan) -> str | None:
    try:
        result = await llm.text(
            Purpose.QUICK, prompts.title_prompt(plan.text), account_id=plan.account_id, max_tokens=40,
            context=CallContext(subject_type=SUBJECT_TYPE, subject_id=plan.session_id),
        )
    except DeskpilotError:
        logger.info("no title for chat %s: the model failed", plan.session_id, exc_info=True)
        return None
    return prompts.clean_title(result.value)


def _title_ready(task: asyncio.Task[str | None] | None, stream: TurnStream, outcome: _Outcome, plan: TurnPlan) -> None:
    if task is None or not task.done() or outcome.title is not None or task.cancelled() or task.exception():
        return
    title = task.result()
    if title:
        outcome.title = title
        stream.emit(frames.data_part("thread-title-update", {"threadId": str(plan.session_id), "title": title}))


async def _run_turn(
    deps: ChatDeps,
    plan: TurnPlan,
    stream: TurnStream,
    *,
    context: TurnContext | None = None,
    gate: _Gate | None = None,
    on_sent: Callable[[], None] | None = None,
) -> None:
    """The turn task: context, streamed model reply, markers and tools, then the shielded finalize (SS-040).

    `context` is what the request already read; `gate` holds the output until the request committed the turn.
    Knowledge retrieval is on the way to the first token only when the chat has none yet (its first turn):
    later turns use the snippets kept from the turn before and retrieve for the new message once the reply
    streams, so suggested flows still follow the conversation without delaying the first token.
    """
    gate = gate or _Gate(True)
    outcome = _Outcome()
    title_task: asyncio.Task[str | None] | None = None
    refresh: asyncio.Task[None] | None = None
    try:
        if context is None:
            context = await _read(deps, plan)
        if context.knowledge is None:
            await _refresh_knowledge(deps, plan, context, stream, outcome, gate)
            snippets = outcome.knowledge[0] if outcome.knowledge else []
        else:
            snippets = context.knowledge[0]
        if plan.names_chat:
            title_task = asyncio.create_task(_make_title(deps.llm, plan))
        system = prompts.system_prompt(context.state, snippets, siblings=context.siblings, revival=context.revival)
        messages = [Message.system(system), *context.history]
        messages += [Message.user(plan.text, plan.images)] if not plan.continuation else plan.continuation
        call_context = CallContext(
            subject_type=SUBJECT_TYPE, subject_id=plan.session_id,
            thread=str(plan.branch_id) if plan.branch_id else None,
        )
        # Issue #4: a fallback to the route's next model (429/5xx, before the first token) at most once a turn.
        fallbacks_left = 1
        for round_ in range(MAX_GRANTED_ROUNDS + 1):
            async with deps.llm.stream(
                Purpose.CHAT, messages, account_id=plan.account_id, context=call_context,
                tools=(*CHAT_TOOLS, *CHAT_EVENT_TOOLS), on_sent=on_sent, max_fallbacks=fallbacks_left,
            ) as reply:
                async for delta in reply:
                    await gate.wait()
                    outcome.raw += delta
                    if _emit_text(stream, outcome):
                        # Let the frame go out now: a reply already buffered would otherwise be read to its end
                        # before the response writes anything.
                        await asyncio.sleep(0)
                    if refresh is None and context.knowledge is not None:
                        refresh = asyncio.create_task(_refresh_knowledge(deps, plan, context, stream, outcome, gate))
                    _title_ready(title_task, stream, outcome, plan)
            result = reply.result
            fallbacks_left -= int(result.usage.fallback_used)
            outcome.model = result.usage.model
            outcome.input_tokens += result.usage.input_tokens
            outcome.output_tokens += result.usage.output_tokens
            outcome.tool_calls = result.tool_calls
            actions = [c for c in result.tool_calls if c.name in TOOLS_BY_NAME]
            if not actions or round_ == MAX_GRANTED_ROUNDS:
                break
            ran = await _run_granted(deps, plan, result.value, actions)
            if ran is None:
                break
            # Calls the engineer approved for this chat ran; the model continues with their results.
            messages += ran
            outcome.raw += "\n\n"
            outcome.tool_calls = ()
        await gate.wait()
        outcome.status = "complete"
        if title_task is not None:
            await asyncio.wait({title_task}, timeout=TITLE_WAIT_S)
            _title_ready(title_task, stream, outcome, plan)
        if refresh is not None:
            await refresh
    except _TurnDropped:
        pass
    except asyncio.CancelledError:
        outcome.status = "interrupted"
        outcome.error = ("TURN_CANCELLED", "The server stopped during this turn; the reply so far is kept")
        raise
    except DeskpilotError as e:
        outcome.status = "failed"
        outcome.error = (e.code, str(e))
    except Exception:
        logger.exception("chat turn %s failed", plan.turn_id)
        outcome.status = "failed"
        outcome.error = ("SERVER_ERROR", "The turn failed on the server; the message is kept, send it again")
    finally:
        for task in (title_task, refresh):
            if task is not None and not task.done():
                task.cancel()
        with anyio.CancelScope(shield=True):
            if await gate.opened():
                await _finalize(deps, plan, stream, outcome)


async def _run_granted(deps: ChatDeps, plan: TurnPlan, text: str, calls: Sequence[ToolCall]) -> list[Message] | None:
    async with deps.database.session(plan.account_id) as db:
        session = await db.get(PilotSession, plan.session_id)
        if session is None:
            return None
        tool_deps = ToolDeps(db=db, secrets=deps.secrets, session_id=session.id, http_client=deps.http_client)
        return await effects.run_granted(db, session, plan.caller, plan.turn_id, text, calls, tool_deps)


async def _finalize(deps: ChatDeps, plan: TurnPlan, stream: TurnStream, outcome: _Outcome) -> None:
    """Store the turn whatever happened, then end the stream. Never raises (SS-040)."""
    try:
        async with deps.database.session(plan.account_id) as db:
            await _store(db, deps, plan, outcome)
    except Exception:
        logger.exception("could not store chat turn %s", plan.turn_id)
        outcome.error = outcome.error or ("SERVER_ERROR", "The reply could not be stored")
        outcome.status = "failed" if outcome.status == "complete" else outcome.status
    if outcome.text_open:
        stream.emit({"type": "text-end", "id": frames.TEXT_PART_ID})
    stream.emit(*outcome.parts)
    if outcome.error is not None:
        stream.emit(frames.error_part(*outcome.error))
    stream.emit(*frames.closing_parts(interrupted=outcome.status == "awaiting_approval"))


async def _store(db: AsyncSession, deps: ChatDeps, plan: TurnPlan, outcome: _Outcome) -> None:
    session = await db.get(PilotSession, plan.session_id)
    turn = await db.get(ChatTurn, plan.turn_id)
    assistant = await db.get(SessionMessage, plan.assistant_message_id)
    if session is None or turn is None or assistant is None:
        return
    if outcome.status == "complete":
        parsed = parse_reply(outcome.raw)
        logger.info("chat turn %s markers %s", plan.turn_id, parsed.summary(len(outcome.raw)))  # UC-014
        shown = parsed.visible
        events = list(parsed.events)
        actions: list[ToolCall] = []
        for call in outcome.tool_calls:
            if call.name in TOOLS_BY_NAME:
                actions.append(call)
                continue
            decoded = decode_tool_call(call)
            if decoded.event is not None:
                events.append(decoded.event)
        if shown != outcome.shown:
            outcome.parts.append(frames.data_part("message-final", {"text": shown}))
        try:
            async with db.begin_nested():
                outcome.parts += await effects.apply(db, session, events, assistant, turn)
        except Exception:
            # UC-017: a failed side effect never aborts the turn; the reply is still stored.
            logger.exception("chat turn %s: applying the reply's markers failed", plan.turn_id)
        if actions:
            part, pause = await effects.request_approvals(db, session, plan.caller, turn, actions)
            outcome.parts.append(part)
            if pause:
                outcome.status = "awaiting_approval"
        assistant.content = shown
    else:
        assistant.content = parse_reply(outcome.raw).visible if outcome.raw else ""
    usage = {"input_tokens": outcome.input_tokens, "output_tokens": outcome.output_tokens, "model": outcome.model}
    outcome.parts.append(frames.data_part("token-usage", usage))
    # The generated title replaces only the first message's stand-in, never a title the engineer gave meanwhile.
    if outcome.title and session.title in (None, "", prompts.NEW_CHAT_TITLE, prompts.fallback_title(plan.text)):
        session.title = outcome.title
    if outcome.knowledge is not None:
        snippets, suggested = outcome.knowledge
        session.intake = {**(session.intake or {}), KNOWLEDGE_KEY: {"snippets": snippets, "suggested": suggested}}
    session.total_input_tokens += outcome.input_tokens
    session.total_output_tokens += outcome.output_tokens
    turn.status = outcome.status if outcome.status != "running" else "interrupted"
    turn.content = assistant.content
    turn.parts = outcome.parts
    turn.model = outcome.model
    turn.input_tokens, turn.output_tokens = outcome.input_tokens, outcome.output_tokens
    turn.error_code = outcome.error[0] if outcome.error else None
    turn.finished_at = utcnow()
    following = await _following_context(db, deps, session)
    await db.commit()
    if following is not None and deps.contexts is not None:
        # The version this commit gave the session: the context was read in the same transaction.
        deps.contexts.put(session.id, session.state_version, session.active_branch_id, following)


async def _following_context(db: AsyncSession, deps: ChatDeps, session: PilotSession) -> TurnContext | None:
    """The context of the conversation this turn leaves behind, for the chat's next message (never fails the turn)."""
    if deps.contexts is None or session.status not in (SessionStatus.ACTIVE, SessionStatus.PAUSED):
        return None
    try:
        return await _read_in(db, session, session.active_branch_id, session.message_seq + 1,
                              images=takes_images(deps.llm))
    except Exception:
        logger.warning("chat %s: could not keep the prompt context", session.id, exc_info=True)
        deps.contexts.forget(session.id)
        return None


# --- approvals: resuming a paused turn ----------------------------------------------------------


async def session_kind(db: AsyncSession, session_id: uuid.UUID) -> str | None:
    """Guided or chat (None when the account has no such session): routes shared by both kinds dispatch on it."""
    return await db.scalar(select(PilotSession.kind).where(PilotSession.id == session_id))


async def resume(
    db: AsyncSession, deps: ChatDeps, caller: Caller, session_id: uuid.UUID, request: ResumeIn
) -> TurnStream | None:
    """Resume a chat: continue a turn paused for approval (its stream), or wake a paused chat (None)."""
    session = await load_chat(db, caller, session_id)
    stmt = select(ChatTurn).where(ChatTurn.session_id == session.id, ChatTurn.status == "awaiting_approval")
    if request.turn_id is not None:
        stmt = stmt.where(ChatTurn.id == request.turn_id)
    paused = await db.scalar(stmt.order_by(ChatTurn.started_at.desc()).limit(1))
    if paused is None:
        if request.turn_id is None and not request.decisions and session.status == SessionStatus.PAUSED:
            await change_status(db, caller, session_id, Action.RESUME)
            return None
        raise NothingToResume("This chat has no turn waiting for approval")
    return await _resume_turn(db, deps, caller, session, paused, request)


async def _resume_turn(
    db: AsyncSession, deps: ChatDeps, caller: Caller, session: PilotSession, paused: ChatTurn, request: ResumeIn
) -> TurnStream:
    """SS-042: apply the human's decisions to a paused turn, run only approved calls, continue in a new turn."""
    # Claim the paused turn first: a second resume of the same turn finds nothing to do (never runs twice).
    claimed = await db.execute(
        update(ChatTurn)
        .where(
            ChatTurn.id == paused.id,
            ChatTurn.status == "awaiting_approval",
            ChatTurn.account_id == session.account_id,
        )
        .values(status="complete")
        .execution_options(synchronize_session=False)
    )
    if getattr(claimed, "rowcount", 0) != 1:
        await db.rollback()
        raise NothingToResume("This turn was already resumed")
    tool_deps = ToolDeps(db=db, secrets=deps.secrets, session_id=session.id, http_client=deps.http_client)
    continuation = await effects.run_decisions(db, session, caller, paused, request.decisions, tool_deps)
    turn, _, assistant = await _open_turn(db, session, caller, kind="resume", user_text=None)
    paused_reply = await db.get(SessionMessage, paused.assistant_message_id) if paused.assistant_message_id else None
    plan = _plan(session, caller, turn, assistant,
                 _last_user_text(await _conversation(db, session, await _active_branch(db, session))))
    plan.continuation = continuation
    plan.continuation_seq = paused_reply.seq if paused_reply is not None else assistant.seq
    return _launch(deps, plan)


async def regenerate(db: AsyncSession, deps: ChatDeps, caller: Caller, session_id: uuid.UUID) -> TurnStream:
    """SS-045: answer the last user message again. The replaced reply leaves the conversation (role `replaced`),
    the new one streams like any turn; a turn waiting for approval must be decided first."""
    session = await load_chat(db, caller, session_id)
    if session.status not in (SessionStatus.ACTIVE, SessionStatus.PAUSED):
        raise CannotSend(f"Cannot send messages to a {session.status} session")
    deps.llm.model_for(Purpose.CHAT)
    await _check_not_busy(db, deps.streams, session.id)
    branch = await _active_branch(db, session)
    conversation = [m for m in await _conversation(db, session, branch) if m.role in ("user", "assistant")]
    if not conversation or conversation[-1].role != "assistant":
        raise NothingToRegenerate("There is no reply to regenerate on this branch")
    if await db.scalar(select(ChatTurn.id).where(ChatTurn.session_id == session.id,
                                                 ChatTurn.status == "awaiting_approval")):
        raise NothingToRegenerate("A reply is waiting for approval; approve or reject its actions first")
    user = next((m for m in reversed(conversation) if m.role == "user"), None)
    if user is None:
        raise NothingToRegenerate("There is no message to answer again")
    for replaced in conversation[conversation.index(user) + 1:]:
        replaced.role = REPLACED
    session.status = SessionStatus.ACTIVE
    turn, _, assistant = await _open_turn(db, session, caller, kind="regenerate", user_text=None)
    plan = _plan(session, caller, turn, assistant, user.content)
    plan.user_seq = user.seq
    if takes_images(deps.llm):
        # The message is answered again as it was sent: with all its images.
        plan.images = (await history_images(db, [user.id], limit=MAX_IMAGES)).get(user.id, ())
    return _launch(deps, plan)


def _last_user_text(messages: Sequence[SessionMessage]) -> str:
    return next((m.content for m in reversed(messages) if m.role == "user"), "")
