"""Test handler: says when it started, on the worker loop voicepod's workers run (``start_worker``), so a test
or benchmark can time the job pickup: from a job's submission, or from the previous job's end, to its handler.

Input: {"work_s": seconds the job takes (asyncio.sleep), "announce": true (first stream a ``started`` chunk,
so a test knows the handler runs)}. Output, a ``done`` chunk: ``started`` and ``ended``
(``time.monotonic()``, one clock for every process on this machine) and the worker's ``pid``.
``MAX_CONCURRENCY`` is the worker's concurrency (default 1); ``VOICEPOD_JOB_PICKUP=sdk`` runs the SDK's stock
job scaler instead of voicepod's.
"""

import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout, for workers.common

from workers.common.sdk import start_worker  # noqa: E402 - needs the path above


async def handler(job):
    started = time.monotonic()
    seq = 0
    if job["input"].get("announce"):
        yield {"seq": 0, "type": "started"}
        seq = 1
    await asyncio.sleep(float(job["input"].get("work_s", 0)))
    yield {"seq": seq, "type": "done", "started": started, "ended": time.monotonic(), "pid": os.getpid()}


if __name__ == "__main__":
    start_worker(handler)  # concurrency 1 unless MAX_CONCURRENCY says otherwise
