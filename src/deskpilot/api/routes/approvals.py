"""The Approvals inbox: tool calls (and later automation and agent actions) waiting for a human decision."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from deskpilot.api.deps import EngineerDep, PrincipalDep, SessionDep, StateDep
from deskpilot.api.routing import JSONRoute
from deskpilot.approvals import service as approvals
from deskpilot.approvals.errors import ApprovalExpired
from deskpilot.approvals.models import ApprovalStatus, SourceKind
from deskpilot.approvals.schemas import ApprovalOut, ApprovalPage, DecisionIn
from deskpilot.storage import utcnow

router = APIRouter(prefix="/api/v1", tags=["approvals"], route_class=JSONRoute)


@router.get("/approvals")
async def list_approvals(
    principal: PrincipalDep,
    session: SessionDep,
    status: Annotated[list[ApprovalStatus] | None, Query()] = None,
    source_kind: SourceKind | None = None,
    session_id: uuid.UUID | None = None,
    source_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ApprovalPage:
    """The account's approval requests, newest first; `status` (repeatable) defaults to `pending`.

    Statuses are effective: a pending request past its expiry is listed as `expired`, never as `pending`.
    """
    now = utcnow()
    rows, total = await approvals.list_requests(
        session,
        principal.account_id,
        statuses=status or [ApprovalStatus.PENDING],
        source_kind=source_kind,
        session_id=session_id,
        source_id=source_id,
        limit=limit,
        offset=offset,
        now=now,
    )
    return ApprovalPage(items=[ApprovalOut.of(r, now) for r in rows], total=total, limit=limit, offset=offset)


@router.get("/approvals/{approval_id}")
async def get_approval(approval_id: uuid.UUID, principal: PrincipalDep, session: SessionDep) -> ApprovalOut:
    return ApprovalOut.of(await approvals.get_request(session, principal.account_id, approval_id), utcnow())


@router.post("/approvals/{approval_id}/decision")
async def decide_approval(
    approval_id: uuid.UUID, body: DecisionIn, principal: EngineerDep, session: SessionDep, state: StateDep
) -> ApprovalOut:
    """Approve, edit (new arguments, validated like the model's), reject or approve always (engineers and up).

    The call itself runs where it was paused (the chat turn when it resumes, the automation or agent run).
    409 `approval_not_pending` when already decided, 410 `approval_expired`, 422 `approval_arguments_invalid`.
    """
    try:
        outcome = await approvals.decide(
            session,
            principal.account_id,
            approval_id,
            body.decision,
            decided_by=principal.actor,
            edited_arguments=body.edited_arguments,
            reason=body.reason,
        )
    except ApprovalExpired:
        await session.commit()  # keep the request marked expired
        raise
    await session.commit()
    await approvals.announce(state.pubsub, outcome.notifications)
    return ApprovalOut.of(outcome.request, utcnow())
