"""Token use and cost per model, client, purpose, subject (a session or run) or day, read from llm_calls."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, assert_never

from sqlalchemy import ColumnElement, Date, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from deskpilot.llm.models import LLMCall
from deskpilot.settings import ModelPrice

GroupBy = Literal["model", "client", "purpose", "subject", "day"]
_PER_TOKEN = Decimal(1_000_000)


def cost_usd(prices: Mapping[str, ModelPrice], model: str, input_tokens: int, output_tokens: int) -> Decimal | None:
    """The dollar cost of some tokens on `model`, or None when the model has no configured price."""
    price = prices.get(model)
    if price is None:
        return None
    total = (price.input_per_mtok * input_tokens + price.output_per_mtok * output_tokens) / _PER_TOKEN
    return total.quantize(Decimal("0.000001"))


@dataclass(frozen=True, slots=True)
class UsageRow:
    key: str | None
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal | None
    # Models in this group that have no price: their tokens are in the totals but not in the cost.
    unpriced_models: tuple[str, ...]


def _key_column(group_by: GroupBy) -> ColumnElement[Any] | InstrumentedAttribute[Any]:
    match group_by:
        case "model":
            return LLMCall.model
        case "client":
            return LLMCall.client_id
        case "purpose":
            return LLMCall.purpose
        case "subject":
            return LLMCall.subject_id
        case "day":
            return cast(LLMCall.created_at, Date)
        case _:
            assert_never(group_by)


async def usage_summary(
    session: AsyncSession,
    prices: Mapping[str, ModelPrice],
    *,
    group_by: GroupBy = "model",
    since: datetime | None = None,
    until: datetime | None = None,
    subject_id: uuid.UUID | str | None = None,
    client_id: uuid.UUID | None = None,
) -> list[UsageRow]:
    """One row per group; costs are computed per model inside each group, then summed."""
    key = _key_column(group_by).label("key")
    stmt = (
        select(
            key,
            LLMCall.model,
            func.count().label("calls"),
            func.coalesce(func.sum(LLMCall.input_tokens), 0).label("input_tokens"),
            func.coalesce(func.sum(LLMCall.output_tokens), 0).label("output_tokens"),
        )
        .group_by(key, LLMCall.model)
    )
    if since is not None:
        stmt = stmt.where(LLMCall.created_at >= since)
    if until is not None:
        stmt = stmt.where(LLMCall.created_at < until)
    if subject_id is not None:
        stmt = stmt.where(LLMCall.subject_id == str(subject_id))
    if client_id is not None:
        stmt = stmt.where(LLMCall.client_id == client_id)
    return summarise([(r.key, r.model, r.calls, r.input_tokens, r.output_tokens) for r in await session.execute(stmt)],
                     prices)


@dataclass(slots=True)
class _Totals:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)
    unpriced: set[str] = field(default_factory=set)


def summarise(
    rows: Sequence[tuple[object, str, int, int, int]], prices: Mapping[str, ModelPrice]
) -> list[UsageRow]:
    """Fold (key, model, calls, input, output) rows into one UsageRow per key, largest spend first."""
    groups: dict[str | None, _Totals] = {}
    for key, model, calls, input_tokens, output_tokens in rows:
        totals = groups.setdefault(None if key is None else str(key), _Totals())
        totals.calls += calls
        totals.input_tokens += input_tokens
        totals.output_tokens += output_tokens
        cost = cost_usd(prices, model, input_tokens, output_tokens)
        if cost is None:
            totals.unpriced.add(model)
        else:
            totals.cost += cost
    result = [
        UsageRow(
            key=key,
            calls=t.calls,
            input_tokens=t.input_tokens,
            output_tokens=t.output_tokens,
            # Unknown only when nothing in the group has a price; otherwise a floor, with the gaps named.
            cost_usd=None if t.unpriced and t.cost == 0 else t.cost,
            unpriced_models=tuple(sorted(t.unpriced)),
        )
        for key, t in groups.items()
    ]
    return sorted(result, key=lambda r: (r.cost_usd or Decimal(0), r.input_tokens + r.output_tokens), reverse=True)
