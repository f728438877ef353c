"""How many jobs one worker process takes at once: ``MAX_CONCURRENCY``, else the worker's default for its device.

A GPU has room and compute to spare for several jobs of a small model; a CPU has few cores, so its defaults stay
small. The value feeds the runpod SDK's ``concurrency_modifier`` (:func:`workers.common.stream.worker_config`).
"""

from __future__ import annotations

import os


def max_concurrency(cpu: int, gpu: int, on_gpu: bool) -> int:
    """``MAX_CONCURRENCY`` when set (a whole number of at least 1), else ``gpu`` on a GPU and ``cpu`` on a CPU."""
    raw = os.environ.get("MAX_CONCURRENCY", "").strip()
    if not raw:
        return gpu if on_gpu else cpu
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"MAX_CONCURRENCY must be a whole number of at least 1, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"MAX_CONCURRENCY must be a whole number of at least 1, got {raw!r}")
    return value
