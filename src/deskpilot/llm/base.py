"""The Model interface every provider adapter, test model and wrapper implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Sequence

from deskpilot.llm.messages import Completion, Message, RequestParams, StreamEvent


class Model(ABC):
    """One chat model, named "provider:model".

    Only `request` is essential. `request_stream` is optional: it yields text deltas and then exactly one
    `Completion` (full text, tool calls, usage), and raises `NotImplementedError` where unsupported.
    Implementations translate their SDK's exceptions into `deskpilot.llm.errors.ProviderError`s.
    """

    name: str

    @abstractmethod
    async def request(self, messages: Sequence[Message], params: RequestParams) -> Completion:
        """Send one request and return the model's reply."""

    def request_stream(self, messages: Sequence[Message], params: RequestParams) -> AsyncGenerator[StreamEvent, None]:
        """Stream one request: `str` deltas as they arrive, then the final `Completion`; callers may aclose() it."""
        raise NotImplementedError(f"{type(self).__name__} does not support streaming")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
