"""FallbackModel: a wrapper that moves down a chain of models on retryable provider errors."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing

from deskpilot.llm.base import Model
from deskpilot.llm.errors import AllModelsFailed, ProviderError
from deskpilot.llm.messages import Completion, Message, RequestParams, StreamEvent

logger = logging.getLogger(__name__)


class FallbackModel(Model):
    """Tries each model in order; moves on only on retryable errors (429, 5xx, timeouts, connection errors).

    A non-retryable error (bad request, bad key) is raised at once: another provider would hide a
    configuration mistake. A stream never falls back once a text delta has reached the caller, since the
    caller would otherwise see two different answers spliced together. `RequestParams.max_fallbacks` caps how
    far down the chain one call goes (a chat turn falls back at most once).
    """

    def __init__(self, models: Sequence[Model]) -> None:
        if not models:
            raise ValueError("FallbackModel needs at least one model")
        self.models = tuple(models)
        self.name = "fallback:" + ",".join(m.name for m in self.models)

    def _chain(self, params: RequestParams) -> tuple[Model, ...]:
        if params.max_fallbacks is None:
            return self.models
        return self.models[: max(params.max_fallbacks, 0) + 1]

    async def request(self, messages: Sequence[Message], params: RequestParams) -> Completion:
        errors: list[ProviderError] = []
        chain = self._chain(params)
        last = len(chain) - 1
        for index, model in enumerate(chain):
            try:
                completion = await model.request(messages, params)
            except ProviderError as e:
                if not e.retryable:
                    raise
                errors.append(e)
                if index < last:
                    logger.warning("LLM %s failed (%s); falling back to %s", model.name, e.code, chain[index + 1].name)
                continue
            if index:
                completion.fallback_used = True
            return completion
        raise AllModelsFailed(errors, model=self.name) from errors[-1]

    async def request_stream(
        self, messages: Sequence[Message], params: RequestParams
    ) -> AsyncGenerator[StreamEvent, None]:
        errors: list[ProviderError] = []
        chain = self._chain(params)
        last = len(chain) - 1
        for index, model in enumerate(chain):
            streamed = False
            try:
                async with aclosing(model.request_stream(messages, params)) as events:
                    async for event in events:
                        if isinstance(event, str):
                            streamed = True
                        elif index:
                            event.fallback_used = True
                        yield event
                return
            except ProviderError as e:
                if streamed or not e.retryable:
                    raise
                errors.append(e)
                if index < last:
                    logger.warning("LLM %s failed (%s); falling back to %s", model.name, e.code, chain[index + 1].name)
        raise AllModelsFailed(errors, model=self.name) from errors[-1]
