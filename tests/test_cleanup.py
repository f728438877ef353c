"""voicepod.cleanup.run_to_end: cleanup that a second cancel does not cut short."""

from __future__ import annotations

import asyncio

import pytest
from voicepod.cleanup import run_to_end


async def test_the_work_ends_before_the_cancel_is_passed_on() -> None:
    steps: list[str] = []

    async def cancel_jobs() -> None:
        steps.append("started")
        await asyncio.sleep(0.05)
        steps.append("done")

    async def turn() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            await run_to_end(cancel_jobs())
            steps.append("after cleanup")

    task = asyncio.create_task(turn())
    await asyncio.sleep(0)
    task.cancel()  # the turn ends: its cleanup starts
    while "started" not in steps:
        await asyncio.sleep(0)
    task.cancel()  # and is cancelled again while it runs
    with pytest.raises(asyncio.CancelledError):
        await task
    # With asyncio.shield alone the task would be over here with "done" still to come.
    assert steps == ["started", "done"]


async def test_without_a_cancel_it_returns_the_result() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert await run_to_end(answer()) == 42
