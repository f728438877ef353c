"""A first job that nobody waits for: run through the worker's own handler before it reports ready.

A worker's first job pays one-time costs that later jobs do not: libraries importing code lazily (transformers'
generation, the audio resampler), first allocations and kernel choices (onnxruntime, CTranslate2, torch).
:func:`start_warm_up` runs a small job through the handler in a thread, with its own event loop, while the main
thread goes on importing the runpod SDK (the model runtimes release the GIL); :func:`wait_for_warm_up` holds the
SDK's job loop until it is done. ``WARM_UP=0`` turns it off. The warm-up job does not take the model load's
seconds that :func:`workers.common.stream.serve_job` bills to the first job.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

log = logging.getLogger("voicepod.worker")

JOB_ID = "voicepod-warm-up"

_running: list[threading.Thread] = []


def enabled() -> bool:
    """Whether workers warm up (``WARM_UP``, default on; ``0`` turns it off)."""
    return os.environ.get("WARM_UP", "1") != "0"


async def _drain(handler: Callable[[dict[str, Any]], AsyncIterator[Any]], job_input: dict[str, Any]) -> Any:
    last = None
    async for chunk in handler({"id": JOB_ID, "input": job_input}):
        last = chunk
    return last


def _run(handler: Callable[[dict[str, Any]], AsyncIterator[Any]], job_input: dict[str, Any]) -> None:
    started = time.perf_counter()
    try:
        last = asyncio.run(_drain(handler, job_input))
    except Exception:  # noqa: BLE001 - a failed warm-up costs only the first job its speed; that job reports errors
        log.exception("warm-up job failed")
        return
    if isinstance(last, dict) and last.get("type") == "error":
        log.warning("warm-up job failed: %s", last.get("error"))
        return
    log.info("warmed up with a first job in %.2f s", time.perf_counter() - started)


def start_warm_up(handler: Callable[[dict[str, Any]], AsyncIterator[Any]], job_input: dict[str, Any]) -> None:
    """Run ``handler`` on a job with ``job_input`` in a thread, unless ``WARM_UP=0``."""
    if not enabled():
        return
    # Not a daemon: a process that ends mid-warm-up waits for it rather than killing a thread inside torch or
    # onnxruntime, which aborts the process.
    thread = threading.Thread(target=_run, args=(handler, job_input), name="voicepod-warm-up")
    thread.start()
    _running.append(thread)


def wait_for_warm_up() -> None:
    """Block until every warm-up started so far has ended."""
    while _running:
        _running.pop().join()
