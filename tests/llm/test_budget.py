"""Budgets: per-call output caps and a per-run token budget checked before each call."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from deskpilot.errors import LimitExceeded
from deskpilot.llm import LLM, Budget, BudgetExceeded
from deskpilot.llm.budget import estimate_prompt_tokens
from deskpilot.llm.messages import Message
from deskpilot.llm.testing import Reply, ScriptedModel, tool_call
from deskpilot.llm.tools import tool
from deskpilot.settings import LLMSettings


class Answer(BaseModel):
    ok: bool


@tool
async def ping() -> str:
    """Answers pong."""
    return "pong"


async def test_budget_refuses_the_call_that_could_exceed_it() -> None:
    model = ScriptedModel([Reply("first", input_tokens=40, output_tokens=30), "second"])
    llm = LLM.for_model(model)
    budget = Budget(max_tokens_per_run=150)

    await llm.text("quick", "hi", account_id=None, budget=budget, max_tokens=50)
    assert (budget.input_tokens, budget.output_tokens, budget.requests) == (40, 30, 1)
    assert budget.remaining == 80

    with pytest.raises(BudgetExceeded) as caught:
        await llm.text("quick", "hi again", account_id=None, budget=budget, max_tokens=80)

    assert len(model.requests) == 1  # nothing was sent
    assert caught.value.extra["used"] == 70
    assert isinstance(caught.value, LimitExceeded)
    assert "150 tokens" in caught.value.detail


async def test_budget_is_shared_across_kinds_of_calls() -> None:
    model = ScriptedModel(
        [
            Reply.json({"ok": True}, input_tokens=100, output_tokens=10),
            Reply("chunk of text", input_tokens=100, output_tokens=10),
        ]
    )
    llm = LLM.for_model(model, settings=LLMSettings(max_tokens_per_run=240, max_tokens_per_call=20))
    budget = llm.new_budget()

    await llm.structured("quick", "q", Answer, account_id=None, budget=budget)
    async with llm.stream("chat", "q", account_id=None, budget=budget) as stream:
        _ = [d async for d in stream]
    assert budget.total_tokens == 220
    with pytest.raises(BudgetExceeded):
        llm.stream("chat", "q", account_id=None, budget=budget)


async def test_max_tokens_is_capped_per_call() -> None:
    model = ScriptedModel(["a", "b"])
    llm = LLM.for_model(model, settings=LLMSettings(max_tokens_per_call=256))

    await llm.text("quick", "x", account_id=None)
    await llm.text("quick", "x", account_id=None, max_tokens=10_000)

    assert [r.params.max_tokens for r in model.requests] == [256, 256]


async def test_tool_runs_get_a_budget_of_their_own() -> None:
    model = ScriptedModel([Reply.calls(tool_call("ping", {}), input_tokens=500, output_tokens=100) for _ in range(5)])
    llm = LLM.for_model(model, settings=LLMSettings(max_tokens_per_run=1500, max_tokens_per_call=100))

    with pytest.raises(BudgetExceeded):
        await llm.run_tools("agent", "loop", [ping], account_id=None)

    assert len(model.requests) == 3  # 3 x 600 tokens: a 4th call could pass 1,500


def test_prompt_estimate_grows_with_the_prompt() -> None:
    short = estimate_prompt_tokens([Message.user("hi")])
    long = estimate_prompt_tokens([Message.user("hi " * 400)])
    assert 0 < short < long
    assert Budget(None).remaining is None
    Budget(None).check([Message.user("x" * 10_000)], 10**9)
