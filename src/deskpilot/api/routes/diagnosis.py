"""What a session knows and proposes: facts ("What we know"), the task lane and suggested fixes."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status
from sqlalchemy.ext.asyncio import AsyncSession

from deskpilot.api.deps import EngineerDep, Principal, PrincipalDep, SessionDep, StateDep, pilot_caller
from deskpilot.api.routing import JSONRoute
from deskpilot.diagnosis import service as diagnosis
from deskpilot.diagnosis.schemas import (
    DecisionUpdate,
    FactCreate,
    FactList,
    FactResult,
    FactUpdate,
    FixList,
    FixResult,
    LaneItemUpdate,
    OutcomeUpdate,
    PromoteRequest,
    TaskLaneState,
)
from deskpilot.pilot.engine import commit

router = APIRouter(prefix="/api/v1", tags=["diagnosis"], route_class=JSONRoute)


async def _read(session: AsyncSession, principal: Principal, session_id: uuid.UUID) -> None:
    # Reading follows Pilot's detail view: the session's team may look while it requests escalation.
    await diagnosis.check_session_access(session, pilot_caller(principal), session_id, write=False)


async def _write(session: AsyncSession, principal: Principal, session_id: uuid.UUID) -> None:
    await diagnosis.check_session_access(session, pilot_caller(principal), session_id, write=True)


# --- facts ------------------------------------------------------------------------------------------


@router.get("/sessions/{session_id}/facts")
async def list_facts(session_id: uuid.UUID, principal: PrincipalDep, session: SessionDep) -> FactList:
    """The session's active facts ("What we know"), oldest first."""
    await _read(session, principal, session_id)
    return await diagnosis.list_facts(session, account_id=principal.account_id, session_id=session_id)


@router.post("/sessions/{session_id}/facts", status_code=status.HTTP_201_CREATED)
async def add_fact(session_id: uuid.UUID, body: FactCreate, principal: EngineerDep, session: SessionDep) -> FactResult:
    """Add the engineer's own note to "What we know" (source `user_note`)."""
    await _write(session, principal, session_id)
    result = await diagnosis.add_user_note(
        session, account_id=principal.account_id, session_id=session_id, user_id=principal.user_id, body=body
    )
    await commit(session)
    return result


@router.post("/sessions/{session_id}/facts/promote", status_code=status.HTTP_201_CREATED)
async def promote_fact(
    session_id: uuid.UUID, body: PromoteRequest, principal: EngineerDep, state: StateDep, session: SessionDep
) -> FactResult:
    """Promote a task-lane item to a fact, with `proposed_text` or stated by the model (422 when it finds nothing)."""
    await _write(session, principal, session_id)
    result = await diagnosis.promote_item(
        session,
        state.llm,
        account_id=principal.account_id,
        session_id=session_id,
        user_id=principal.user_id,
        body=body,
    )
    await commit(session)
    return result


@router.patch("/sessions/{session_id}/facts/{fact_id}")
async def edit_fact(
    session_id: uuid.UUID, fact_id: uuid.UUID, body: FactUpdate, principal: EngineerDep, session: SessionDep
) -> FactResult:
    """Edit a user note or AI synthesis; a question/diagnostic_check fact is 403 `fact_not_editable`."""
    await _write(session, principal, session_id)
    result = await diagnosis.edit_fact(
        session, account_id=principal.account_id, session_id=session_id, fact_id=fact_id, body=body
    )
    await commit(session)
    return result


@router.delete("/sessions/{session_id}/facts/{fact_id}")
async def delete_fact(
    session_id: uuid.UUID, fact_id: uuid.UUID, principal: EngineerDep, session: SessionDep
) -> FactResult:
    """Remove a fact from "What we know" (kept with `deleted_at`); answers with the deleted fact."""
    await _write(session, principal, session_id)
    result = await diagnosis.delete_fact(
        session, account_id=principal.account_id, session_id=session_id, fact_id=fact_id
    )
    await commit(session)
    return result


# --- task lane --------------------------------------------------------------------------------------


@router.get("/sessions/{session_id}/task-lane")
async def get_task_lane(session_id: uuid.UUID, principal: PrincipalDep, session: SessionDep) -> TaskLaneState:
    """The current questions and actions with their status; `lane` is null when the last turn had none."""
    await _read(session, principal, session_id)
    return await diagnosis.get_task_lane(session, account_id=principal.account_id, session_id=session_id)


@router.patch("/sessions/{session_id}/task-lane/items/{item_id}")
async def update_task_lane_item(
    session_id: uuid.UUID, item_id: uuid.UUID, body: LaneItemUpdate, principal: EngineerDep, session: SessionDep
) -> TaskLaneState:
    """Check or skip a task-lane item (pending|done|skipped), with an optional answer or result."""
    await _write(session, principal, session_id)
    result = await diagnosis.update_lane_item(
        session, account_id=principal.account_id, session_id=session_id, item_id=item_id, change=body
    )
    await commit(session)
    return result


# --- suggested fixes --------------------------------------------------------------------------------


@router.get("/sessions/{session_id}/suggested-fixes")
async def list_suggested_fixes(session_id: uuid.UUID, principal: PrincipalDep, session: SessionDep) -> FixList:
    """The active suggested fix and the superseded ones, newest first."""
    await _read(session, principal, session_id)
    return await diagnosis.list_suggested_fixes(session, account_id=principal.account_id, session_id=session_id)


@router.patch("/sessions/{session_id}/suggested-fixes/{fix_id}/outcome")
async def record_fix_outcome(
    session_id: uuid.UUID, fix_id: uuid.UUID, body: OutcomeUpdate, principal: EngineerDep, session: SessionDep
) -> FixResult:
    """Record what became of a fix, or accept/reject the AI's proposed outcome (409 on a disallowed transition)."""
    await _write(session, principal, session_id)
    result = await diagnosis.record_outcome(
        session,
        account_id=principal.account_id,
        session_id=session_id,
        fix_id=fix_id,
        user_id=principal.user_id,
        body=body,
    )
    await commit(session)
    return result


@router.patch("/sessions/{session_id}/suggested-fixes/{fix_id}/decision")
async def record_fix_decision(
    session_id: uuid.UUID, fix_id: uuid.UUID, body: DecisionUpdate, principal: EngineerDep, session: SessionDep
) -> FixResult:
    """Choose how to apply the active fix: its script template, the AI's script, by hand, or none yet."""
    await _write(session, principal, session_id)
    result = await diagnosis.record_decision(
        session, account_id=principal.account_id, session_id=session_id, fix_id=fix_id, body=body
    )
    await commit(session)
    return result
