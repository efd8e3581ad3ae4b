"""Approvals service: store a paused tool call, decide it, run it exactly once, expire what nobody decided.

Functions take an AsyncSession and an `account_id` (they filter by it, so they behave the same in an account
session and in a system session) and do not commit: the caller owns the transaction. Two rules for callers:

* Claim, commit, run, record: `claim_for_execution` is the single-use gate, so commit its transaction before
  running the tool, then `record_execution` and commit again. A crash in between leaves the call claimed and
  never runs it twice.
* `decide` raises `ApprovalExpired` after marking the request expired; commit on that error to keep the mark
  (reads treat an overdue pending request as expired anyway, and `expire_overdue` catches up).

Notifications for requesters are added to the transaction and returned; publish them after the commit with
`announce(pubsub, outcome.notifications)`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, cast

from pydantic import BaseModel, ValidationError
from sqlalchemy import CursorResult, and_, func, insert, null, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from deskpilot.approvals.errors import (
    ApprovalArgumentsInvalid,
    ApprovalCallMismatch,
    ApprovalDecisionInvalid,
    ApprovalExpired,
    ApprovalNotFound,
    ApprovalNotPending,
    ApprovalToolUnknown,
)
from deskpilot.approvals.models import (
    MAX_SUMMARY,
    ApprovalGrant,
    ApprovalRequest,
    ApprovalStatus,
    Decision,
    SourceKind,
)
from deskpilot.approvals.schemas import DecisionIn, ResumeDecision
from deskpilot.approvals.tools import registry
from deskpilot.errors import ValidationFailed
from deskpilot.events import audit
from deskpilot.events.audit import Actor
from deskpilot.events.notifications import add_notification, publish_notification
from deskpilot.events.pubsub import PubSub
from deskpilot.events.schemas import NotificationOut
from deskpilot.llm.tools import Tool
from deskpilot.storage import utcnow

__all__ = [
    "DEFAULT_TTL",
    "BatchOutcome",
    "ClaimedCall",
    "DecisionOutcome",
    "announce",
    "arguments_sha256",
    "canonical_json",
    "claim_for_execution",
    "decide",
    "decide_batch",
    "expire_overdue",
    "get_request",
    "has_grant",
    "list_grants",
    "list_pending",
    "list_requests",
    "list_source",
    "record_execution",
    "request_approval",
    "session_link",
    "validate_arguments",
]

logger = logging.getLogger(__name__)

DEFAULT_TTL: Final = timedelta(hours=24)
MISSING_DECISION_REASON: Final = "no decision was given for this call when the turn resumed"
RESOURCE: Final = "approval_request"
_DECIDED_STATUS: Final = {
    Decision.APPROVE: ApprovalStatus.APPROVED,
    Decision.EDIT: ApprovalStatus.APPROVED,
    Decision.APPROVE_ALWAYS: ApprovalStatus.APPROVED,
    Decision.REJECT: ApprovalStatus.REJECTED,
}
_VERBS: Final = {
    Decision.APPROVE: "approved",
    Decision.EDIT: "approved with edits",
    Decision.APPROVE_ALWAYS: "approved for the rest of the session",
    Decision.REJECT: "rejected",
}


# --- pure helpers ------------------------------------------------------------------------------------


def canonical_json(value: object) -> str:
    """Sorted keys, no whitespace, UTF-8 kept: equal documents give equal text (and equal hashes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def arguments_sha256(arguments: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(arguments).encode()).hexdigest()


def validate_arguments(
    tool_name: str, args_model: type[BaseModel], arguments: str | Mapping[str, Any]
) -> dict[str, Any]:
    """`arguments` (the model's JSON text or a mapping) validated by `args_model`, as the JSON document to store.

    Raises `ApprovalArgumentsInvalid` (422) naming each bad field.
    """
    try:
        if isinstance(arguments, str):
            parsed = args_model.model_validate_json(arguments or "{}")
        else:
            parsed = args_model.model_validate(dict(arguments))
    except ValidationError as e:
        raise ApprovalArgumentsInvalid.from_validation(tool_name, e) from e
    dumped: dict[str, Any] = parsed.model_dump(mode="json", by_alias=True)
    return dumped


def _summary(tool_name: str, arguments: Mapping[str, Any], summary: str | None) -> str:
    text = (summary or "").strip()
    if not text:
        shown = ", ".join(f"{k}={canonical_json(v)}" for k, v in arguments.items())
        text = f"{tool_name}({shown})"
    text = " ".join(text.split())
    return text if len(text) <= MAX_SUMMARY else text[: MAX_SUMMARY - 1] + "…"


def session_link(request: ApprovalRequest) -> str | None:
    """Where the paused call's conversation lives in the console, when it has one."""
    if request.session_id is None:
        return None
    prefix = "/chat" if request.source_kind is SourceKind.CHAT else "/pilot"
    return f"{prefix}/{request.session_id}"


def _overdue(now: datetime) -> ColumnElement[bool]:
    return and_(ApprovalRequest.status == ApprovalStatus.PENDING, ApprovalRequest.expires_at <= now)


def _open(now: datetime) -> ColumnElement[bool]:
    return and_(ApprovalRequest.status == ApprovalStatus.PENDING, ApprovalRequest.expires_at > now)


def _rowcount(result: object) -> int:
    assert isinstance(result, CursorResult)
    return result.rowcount


# --- outcomes ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecisionOutcome:
    """A decided request, whether a grant was created, and the requester's notification to publish."""

    request: ApprovalRequest
    grant_created: bool = False
    notifications: list[NotificationOut] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What a resume decided: every request of the source (oldest first) and the approved calls left to run.

    `to_run` holds approved requests nobody has claimed yet; run each through `claim_for_execution`, which
    hands its arguments out once. `rejected_missing` lists requests rejected because no decision named them;
    `expired` those that expired before the resume (they never run).
    """

    requests: list[ApprovalRequest]
    to_run: list[ApprovalRequest]
    rejected_missing: list[uuid.UUID]
    expired: list[uuid.UUID]
    notifications: list[NotificationOut] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ClaimedCall:
    """The one hand-out of an approved call: run `tool_name` with `arguments` (already validated)."""

    request_id: uuid.UUID
    tool_name: str
    tool_call_id: str
    arguments: dict[str, Any]
    arguments_sha256: str
    source_id: uuid.UUID
    session_id: uuid.UUID | None

    @property
    def arguments_json(self) -> str:
        """The arguments as JSON text, for `Tool.validate` / `Tool.call`."""
        return canonical_json(self.arguments)


async def announce(pubsub: PubSub, notifications: Sequence[NotificationOut]) -> None:
    """Publish the notifications a decision added, after the caller committed them; best effort."""
    for notification in notifications:
        await publish_notification(pubsub, notification)


# --- requesting --------------------------------------------------------------------------------------


async def request_approval(
    session: AsyncSession,
    account_id: uuid.UUID,
    *,
    tool: Tool | type[BaseModel],
    tool_call_id: str,
    arguments: str | Mapping[str, Any],
    source_kind: SourceKind,
    source_id: uuid.UUID,
    session_id: uuid.UUID | None = None,
    requested_by_id: uuid.UUID | None = None,
    tool_name: str | None = None,
    summary: str | None = None,
    ttl: timedelta = DEFAULT_TTL,
    now: datetime | None = None,
) -> ApprovalRequest:
    """Store a paused tool call waiting for a human; the arguments are validated before anything is stored.

    `tool` is the `Tool` (which is marked as needing approval if it was not) or its argument model, then with
    `tool_name`. Idempotent per call: the same `(source_kind, source_id, tool_call_id)` with the same tool and
    arguments returns the stored request; with others it raises `ApprovalCallMismatch`.
    Raises `ApprovalArgumentsInvalid` (nothing stored) when the arguments do not fit.
    """
    if isinstance(tool, Tool):
        registry.register(tool)
        name, args_model = tool.name, tool.args_model
    else:
        if not tool_name:
            raise ValueError("tool_name is required when an argument model is given instead of a Tool")
        name, args_model = tool_name, tool
    if tool_name is not None and tool_name != name:
        raise ValueError(f"tool_name {tool_name!r} differs from the tool's name {name!r}")
    if ttl <= timedelta(0):
        raise ValidationFailed(f"approval lifetime must be positive, got {ttl}")
    if not tool_call_id:
        raise ValidationFailed("a tool call id is required to bind the approval to its call")
    validated = validate_arguments(name, args_model, arguments)
    digest = arguments_sha256(validated)
    existing = await session.scalar(
        select(ApprovalRequest).where(
            ApprovalRequest.account_id == account_id,
            ApprovalRequest.source_kind == source_kind,
            ApprovalRequest.source_id == source_id,
            ApprovalRequest.tool_call_id == tool_call_id,
        )
    )
    if existing is not None:
        if existing.tool_name == name and existing.arguments == validated:
            return existing
        raise ApprovalCallMismatch(
            f"tool call {tool_call_id!r} of {source_kind.value} {str(source_id)!r} is already waiting with "
            f"other arguments or another tool"
        )
    created = now or utcnow()
    request = ApprovalRequest(
        id=uuid.uuid4(),
        account_id=account_id,
        source_kind=source_kind,
        source_id=source_id,
        session_id=session_id,
        requested_by_id=requested_by_id,
        tool_name=name,
        tool_call_id=tool_call_id,
        arguments=validated,
        arguments_sha256=digest,
        summary=_summary(name, validated, summary),
        status=ApprovalStatus.PENDING,
        expires_at=created + ttl,
        created_at=created,
    )
    session.add(request)
    await session.flush()
    return request


# --- reading -----------------------------------------------------------------------------------------


async def get_request(session: AsyncSession, account_id: uuid.UUID, request_id: uuid.UUID) -> ApprovalRequest:
    found = await session.scalar(
        select(ApprovalRequest)
        .where(ApprovalRequest.id == request_id, ApprovalRequest.account_id == account_id)
        .execution_options(populate_existing=True)
    )
    if found is None:
        raise ApprovalNotFound(f"approval request {str(request_id)!r} not found")
    return found


def _status_clause(statuses: Collection[ApprovalStatus], now: datetime) -> ColumnElement[bool]:
    """Effective status: an overdue pending request counts as expired, not pending."""
    clauses: list[ColumnElement[bool]] = []
    stored = [s for s in statuses if s not in (ApprovalStatus.PENDING, ApprovalStatus.EXPIRED)]
    if stored:
        clauses.append(ApprovalRequest.status.in_(stored))
    if ApprovalStatus.PENDING in statuses:
        clauses.append(_open(now))
    if ApprovalStatus.EXPIRED in statuses:
        clauses.append(or_(ApprovalRequest.status == ApprovalStatus.EXPIRED, _overdue(now)))
    return or_(*clauses)


async def list_requests(
    session: AsyncSession,
    account_id: uuid.UUID,
    *,
    statuses: Collection[ApprovalStatus] | None = None,
    source_kind: SourceKind | None = None,
    session_id: uuid.UUID | None = None,
    source_id: uuid.UUID | None = None,
    limit: int = 50,
    offset: int = 0,
    now: datetime | None = None,
) -> tuple[list[ApprovalRequest], int]:
    """A page of the account's requests, newest first, and how many match in all (statuses are effective)."""
    now = now or utcnow()
    criteria: list[ColumnElement[bool]] = [ApprovalRequest.account_id == account_id]
    if statuses:
        criteria.append(_status_clause(statuses, now))
    if source_kind is not None:
        criteria.append(ApprovalRequest.source_kind == source_kind)
    if session_id is not None:
        criteria.append(ApprovalRequest.session_id == session_id)
    if source_id is not None:
        criteria.append(ApprovalRequest.source_id == source_id)
    total = await session.scalar(select(func.count()).select_from(ApprovalRequest).where(*criteria))
    rows = await session.scalars(
        select(ApprovalRequest)
        .where(*criteria)
        .order_by(ApprovalRequest.created_at.desc(), ApprovalRequest.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows), int(total or 0)


async def list_pending(
    session: AsyncSession,
    account_id: uuid.UUID,
    *,
    source_kind: SourceKind | None = None,
    session_id: uuid.UUID | None = None,
    limit: int = 100,
    now: datetime | None = None,
) -> list[ApprovalRequest]:
    """The account's inbox: requests still waiting and not overdue, newest first."""
    rows, _total = await list_requests(
        session,
        account_id,
        statuses=[ApprovalStatus.PENDING],
        source_kind=source_kind,
        session_id=session_id,
        limit=limit,
        now=now,
    )
    return rows


async def list_source(session: AsyncSession, account_id: uuid.UUID, source_id: uuid.UUID) -> list[ApprovalRequest]:
    """Every request one turn or run made, in the order it made them."""
    rows = await session.scalars(
        select(ApprovalRequest)
        .where(ApprovalRequest.account_id == account_id, ApprovalRequest.source_id == source_id)
        .order_by(ApprovalRequest.created_at, ApprovalRequest.id)
        .execution_options(populate_existing=True)
    )
    return list(rows)


async def has_grant(session: AsyncSession, account_id: uuid.UUID, session_id: uuid.UUID, tool_name: str) -> bool:
    """Whether someone chose "approve always" for `tool_name` in this session: run its calls without asking."""
    found = await session.scalar(
        select(ApprovalGrant.id).where(
            ApprovalGrant.account_id == account_id,
            ApprovalGrant.session_id == session_id,
            ApprovalGrant.tool_name == tool_name,
        )
    )
    return found is not None


async def list_grants(session: AsyncSession, account_id: uuid.UUID, session_id: uuid.UUID) -> list[ApprovalGrant]:
    rows = await session.scalars(
        select(ApprovalGrant)
        .where(ApprovalGrant.account_id == account_id, ApprovalGrant.session_id == session_id)
        .order_by(ApprovalGrant.tool_name)
    )
    return list(rows)


# --- deciding ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    """A checked decision, ready to write: the arguments that will run and their hash."""

    decision: Decision
    edited_arguments: dict[str, Any] | None
    sha256: str
    reason: str | None


def _plan(request: ApprovalRequest, item: DecisionIn, args_model: type[BaseModel] | None) -> _Plan:
    if item.decision is Decision.EDIT:
        if item.edited_arguments is None:
            raise ApprovalDecisionInvalid("an 'edit' decision needs edited_arguments")
        model = args_model or registry.args_model(request.tool_name)
        if model is None:
            raise ApprovalToolUnknown(
                f"tool {request.tool_name!r} is not registered in this server, so edited arguments cannot be "
                "validated; approve or reject the call as it is"
            )
        edited = validate_arguments(request.tool_name, model, item.edited_arguments)
        return _Plan(item.decision, edited, arguments_sha256(edited), item.reason)
    if item.edited_arguments is not None:
        raise ApprovalDecisionInvalid(f"edited_arguments go with an 'edit' decision, not {item.decision.value!r}")
    if item.decision is Decision.APPROVE_ALWAYS and request.session_id is None:
        raise ApprovalDecisionInvalid("'approve_always' is for calls made in a session; this one has none")
    return _Plan(item.decision, None, arguments_sha256(request.arguments), item.reason)


async def _mark_expired(session: AsyncSession, request: ApprovalRequest, now: datetime) -> bool:
    changed = _rowcount(
        await session.execute(
            update(ApprovalRequest)
            .where(ApprovalRequest.id == request.id, _overdue(now))
            .values(status=ApprovalStatus.EXPIRED)
            .execution_options(synchronize_session=False)
        )
    )
    if changed:
        audit.record(
            session,
            account_id=request.account_id,
            actor=Actor.system("approvals"),
            action="approval.expire",
            resource_type=RESOURCE,
            resource_id=request.id,
            details={"tool_name": request.tool_name, "expires_at": request.expires_at.isoformat()},
        )
    await session.refresh(request)
    return bool(changed)


def _refuse(request: ApprovalRequest, now: datetime) -> ApprovalExpired | ApprovalNotPending:
    if request.status is ApprovalStatus.EXPIRED or (
        request.status is ApprovalStatus.PENDING and request.expires_at <= now
    ):
        return ApprovalExpired(
            f"approval request {str(request.id)!r} expired at {request.expires_at.isoformat()}; the call will not run",
            extra={"approval_status": ApprovalStatus.EXPIRED.value},
        )
    return ApprovalNotPending(
        f"approval request {str(request.id)!r} is already {request.status.value}",
        extra={"approval_status": request.status.value},
    )


async def _apply(
    session: AsyncSession, request: ApprovalRequest, plan: _Plan, decided_by: Actor, now: datetime
) -> DecisionOutcome:
    """Write one decision with a compare-and-set on `status = 'pending'`: of two deciders, one wins."""
    changed = _rowcount(
        await session.execute(
            update(ApprovalRequest)
            .where(ApprovalRequest.id == request.id, _open(now))
            .values(
                status=_DECIDED_STATUS[plan.decision],
                decision=plan.decision,
                # SQL NULL, not the JSON document `null`, when the arguments were not edited.
                edited_arguments=plan.edited_arguments if plan.edited_arguments is not None else null(),
                arguments_sha256=plan.sha256,
                decided_by_id=decided_by.user_id,
                decided_at=now,
                reason=plan.reason,
            )
            .execution_options(synchronize_session=False)
        )
    )
    await session.refresh(request)
    if not changed:
        raise _refuse(request, now)
    grant_created = False
    if plan.decision is Decision.APPROVE_ALWAYS and request.session_id is not None:
        grant_created = await _grant(
            session, request.account_id, request.session_id, request.tool_name, decided_by.user_id, now
        )
    audit.record(
        session,
        account_id=request.account_id,
        actor=decided_by,
        action=f"approval.{plan.decision.value}",
        resource_type=RESOURCE,
        resource_id=request.id,
        details={
            "tool_name": request.tool_name,
            "tool_call_id": request.tool_call_id,
            "source_kind": request.source_kind.value,
            "source_id": str(request.source_id),
            "arguments_sha256": plan.sha256,
            "reason": plan.reason,
            "grant_created": grant_created,
        },
    )
    notifications = []
    if request.requested_by_id is not None and request.requested_by_id != decided_by.user_id:
        notifications.append(
            add_notification(
                session,
                account_id=request.account_id,
                user_id=request.requested_by_id,
                kind="approval.decided",
                title=f"{decided_by.label} {_VERBS[plan.decision]} {request.tool_name}: {request.summary}",
                body=plan.reason or "",
                link=session_link(request) or "/approvals",
            )
        )
    return DecisionOutcome(request=request, grant_created=grant_created, notifications=notifications)


async def _grant(
    session: AsyncSession,
    account_id: uuid.UUID,
    session_id: uuid.UUID,
    tool_name: str,
    granted_by_id: uuid.UUID | None,
    now: datetime,
) -> bool:
    """Insert the grant unless it exists (ON CONFLICT DO NOTHING, so two deciders cannot collide)."""
    values = {
        "id": uuid.uuid4(),
        "account_id": account_id,
        "session_id": session_id,
        "tool_name": tool_name,
        "granted_by_id": granted_by_id,
        "created_at": now,
    }
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(ApprovalGrant).values(values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(ApprovalGrant).values(values).on_conflict_do_nothing()
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        if await has_grant(session, account_id, session_id, tool_name):
            return False
        stmt = insert(ApprovalGrant).values(values)
    return _rowcount(await session.execute(stmt)) > 0


async def decide(
    session: AsyncSession,
    account_id: uuid.UUID,
    request_id: uuid.UUID,
    decision: Decision,
    *,
    decided_by: Actor,
    edited_arguments: Mapping[str, Any] | str | None = None,
    reason: str | None = None,
    args_model: type[BaseModel] | None = None,
    now: datetime | None = None,
) -> DecisionOutcome:
    """Decide one pending, unexpired request; writes an audit event and notifies the requester if not them.

    `edit` validates `edited_arguments` with the tool's argument model (`args_model`, else the one registered
    by `requires_approval`) and re-hashes them; `approve_always` also grants the tool for the session.
    Raises `ApprovalNotFound`, `ApprovalNotPending` (409), `ApprovalExpired` (410, after marking the request
    expired: commit to keep that), `ApprovalArgumentsInvalid` or `ApprovalDecisionInvalid` (422),
    `ApprovalToolUnknown` (409).
    """
    now = now or utcnow()
    request = await get_request(session, account_id, request_id)
    if isinstance(edited_arguments, str):
        try:
            loaded = json.loads(edited_arguments)
        except ValueError as e:
            raise ApprovalArgumentsInvalid(
                f"edited arguments are not valid JSON: {e}",
                extra={"errors": [{"field": "(arguments)", "message": str(e)}]},
            ) from e
        if not isinstance(loaded, dict):
            raise ApprovalArgumentsInvalid(
                "edited arguments must be a JSON object",
                extra={"errors": [{"field": "(arguments)", "message": "not an object"}]},
            )
        edited_arguments = loaded
    if request.status is ApprovalStatus.PENDING and request.expires_at <= now:
        await _mark_expired(session, request, now)
    if request.status is not ApprovalStatus.PENDING:
        raise _refuse(request, now)
    item = DecisionIn(
        decision=decision,
        reason=reason,
        edited_arguments=dict(edited_arguments) if edited_arguments is not None else None,
    )
    return await _apply(session, request, _plan(request, item, args_model), decided_by, now)


def _same_decision(request: ApprovalRequest, plan: _Plan) -> bool:
    return request.decision is plan.decision and request.arguments_sha256 == plan.sha256


async def decide_batch(
    session: AsyncSession,
    account_id: uuid.UUID,
    source_id: uuid.UUID,
    decisions: Sequence[ResumeDecision],
    *,
    decided_by: Actor,
    args_models: Mapping[str, type[BaseModel]] | None = None,
    now: datetime | None = None,
) -> BatchOutcome:
    """Route a resume's decisions to the paused calls of one turn or run (SS-042) and say what to run.

    Each decision names its call by `request_id` or `tool_call_id`. Every still-pending request of the source
    without a decision is rejected (it never runs); overdue ones are marked expired. Everything is checked
    before anything is written. Idempotent: a request already decided the same way is left alone, so the
    same payload sent twice changes nothing the second time, and `to_run` lists only approved calls not yet
    claimed. A decision that contradicts an earlier one raises `ApprovalNotPending`; a decision naming no
    call of this source, or two decisions for one call, raise `ApprovalDecisionInvalid`.
    """
    now = now or utcnow()
    requests = await list_source(session, account_id, source_id)
    if not requests:
        raise ApprovalNotFound(f"no approval requests for {str(source_id)!r}")
    by_id = {r.id: r for r in requests}
    by_call = {r.tool_call_id: r for r in requests}
    chosen: dict[uuid.UUID, ResumeDecision] = {}
    for item in decisions:
        target = by_id.get(item.request_id) if item.request_id is not None else by_call.get(item.tool_call_id or "")
        if target is None or (item.tool_call_id is not None and target.tool_call_id != item.tool_call_id):
            named = str(item.request_id) if item.request_id is not None else item.tool_call_id
            raise ApprovalDecisionInvalid(f"no paused call {named!r} in {str(source_id)!r}")
        if target.id in chosen:
            raise ApprovalDecisionInvalid(f"two decisions for the call {target.tool_call_id!r}")
        chosen[target.id] = item

    models = args_models or {}
    plans: dict[uuid.UUID, _Plan] = {}
    for request in requests:
        given = chosen.get(request.id)
        overdue = request.status is ApprovalStatus.PENDING and request.expires_at <= now
        if request.status is ApprovalStatus.EXPIRED or overdue:
            continue
        if given is None:
            if request.status is ApprovalStatus.PENDING:
                plans[request.id] = _Plan(Decision.REJECT, None, request.arguments_sha256, MISSING_DECISION_REASON)
            continue
        plan = _plan(request, given, models.get(request.tool_name))
        if request.status is ApprovalStatus.PENDING:
            plans[request.id] = plan
        elif not _same_decision(request, plan):
            raise ApprovalNotPending(
                f"the call {request.tool_call_id!r} was already decided ({request.decision or 'none'}, now "
                f"{request.status.value}); a different decision cannot replace it",
                extra={"approval_status": request.status.value},
            )

    notifications: list[NotificationOut] = []
    rejected_missing: list[uuid.UUID] = []
    expired: list[uuid.UUID] = []
    for request in requests:
        if request.status is ApprovalStatus.PENDING and request.expires_at <= now:
            await _mark_expired(session, request, now)
        if request.status is ApprovalStatus.EXPIRED:
            expired.append(request.id)
            continue
        planned = plans.get(request.id)
        if planned is None:
            continue
        try:
            outcome = await _apply(session, request, planned, decided_by, now)
        except ApprovalNotPending:
            # A concurrent resume with the same payload decided it first: the same outcome, nothing to redo.
            if _same_decision(request, planned):
                continue
            raise
        notifications += outcome.notifications
        if request.id not in chosen:
            rejected_missing.append(request.id)
    to_run = [r for r in requests if r.status is ApprovalStatus.APPROVED and r.executed_at is None]
    return BatchOutcome(
        requests=requests,
        to_run=to_run,
        rejected_missing=rejected_missing,
        expired=expired,
        notifications=notifications,
    )


# --- running -----------------------------------------------------------------------------------------


async def claim_for_execution(
    session: AsyncSession, account_id: uuid.UUID, request_id: uuid.UUID, *, now: datetime | None = None
) -> ClaimedCall | None:
    """Hand out an approved call's arguments exactly once; None when it is not approved or already claimed.

    One conditional `UPDATE … SET executed_at = now WHERE status = 'approved' AND executed_at IS NULL
    RETURNING …`: of any number of concurrent claims, one gets the call. Commit before running the tool.
    A stored hash that no longer matches the arguments fails the request instead of running it.
    """
    now = now or utcnow()
    row = (
        await session.execute(
            update(ApprovalRequest)
            .where(
                ApprovalRequest.id == request_id,
                ApprovalRequest.account_id == account_id,
                ApprovalRequest.status == ApprovalStatus.APPROVED,
                ApprovalRequest.executed_at.is_(None),
            )
            .values(executed_at=now)
            .returning(
                ApprovalRequest.tool_name,
                ApprovalRequest.tool_call_id,
                ApprovalRequest.arguments,
                ApprovalRequest.edited_arguments,
                ApprovalRequest.arguments_sha256,
                ApprovalRequest.source_id,
                ApprovalRequest.session_id,
            )
            .execution_options(synchronize_session=False)
        )
    ).one_or_none()
    if row is None:
        return None
    tool_name, tool_call_id, arguments, edited, digest, source_id, session_id = cast(
        tuple[str, str, dict[str, Any], dict[str, Any] | None, str, uuid.UUID, uuid.UUID | None], tuple(row)
    )
    effective: dict[str, Any] = edited if edited is not None else arguments
    if arguments_sha256(effective) != digest:
        logger.error("approval %s: stored arguments do not match their approved hash; not running", request_id)
        await _finish(session, request_id, ApprovalStatus.FAILED, "arguments changed after approval; not run")
        return None
    return ClaimedCall(
        request_id=request_id,
        tool_name=tool_name,
        tool_call_id=tool_call_id,
        arguments=effective,
        arguments_sha256=digest,
        source_id=source_id,
        session_id=session_id,
    )


async def _finish(session: AsyncSession, request_id: uuid.UUID, status: ApprovalStatus, result: str | None) -> int:
    return _rowcount(
        await session.execute(
            update(ApprovalRequest)
            .where(
                ApprovalRequest.id == request_id,
                ApprovalRequest.status == ApprovalStatus.APPROVED,
                ApprovalRequest.executed_at.is_not(None),
            )
            .values(status=status, result=result)
            .execution_options(synchronize_session=False)
        )
    )


async def record_execution(
    session: AsyncSession,
    account_id: uuid.UUID,
    request_id: uuid.UUID,
    *,
    result: str | None = None,
    error: str | None = None,
) -> ApprovalRequest:
    """Store how a claimed call ended: `executed` with its result, or `failed` with `error`.

    Raises `ApprovalNotPending` when the request was not claimed or already has an outcome.
    """
    request = await get_request(session, account_id, request_id)
    status = ApprovalStatus.FAILED if error is not None else ApprovalStatus.EXECUTED
    if not await _finish(session, request_id, status, error if error is not None else result):
        await session.refresh(request)
        raise ApprovalNotPending(
            f"approval request {str(request_id)!r} is {request.status.value} and "
            f"{'was claimed' if request.executed_at else 'was never claimed'}; it cannot record a run",
            extra={"approval_status": request.status.value},
        )
    await session.refresh(request)
    audit.record(
        session,
        account_id=account_id,
        actor=Actor.system("approvals"),
        action=f"approval.{status.value}",
        resource_type=RESOURCE,
        resource_id=request_id,
        details={"tool_name": request.tool_name, "tool_call_id": request.tool_call_id},
    )
    return request


# --- housekeeping ------------------------------------------------------------------------------------


async def expire_overdue(
    session: AsyncSession, *, account_id: uuid.UUID | None = None, now: datetime | None = None
) -> int:
    """Mark every overdue pending request expired (all accounts from a system session); returns how many."""
    now = now or utcnow()
    stmt = update(ApprovalRequest).where(_overdue(now))
    if account_id is not None:
        stmt = stmt.where(ApprovalRequest.account_id == account_id)
    rows = (
        await session.execute(
            stmt.values(status=ApprovalStatus.EXPIRED)
            .returning(ApprovalRequest.id, ApprovalRequest.account_id, ApprovalRequest.tool_name)
            .execution_options(synchronize_session=False)
        )
    ).all()
    for request_id, owner, tool_name in rows:
        audit.record(
            session,
            account_id=owner,
            actor=Actor.system("approvals"),
            action="approval.expire",
            resource_type=RESOURCE,
            resource_id=request_id,
            details={"tool_name": tool_name},
        )
    if rows:
        logger.info("expired %d overdue approval requests", len(rows))
    return len(rows)
