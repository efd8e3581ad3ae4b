"""Cost arithmetic and grouping of token use (pure)."""

from __future__ import annotations

from decimal import Decimal

from deskpilot.llm.usage import cost_usd, summarise
from deskpilot.settings import ModelPrice

PRICES = {"openai:gpt-4o-mini": ModelPrice(input_per_mtok=Decimal("0.15"), output_per_mtok=Decimal("0.60"))}


def test_cost_is_per_million_tokens() -> None:
    assert cost_usd(PRICES, "openai:gpt-4o-mini", 1_000_000, 1_000_000) == Decimal("0.750000")
    assert cost_usd(PRICES, "openai:gpt-4o-mini", 1_000, 500) == Decimal("0.000450")
    assert cost_usd(PRICES, "anthropic:claude", 10, 10) is None


def test_groups_sum_models_and_name_the_unpriced_ones() -> None:
    rows = summarise(
        [
            ("s1", "openai:gpt-4o-mini", 2, 1_000_000, 0),
            ("s1", "anthropic:claude", 1, 10, 10),
            ("s2", "anthropic:claude", 3, 30, 30),
            (None, "openai:gpt-4o-mini", 1, 0, 1_000_000),
        ],
        PRICES,
    )
    by_key = {r.key: r for r in rows}
    assert by_key["s1"].calls == 3
    assert by_key["s1"].cost_usd == Decimal("0.150000")
    assert by_key["s1"].unpriced_models == ("anthropic:claude",)
    assert by_key["s2"].cost_usd is None
    assert by_key[None].cost_usd == Decimal("0.600000")
    assert [r.key for r in rows][:2] == [None, "s1"]  # largest spend first
