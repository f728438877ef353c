"""A tiny first job run before a worker reports ready, beside the rest of its start.

A model's first call pays one-time costs that later calls do not: libraries importing code lazily (transformers'
generation), first allocations and kernel choices (onnxruntime, CTranslate2). :func:`timed_load` starts the
worker's warm-up here right after its model loads; the warm-up runs in a thread while the main thread goes on
importing the runpod SDK (the model runtimes release the GIL), and :func:`wait_for_warm_up` holds the SDK's job
loop until it is done. ``WARM_UP=0`` turns it off.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger("voicepod.worker")

T = TypeVar("T")

_running: list[threading.Thread] = []


def enabled() -> bool:
    """Whether workers warm up (``WARM_UP``, default on; ``0`` turns it off)."""
    return os.environ.get("WARM_UP", "1") != "0"


def _run(what: str, warm_up: Callable[[T], object], model: T) -> None:
    started = time.perf_counter()
    try:
        warm_up(model)
    except Exception:  # noqa: BLE001 - a failed warm-up costs only the first job its speed; that job reports errors
        log.exception("warm-up of %s failed", what)
        return
    log.info("warmed up %s in %.2f s", what, time.perf_counter() - started)


def start_warm_up(what: str, warm_up: Callable[[T], object], model: T) -> None:
    """Run ``warm_up(model)`` in a thread, unless ``WARM_UP=0``; ``what`` names the model in the log."""
    if not enabled():
        return
    # Not a daemon: a process that ends mid-warm-up (a one-off local run) waits for it rather than killing a
    # thread inside torch or onnxruntime, which aborts the process.
    thread = threading.Thread(target=_run, args=(what, warm_up, model), name="voicepod-warm-up")
    thread.start()
    _running.append(thread)


def wait_for_warm_up() -> None:
    """Block until every warm-up started so far has ended."""
    while _running:
        _running.pop().join()
