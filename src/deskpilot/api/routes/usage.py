"""LLM token use and cost for the account, by model, client, purpose, session/run or day."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from fastapi import APIRouter
from pydantic import BaseModel

from deskpilot.api.deps import LeadDep, SessionDep, StateDep
from deskpilot.api.routing import JSONRoute
from deskpilot.llm.usage import GroupBy, usage_summary

router = APIRouter(prefix="/api/v1", tags=["usage"], route_class=JSONRoute)


class UsageRowOut(BaseModel):
    key: str | None
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal | None
    unpriced_models: list[str]


class UsageOut(BaseModel):
    group_by: GroupBy
    rows: list[UsageRowOut]
    total_input_tokens: int
    total_output_tokens: int
    total_cost_usd: Decimal | None


@router.get("/usage", operation_id="get_usage")
async def get_usage(
    principal: LeadDep,
    state: StateDep,
    session: SessionDep,
    group_by: GroupBy = "model",
    since: datetime | None = None,
    until: datetime | None = None,
    subject_id: uuid.UUID | None = None,
    client_id: uuid.UUID | None = None,
) -> UsageOut:
    """Tokens and cost (from `DESKPILOT_LLM__PRICES`) of this account's LLM calls; `subject_id` = one session."""
    rows = await usage_summary(
        session, state.settings.llm.prices, group_by=group_by, since=since, until=until,
        subject_id=subject_id, client_id=client_id,
    )
    costs = [r.cost_usd for r in rows if r.cost_usd is not None]
    return UsageOut(
        group_by=group_by,
        rows=[UsageRowOut(key=r.key, calls=r.calls, input_tokens=r.input_tokens, output_tokens=r.output_tokens,
                          cost_usd=r.cost_usd, unpriced_models=list(r.unpriced_models)) for r in rows],
        total_input_tokens=sum(r.input_tokens for r in rows),
        total_output_tokens=sum(r.output_tokens for r in rows),
        total_cost_usd=sum(costs, Decimal(0)) if costs else None,
    )
