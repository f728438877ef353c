"""Where a worker's model comes from: a baked folder, a hub name, or the embedded default package."""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .direct.settings import direct_mode

log = logging.getLogger("voicepod.worker")

T = TypeVar("T")


@dataclass(frozen=True)
class ModelSource:
    """``kind`` is ``dir`` (a baked folder), ``hub`` (a name to fetch, production) or ``embedded``."""

    kind: str
    location: str


_RUNTIMES = ("torch", "ctranslate2")


def cuda_available(runtime: str | None = None) -> bool:
    """Whether a CUDA device is visible, asked of ``runtime`` (``torch`` or ``ctranslate2``), else of whichever
    of them this worker image has.

    A worker names the runtime it runs on: importing torch only to ask takes over a second, which the STT
    worker (CTranslate2) paid on every cold start where torch is installed too.
    """
    for name in (runtime,) if runtime else _RUNTIMES:
        try:
            if name == "torch":
                import torch

                return bool(torch.cuda.is_available())
            import ctranslate2

            return ctranslate2.get_cuda_device_count() > 0
        except ImportError:
            continue
    return False


def model_source(gpu_default: str, embedded: Callable[[], str], runtime: str | None = None) -> ModelSource:
    """Pick the model: ``MODEL_DIR`` if set, else ``MODEL_NAME``, else ``gpu_default`` on a GPU (as
    ``cuda_available(runtime)`` sees it), else the embedded default (a path that ``embedded()`` returns; only
    called when needed)."""
    if model_dir := os.environ.get("MODEL_DIR"):
        return ModelSource("dir", model_dir)
    if name := os.environ.get("MODEL_NAME"):
        return ModelSource("hub", name)
    if cuda_available(runtime):
        return ModelSource("hub", gpu_default)
    return ModelSource("embedded", embedded())


def timed_load(what: str, load: Callable[[], T]) -> tuple[T, float]:
    """Load a model, log what and how long, and return it with the seconds taken.

    What the load leaves behind lives as long as the process, so it is then moved out of the garbage
    collector's sight (``gc.freeze``): a full collection walks every tracked object, over 200,000 of them once
    a model library is imported, and took 0.1 s each time; faster-whisper's audio decoder runs one per job.

    In load-balancing mode the worker's HTTP server starts first, answering ``/ping`` with 204 (initializing) while
    the model loads (:mod:`workers.common.direct.server`).
    """
    log.info("loading %s", what)
    if direct_mode():  # RunPod's balancer sees the worker initializing (/ping 204) from here until it serves
        from .direct.server import serve_while_loading

        serve_while_loading()
    started = time.perf_counter()
    model = load()
    gc.collect()  # what loading left unreachable goes now: frozen objects are never collected
    gc.freeze()
    seconds = time.perf_counter() - started
    log.info("loaded %s in %.2f s", what, seconds)
    return model, seconds


def configure_logging() -> None:
    """Log worker events at INFO to stderr, once per process (the SDK keeps its own logger)."""
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s %(message)s")
