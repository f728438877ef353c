"""Job pickup: how soon a job reaches the worker's handler, on the runpod SDK's real worker loop via serve-local,
with voicepod's job scaler (``workers.common.job_take``) against the SDK's stock one in the same run.

``python -m benchmarks.pickup [--quick] [--runs N] [--out DIR]`` writes ``pickup.json`` and ``pickup.md``:

- ``idle_s``: a job submitted (``/run``) to an idle worker -> its handler starts (median);
- ``busy_s``: back-to-back jobs queued behind a busy worker at concurrency 1: the previous job's handler ends ->
  the next one's starts (median), which is the SDK posting the previous result and taking the next job.

Both are medians over ``--runs`` rounds, alternating the two servers round by round; ``sdk`` holds the same figures
for the stock loop. The worker is ``tests/handlers/pickup.py``, a handler that only reports when it ran, so the
figures are the loop's and the emulator's, not a model's.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

from benchmarks import REPO, md_table, median, run_cli, write_results

HANDLER = REPO / "tests" / "handlers" / "pickup.py"
MODES = {"voicepod": {}, "sdk": {"VOICEPOD_JOB_PICKUP": "sdk"}}  # worker environment of each server
BUSY_WORK_S = 0.05  # each queued job's length: the queue is filled before the first one ends


async def _done_chunk(job: Any) -> dict[str, Any]:
    chunks = [chunk async for chunk in job.stream()]
    return chunks[-1]


async def idle_delays(endpoint: Any, runs: int) -> list[float]:
    """Seconds from submitting a job to an idle worker to its handler starting, ``runs`` times.

    Each job comes a random 1.1-1.5 s after the last one ended: past the stock loop's 1 s wait after a job (so
    the worker is idle in its long poll, not still busy), at any phase of its 0.1 s queue timer."""
    delays = []
    for _ in range(runs):
        await asyncio.sleep(random.uniform(1.1, 1.5))
        submitted = time.monotonic()
        job = await endpoint.run({"work_s": 0})
        delays.append((await _done_chunk(job))["started"] - submitted)
    return delays


async def busy_gaps(endpoint: Any, jobs: int, work_s: float = BUSY_WORK_S) -> list[float]:
    """Queue ``jobs`` jobs of ``work_s`` seconds at once on a one-slot worker and return, for each job after the
    first, the seconds between the previous job's handler ending and its own starting."""
    submitted = await asyncio.gather(*(endpoint.run({"work_s": work_s}) for _ in range(jobs)))
    done = sorted(await asyncio.gather(*(_done_chunk(job) for job in submitted)), key=lambda c: c["started"])
    return [after["started"] - before["ended"] for before, after in zip(done, done[1:], strict=False)]


def run(quick: bool, runs: int, out: Path) -> dict[str, Any]:
    from voicepod.local import LocalServer

    train = 4 if quick else 6  # jobs queued at once per busy round
    samples: dict[str, dict[str, list[float]]] = {mode: {"idle": [], "busy": []} for mode in MODES}

    async def rounds(endpoints: dict[str, Any]) -> None:
        for _ in range(runs):
            for mode, endpoint in endpoints.items():
                samples[mode]["idle"] += await idle_delays(endpoint, 3)
                await asyncio.sleep(0.3)
                samples[mode]["busy"] += await busy_gaps(endpoint, train)

    async def measure(servers: dict[str, LocalServer]) -> None:
        endpoints = {mode: server.endpoint("pickup") for mode, server in servers.items()}
        try:
            await idle_delays(endpoints["voicepod"], 1)  # first HTTP connections, first job of each
            await idle_delays(endpoints["sdk"], 1)
            await rounds(endpoints)
        finally:
            for endpoint in endpoints.values():
                await endpoint.aclose()

    with LocalServer({"pickup": HANDLER}, ready_timeout_s=120) as ours, \
            LocalServer({"pickup": HANDLER}, env=MODES["sdk"], ready_timeout_s=120) as stock:
        asyncio.run(measure({"voicepod": ours, "sdk": stock}))

    figures = {mode: {"idle_s": median(s["idle"]), "busy_s": median(s["busy"]),
                      "idle_p90_s": _p90(s["idle"]), "busy_p90_s": _p90(s["busy"])} for mode, s in samples.items()}
    ours_, sdk = figures["voicepod"], figures["sdk"]
    table = md_table(
        ["", "voicepod job scaler", "SDK's stock JobScaler", "goal"],
        [["idle worker: submit -> handler starts (median)", f"{ours_['idle_s'] * 1000:.1f} ms",
          f"{sdk['idle_s'] * 1000:.1f} ms", "within 20 ms"],
         ["idle, p90", f"{ours_['idle_p90_s'] * 1000:.1f} ms", f"{sdk['idle_p90_s'] * 1000:.1f} ms", ""],
         ["busy worker: previous job ends -> next starts (median)", f"{ours_['busy_s'] * 1000:.1f} ms",
          f"{sdk['busy_s'] * 1000:.1f} ms", "within 50 ms"],
         ["busy, p90", f"{ours_['busy_p90_s'] * 1000:.1f} ms", f"{sdk['busy_p90_s'] * 1000:.1f} ms", ""]],
    )
    n_idle, n_busy = len(samples["voicepod"]["idle"]), len(samples["voicepod"]["busy"])
    table += (f"\n\nrunpod SDK loop via serve-local, one worker at concurrency 1, a handler that only notes the time; "
              f"{n_idle} idle jobs and {n_busy} back-to-back gaps per loop, {runs} alternating rounds.")
    payload = {"runs": runs, "idle_s": ours_["idle_s"], "busy_s": ours_["busy_s"], "voicepod": ours_, "sdk": sdk,
               "samples": samples}
    write_results("pickup", payload, table, out)
    return payload


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def main(argv: list[str] | None = None) -> None:
    run_cli(run, __doc__, argv, default_runs=8, quick_help="fewer rounds")


if __name__ == "__main__":
    main()
