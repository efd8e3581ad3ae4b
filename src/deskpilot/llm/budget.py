"""Token budget of one run, accumulated across its calls and checked before each one."""

from __future__ import annotations

from collections.abc import Sequence

from deskpilot.llm.errors import BudgetExceeded
from deskpilot.llm.messages import Message

# Rough size of a token in characters, for the pre-call estimate only (real usage comes from the provider).
CHARS_PER_TOKEN = 4


def estimate_prompt_tokens(messages: Sequence[Message]) -> int:
    """A cheap upper-leaning estimate of the prompt's tokens; no tokenizer is loaded for this."""
    chars = 0
    for message in messages:
        chars += len(message.content) + 16
        for call in message.tool_calls:
            chars += len(call.name) + len(call.arguments)
    return chars // CHARS_PER_TOKEN


class Budget:
    """Tokens a run (a pilot step, an agent run, a chat turn) may spend across all of its LLM calls.

    A call is refused with `BudgetExceeded`, before anything is sent, when its worst case (tokens used so
    far + estimated prompt tokens + the call's max_tokens) would pass `max_tokens_per_run`. Usage is added
    from the provider's real counts after each call. Share one Budget between the calls of one run.
    """

    __slots__ = ("input_tokens", "max_tokens_per_run", "output_tokens", "requests")

    def __init__(self, max_tokens_per_run: int | None) -> None:
        self.max_tokens_per_run = max_tokens_per_run
        self.input_tokens = 0
        self.output_tokens = 0
        self.requests = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def remaining(self) -> int | None:
        if self.max_tokens_per_run is None:
            return None
        return max(self.max_tokens_per_run - self.total_tokens, 0)

    def check(self, messages: Sequence[Message], max_tokens: int) -> None:
        """Raise `BudgetExceeded` if a call with this prompt and output cap could pass the budget."""
        limit = self.max_tokens_per_run
        if limit is None:
            return
        prompt = estimate_prompt_tokens(messages)
        if self.total_tokens + prompt + max_tokens > limit:
            raise BudgetExceeded(
                f"the run's LLM budget of {limit} tokens would be exceeded: {self.total_tokens} used, "
                f"the next call may need up to {prompt + max_tokens} (prompt ~{prompt} + max_tokens {max_tokens})",
                extra={"limit": limit, "used": self.total_tokens, "needed": prompt + max_tokens},
            )

    def add(self, input_tokens: int, output_tokens: int) -> None:
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.requests += 1

    def __repr__(self) -> str:
        return f"Budget(used={self.total_tokens}, limit={self.max_tokens_per_run})"
