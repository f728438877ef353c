"""Run blocking model code in a thread and consume what it produces from the worker's event loop.

The runpod worker loop is asyncio: a model call made directly in a handler would block the loop, and with it
the job's stream posts and the stop channel that delivers cancellation. So model work runs in a thread and
hands its items over one at a time, as soon as each is made.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


async def iterate_in_thread(
    make_iterator: Callable[[threading.Event], Iterator[T]],
) -> AsyncIterator[T]:
    """Yield the items of a blocking iterator that runs in its own thread.

    ``make_iterator`` receives a ``threading.Event`` that is set when the consumer stops early (the job was
    cancelled, or the consumer broke out of the loop): long-running producers should check it and stop. An
    exception raised by the producer is re-raised here.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    stop = threading.Event()

    def put(item: object) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    def produce() -> None:
        try:
            for item in make_iterator(stop):
                if stop.is_set():
                    break
                put(item)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            put(exc)
        finally:
            put(_DONE)

    thread = threading.Thread(target=produce, name="voicepod-model", daemon=True)
    thread.start()
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()


async def run_in_thread(fn: Callable[[], T]) -> T:
    """Run one blocking call in a thread (a short alias kept for symmetry with ``iterate_in_thread``)."""
    return await asyncio.to_thread(fn)
