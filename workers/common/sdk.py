"""The runpod SDK's worker loop, started without the SDK's import-time work that a worker never uses.

Every worker's ``__main__`` is ``start_worker(handler)``. Importing the SDK used to be most of a small model's
cold start (``python -X importtime -c "import runpod"``: 1.5 s of 2 s on a 2-core machine):

- ``runpod.serverless.utils.rp_debugger`` calls ``cpuinfo.get_cpu_info()`` when imported, and py-cpuinfo
  answers by starting a second Python process that probes the CPU (~1.1 s; py-cpuinfo issue 155), for a processor
  name that only the SDK's ``--rp_debugger`` output shows. :func:`import_sdk` gives the SDK that name, read from
  ``/proc/cpuinfo``, where it asks for it; nothing of the SDK is copied or changed.
- Its log level defaults to DEBUG, which prints every chunk a job streams; workers default to INFO.

What else ``import runpod`` loads for its CLI and pod management (``paramiko``, ~0.06 s here) stays: hiding a
module from an ``import`` statement takes a stand-in module in ``sys.modules`` (``importlib.util.LazyLoader``
does not survive a plain ``import paramiko``, which reads the module's ``__spec__``), not worth 0.06 s.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from .capacity import max_concurrency
from .direct.settings import direct_mode
from .stream import worker_config
from .warm_up import start_warm_up, wait_for_warm_up


def processor_name() -> str:
    """The CPU's model name as the kernel reports it (what py-cpuinfo's probe would find as ``brand_raw``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@contextmanager
def _cpu_probe_answered() -> Iterator[None]:
    """While the SDK imports, ``cpuinfo.get_cpu_info()`` answers from ``/proc/cpuinfo`` instead of probing."""
    try:
        import cpuinfo
    except ImportError:  # an SDK version without the probe
        yield
        return
    probe = cpuinfo.get_cpu_info
    cpuinfo.get_cpu_info = lambda: {"brand_raw": processor_name(), "arch": platform.machine()}
    try:
        yield
    finally:
        cpuinfo.get_cpu_info = probe


def import_sdk() -> ModuleType:
    """Import and return ``runpod.serverless``, answering its CPU probe from ``/proc/cpuinfo``; its log level is
    INFO unless ``RUNPOD_LOG_LEVEL`` or ``RUNPOD_DEBUG_LEVEL`` says otherwise."""
    if "runpod.serverless" not in sys.modules:
        if not (os.environ.get("RUNPOD_LOG_LEVEL") or os.environ.get("RUNPOD_DEBUG_LEVEL")):
            # The SDK's default is DEBUG: every poll, and every chunk of every job in full (base64 audio and all),
            # printed on the job's path. INFO keeps each job's start, end and errors.
            os.environ["RUNPOD_LOG_LEVEL"] = "INFO"
        with _cpu_probe_answered():
            import runpod.serverless  # noqa: F401 - imported for its side effect on sys.modules
    return sys.modules["runpod.serverless"]


def start_worker(
    handler: Callable[..., AsyncIterator[dict[str, Any] | str]],
    concurrency: int | None = None,
    warm_up: dict[str, Any] | None = None,
) -> None:
    """Run the SDK's worker loop on ``handler`` with :func:`workers.common.stream.worker_config`; blocks. With
    ``VOICEPOD_MODE=direct``, serve ``handler`` from the worker's own HTTP server instead, as RunPod's
    load-balancing endpoints call it (:mod:`workers.common.direct`; the runpod SDK is not imported then).

    ``concurrency`` is how many jobs the worker runs at once (workers pass
    :func:`workers.common.capacity.max_concurrency`; ``None``: ``MAX_CONCURRENCY``, else 1). The loop takes
    and starts jobs without the SDK's polling timers (:mod:`workers.common.job_take`).
    ``warm_up`` is the input of a small job that the handler runs first, beside the SDK's import and before the
    worker asks for jobs (:mod:`workers.common.warm_up`).
    """
    if concurrency is None:
        concurrency = max_concurrency(cpu=1, gpu=1, on_gpu=False)
    if warm_up is not None:
        start_warm_up(handler, warm_up)
    if direct_mode():  # VOICEPOD_MODE=direct: RunPod's load-balancing endpoints call the worker's own server
        from .direct.server import serve

        wait_for_warm_up()
        serve(handler, concurrency)
        return
    serverless = import_sdk()
    from .job_take import scaler_class, sdk_worker_loop  # imports the SDK: only after import_sdk

    scaler = scaler_class()
    wait_for_warm_up()  # the first real job must find the warm-up done
    with sdk_worker_loop(scaler):
        serverless.start(worker_config(handler, concurrency))
