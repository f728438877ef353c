"""The tasks a call runs beside its read loop (answers, the greeting, the smart detector's decisions, the STT jobs
of a barge-in): each failure logged where nothing awaits it, and all of them cancelled and awaited together when
their owner closes, so that no job is left running on an endpoint for a caller who has gone."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("voicepod.phone")


class TaskSet:
    """Tasks started by one owner. ``label``: what a failure is logged under (read when it is logged: a call's
    sid is known only once it has started)."""

    def __init__(self, label: Callable[[], str]):
        self._label = label
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None], name: str | None = None) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._log_failure)
        return task

    def cancel(self, name: str) -> None:
        """Cancel the tasks named ``name``."""
        for task in list(self._tasks):
            if task.get_name() == name:
                task.cancel()

    async def close(self) -> None:
        """Cancel every task (but the one calling) and wait until all have ended."""
        tasks = [task for task in self._tasks if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _log_failure(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: %r", self._label(), task.exception(), exc_info=task.exception())
