"""The UI message stream's frames and the live-turn buffer (SS-034, SS-035, SS-037, SS-041)."""

from __future__ import annotations

import asyncio
import uuid

from deskpilot.chat import stream


def test_ss034_frames_carry_an_id_and_one_json_part() -> None:
    assert stream.encode(3, {"type": "start-step"}) == 'id: 3\ndata: {"type":"start-step"}\n\n'
    assert stream.encode(9, stream.DONE) == "id: 9\ndata: [DONE]\n\n"
    assert stream.STREAM_HEADERS["x-vercel-ai-ui-message-stream"] == "v1"


def test_ss035_opening_and_closing_frames() -> None:
    message, turn = uuid.uuid4(), uuid.uuid4()
    opening = stream.opening_parts(message, turn)
    assert [p["type"] for p in opening] == ["start", "start-step", "data-turn-info", "data-turn-status"]
    assert opening[0]["messageId"] == str(message)
    assert opening[2]["data"] == {"chat_turn_id": str(turn)}
    assert opening[3]["data"] == {"status": "busy"}
    closing = stream.closing_parts()
    assert closing[0] == {"type": "data-turn-status", "data": {"status": "idle"}}
    assert closing[1:] == [{"type": "finish-step"}, {"type": "finish"}, "[DONE]"]


def test_ss041_an_interrupted_turn_closes_without_the_idle_frame() -> None:
    assert stream.closing_parts(interrupted=True) == [{"type": "finish-step"}, {"type": "finish"}, "[DONE]"]


def test_ss037_the_first_thinking_step() -> None:
    part = stream.thinking_part("x" * 100)
    assert part["data"]["id"] == "thinking-1"
    assert part["data"]["title"] == "Understanding your request"
    assert part["data"]["items"] == [f"Processing: {'x' * 80}..."]
    assert stream.thinking_part("", images=2)["data"]["items"] == ["Processing: [2 images]"]
    assert stream.thinking_part("what is this?", images=1)["data"]["items"] == ["Processing: what is this? [1 image]"]
    assert stream.thinking_part("")["data"]["items"] == ["Processing: (message)"]


def test_a_finished_turn_is_replayed_from_its_stored_state() -> None:
    turn = uuid.uuid4()
    parts = stream.replay_parts(None, turn, "Hello", [{"type": "data-task-lane", "data": None}], status="complete")
    assert [p if isinstance(p, str) else p["type"] for p in parts] == [
        "start", "start-step", "data-turn-info", "text-start", "text-delta", "text-end", "data-task-lane",
        "data-turn-status", "finish-step", "finish", "[DONE]"]
    paused = stream.replay_parts(None, turn, "", [], status="awaiting_approval", error=("X", "y"))
    assert "data-turn-status" not in [p if isinstance(p, str) else p["type"] for p in paused]


async def test_readers_follow_from_any_event_id_and_end_at_done() -> None:
    live = stream.TurnStream(uuid.uuid4())
    live.emit({"type": "start"}, {"type": "start-step"})

    async def read(after: int) -> list[int]:
        return [int(frame.split("\n", 1)[0].removeprefix("id: ")) async for frame in live.follow(after)]

    early, late = asyncio.create_task(read(0)), asyncio.create_task(read(2))
    await asyncio.sleep(0)
    live.emit({"type": "text-delta", "id": "text-1", "delta": "hi"})
    live.emit(stream.DONE)
    assert await early == [1, 2, 3, 4]
    assert await late == [3, 4]
    assert await read(3) == [4]  # a reader arriving after the end still gets what it missed
    live.emit({"type": "finish"})  # nothing is added after [DONE]
    assert live.last_id == 4
    assert live.parts[2] == {"type": "text-delta", "id": "text-1", "delta": "hi"}


async def test_shutdown_cancels_running_turns_and_closes_their_streams() -> None:
    streams = stream.TurnStreams()
    live = streams.open(uuid.uuid4())
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = streams.run(live, forever())
    await started.wait()
    await streams.shutdown()
    assert task.cancelled()
    assert live.done
    assert [f async for f in live.follow(0)] == []
