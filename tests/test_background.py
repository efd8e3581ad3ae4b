"""`background.running`: a task for the block's lifetime, cancelled and awaited when the block ends."""

from __future__ import annotations

import asyncio

import pytest

from deskpilot.background import running


async def test_the_work_runs_during_the_block_and_is_cancelled_after_it() -> None:
    ticks: list[int] = []
    stopped = asyncio.Event()

    async def work() -> None:
        try:
            while True:
                ticks.append(len(ticks))
                await asyncio.sleep(0)
        finally:
            stopped.set()

    async with running(work(), name="ticker") as task:
        await asyncio.sleep(0.01)
        assert task.get_name() == "ticker"
    assert ticks
    assert stopped.is_set()
    assert task.cancelled()


async def test_the_block_s_own_error_still_stops_the_work() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    with pytest.raises(ValueError, match="boom"):
        async with running(forever(), name="forever") as task:
            raise ValueError("boom")
    assert task.cancelled()
