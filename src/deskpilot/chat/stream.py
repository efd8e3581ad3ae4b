"""Vercel AI SDK UI message stream (v1) frames, and the in-process buffer a turn's stream is read from."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from deskpilot.chat.relay import TurnRelay

# SS-034: the headers an AI SDK client checks.
STREAM_HEADERS: Final[Mapping[str, str]] = {
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    "X-Accel-Buffering": "no",
    "x-vercel-ai-ui-message-stream": "v1",
}
DONE: Final = "[DONE]"
TEXT_PART_ID: Final = "text-1"
# How long a finished turn's frames stay in memory for a client that reconnects (then: the stored final state).
KEEP_FINISHED_S: Final = 120.0


def frame_data(part: Mapping[str, Any] | str) -> str:
    """A part as an SSE frame's data: its JSON, or the literal [DONE]."""
    return part if isinstance(part, str) else json.dumps(part, separators=(",", ":"), default=str)


def frame(event_id: int, data: str) -> str:
    """One SSE frame: `id:` then `data:` (`frame_data`)."""
    return f"id: {event_id}\ndata: {data}\n\n"


def encode(event_id: int, part: Mapping[str, Any] | str) -> str:
    """One SSE frame of a part."""
    return frame(event_id, frame_data(part))


def data_part(name: str, data: object) -> dict[str, Any]:
    """A custom `data-<name>` part (SS-034)."""
    return {"type": f"data-{name}", "data": data}


def opening_parts(message_id: uuid.UUID, turn_id: uuid.UUID) -> list[dict[str, Any]]:
    """SS-035: start, start-step, the turn id, busy."""
    return [
        {"type": "start", "messageId": str(message_id)},
        {"type": "start-step"},
        data_part("turn-info", {"chat_turn_id": str(turn_id)}),
        data_part("turn-status", {"status": "busy"}),
    ]


def thinking_part(query: str, *, images: int = 0) -> dict[str, Any]:
    """SS-037: the first thinking step the console shows while the model starts ("[N image(s)]" for images)."""
    shown = [f"{query[:80]}{'...' if len(query) > 80 else ''}"] if query else []
    if images:
        shown.append(f"[{images} image{'s' if images != 1 else ''}]")
    item = f"Processing: {' '.join(shown)}" if shown else "Processing: (message)"
    return data_part("thinking-step", {"id": "thinking-1", "title": "Understanding your request", "items": [item]})


def closing_parts(*, interrupted: bool = False) -> list[dict[str, Any] | str]:
    """SS-035 (idle, finish-step, finish, [DONE]); SS-041: an interrupted turn ends without the idle frame."""
    tail: list[dict[str, Any] | str] = [{"type": "finish-step"}, {"type": "finish"}, DONE]
    return tail if interrupted else [data_part("turn-status", {"status": "idle"}), *tail]


def error_part(code: str, text: str) -> dict[str, Any]:
    return {"type": "error", "errorText": text, "errorCode": code}


def replay_parts(
    message_id: uuid.UUID | None,
    turn_id: uuid.UUID,
    content: str,
    parts: Sequence[Mapping[str, Any]],
    *,
    status: str,
    error: tuple[str, str] | None = None,
) -> list[dict[str, Any] | str]:
    """A finished turn told again from its stored state: the whole reply, its data parts and the ending."""
    out: list[dict[str, Any] | str] = [
        {"type": "start", "messageId": str(message_id) if message_id else str(turn_id)},
        {"type": "start-step"},
        data_part("turn-info", {"chat_turn_id": str(turn_id), "replay": True}),
    ]
    if content:
        out += [
            {"type": "text-start", "id": TEXT_PART_ID},
            {"type": "text-delta", "id": TEXT_PART_ID, "delta": content},
            {"type": "text-end", "id": TEXT_PART_ID},
        ]
    out += [dict(p) for p in parts]
    if error is not None:
        out.append(error_part(*error))
    out += closing_parts(interrupted=status == "awaiting_approval")
    return out


class TurnStream:
    """The frames of one live turn, in order; any number of readers follow it from any event id."""

    __slots__ = ("_changed", "done", "finished_at", "listener", "parts", "turn_id")

    def __init__(self, turn_id: uuid.UUID) -> None:
        self.turn_id = turn_id
        self.parts: list[dict[str, Any] | str] = []
        self.done = False
        self.finished_at: float | None = None
        self._changed = asyncio.Event()
        # Told of every emitted batch with the id of its first frame (chat.relay copies them to Redis).
        self.listener: Callable[[int, tuple[dict[str, Any] | str, ...]], None] | None = None

    def emit(self, *parts: dict[str, Any] | str) -> None:
        if self.done:
            return
        if self.listener is not None and parts:
            self.listener(len(self.parts) + 1, parts)
        self.parts.extend(parts)
        if parts and parts[-1] == DONE:
            self.done = True
            self.finished_at = time.monotonic()
        self._changed.set()
        self._changed = asyncio.Event()

    def close(self) -> None:
        """End the stream for its readers even if [DONE] was never emitted (the turn task died)."""
        if not self.done:
            self.done = True
            self.finished_at = time.monotonic()
            self._changed.set()

    @property
    def last_id(self) -> int:
        return len(self.parts)

    async def follow(self, after: int = 0, *, batched: bool = False) -> AsyncIterator[str]:
        """Encoded frames with an id greater than `after` (ids count from 1), then those still to come.

        `batched` joins the frames that are there at once into one string: one write to the client instead of
        one per frame (a turn opens with seven), which is most of what a frame costs the server.
        """
        sent = max(after, 0)
        while True:
            changed = self._changed
            if batched and sent < len(self.parts):
                end = len(self.parts)
                yield "".join(encode(i, self.parts[i - 1]) for i in range(sent + 1, end + 1))
                sent = end
            while sent < len(self.parts):
                sent += 1
                yield encode(sent, self.parts[sent - 1])
            if self.done:
                return
            await changed.wait()


class TurnStreams:
    """Live turns of this process: their streams, and the tasks running them (cancelled on shutdown).

    With a `relay` (several server processes share Redis), every stream's frames are copied to it as well, and
    a turn running in another process can be followed through it.
    """

    def __init__(self, relay: TurnRelay | None = None) -> None:
        self._streams: dict[uuid.UUID, TurnStream] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.relay = relay

    def open(self, turn_id: uuid.UUID) -> TurnStream:
        self._forget_finished()
        stream = TurnStream(turn_id)
        if self.relay is not None:
            self.relay.attach(stream)
        self._streams[turn_id] = stream
        return stream

    def get(self, turn_id: uuid.UUID) -> TurnStream | None:
        return self._streams.get(turn_id)

    def discard(self, turn_id: uuid.UUID) -> None:
        """Forget a turn that never started (its rows could not be stored)."""
        self._streams.pop(turn_id, None)

    def run(self, stream: TurnStream, work: Any) -> asyncio.Task[None]:
        """Run a turn's coroutine detached from any request: a client leaving does not stop the turn."""
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work, name=f"chat-turn-{stream.turn_id}")
        self._tasks.add(task)

        def _done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            stream.close()

        task.add_done_callback(_done)
        return task

    def _forget_finished(self) -> None:
        now = time.monotonic()
        stale = [
            k for k, s in self._streams.items() if s.finished_at is not None and now - s.finished_at > KEEP_FINISHED_S
        ]
        for key in stale:
            del self._streams[key]

    async def shutdown(self) -> None:
        """Cancel the running turns; each finalizes its rows under a shield (SS-040) before it ends."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.relay is not None:
            await self.relay.close()  # after the turns: their last frames are copied too
