"""How many jobs one worker process takes at once: ``MAX_CONCURRENCY``, else the worker's default for its device;
and how many CPU threads each may use.

A GPU has room and compute to spare for several jobs of a small model; a CPU has few cores, so its defaults stay
small. The value feeds the runpod SDK's ``concurrency_modifier`` (:func:`workers.common.stream.worker_config`).
"""

from __future__ import annotations

import os
from pathlib import Path


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


# CTranslate2's own default threads per computation; more rarely pays for the small models these workers run.
MAX_CPU_THREADS = 4
# cgroup v2's CPU limit of this process's container ("QUOTA PERIOD" in microseconds, or "max PERIOD").
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The cores this process may use: its CPU affinity, lowered to a container's CPU quota (``docker --cpus``,
    a Kubernetes limit), which the affinity does not show."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = cpu_max.read_text(encoding="ascii").split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(quota) // int(period)))
    except (OSError, ValueError):  # no cgroup v2 here, or a format this does not know: the affinity stands
        pass
    return cores


def cpu_threads(parallel: int, cores: int | None = None) -> int:
    """Threads for each of ``parallel`` computations that may run at once on a CPU of ``cores`` cores (default:
    :func:`available_cores`): the cores shared among them, at least 1 and at most :data:`MAX_CPU_THREADS`.

    CTranslate2 gives each of its ``num_workers`` its own pool of 4 threads unless told: 8 threads for STT's default 2
    on 2 cores, and a 30 s clip took 1.31 s alone and 1.43 s two at once, against 0.74 s and 0.88 s with 1 thread
    each (same transcripts).
    """
    if cores is None:
        cores = available_cores()
    return max(1, min(MAX_CPU_THREADS, cores // max(1, parallel)))


def ctranslate2_threads(parallel: int) -> int:
    """``cpu_threads`` for a CTranslate2 model running ``parallel`` jobs at once: 0 (CTranslate2 then reads
    ``OMP_NUM_THREADS``) when the user sets ``OMP_NUM_THREADS``, else :func:`cpu_threads`."""
    return 0 if os.environ.get("OMP_NUM_THREADS") else cpu_threads(parallel)
