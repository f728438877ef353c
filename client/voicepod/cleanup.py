"""Cleanup that a second cancel must not cut short: cancelling jobs on their endpoints when a turn or call ends.

``asyncio.shield`` alone keeps the inner work going, but the awaiting task moves on at once; a caller that then
reports "the call is over" would do so before the cancels reached the endpoints, and a job could be seen running
(and billed) for nobody. :func:`run_to_end` waits for the work itself and passes the cancel on afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def run_to_end(work: Awaitable[T]) -> T:
    """Await ``work`` to its end even if the awaiting task is cancelled meanwhile; then re-raise that cancel."""
    future = asyncio.ensure_future(work)
    cancelled = False
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return future.result()
