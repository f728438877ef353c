"""Per hop: a job's first chunk over the direct route against the same worker's handler called in process (issue 29).

``python -m benchmarks.direct_hop [--quick] [--runs N] [--out DIR]`` writes ``direct_hop.json`` and ``.md``. For each
worker (the real ones, embedded models, small inputs so that the model's part is short), three ways to run the same
job, interleaved run by run in a shuffled order:

- ``in_process``: this process imports the worker's handler module (loading its own copy of the model) and times
  ``handler(job)`` to its first chunk: the work, with no hop at all;
- ``direct``: the worker in load-balancing mode (``serve-local --direct``), the voicepod client's ``run()`` to the
  first chunk of ``stream()``: one HTTP request, the worker's server, server-sent events;
- ``queue``: the same worker through serve-local's queue emulator (``--queue-delay 0``): ``/run``, the runpod SDK's
  job take, ``/stream``. Locally the queue adds none of RunPod's delay, so this is the floor of the queue route.

``overhead_s`` is the median of the per-run differences (direct minus in process, the two runs of a round taken
back to back); the goal is at most 10 ms. Every job runs to its end before the next starts.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import logging
import random
import statistics
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from benchmarks import REPO, md_table, median, run_cli, write_results

GOAL_S = 0.010
WAYS = ("in_process", "direct", "queue")


def inputs() -> dict[str, dict[str, Any]]:
    """Small jobs: a 1.5 s question, a two-token answer, a two-word sentence."""
    from tests.speech import espeak_wav

    return {
        "stt": {"audio_base64": base64.b64encode(espeak_wav("Hello there.")).decode(), "beam_size": 1},
        "llm": {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2, "temperature": 0},
        "tts": {"text": "Hello there.", "format": "mulaw"},
    }


async def _first_chunk(start: Callable[[], Any], chunks: Callable[[Any], AsyncIterator[Any]]) -> float:
    """Seconds from ``start()`` to the first chunk; the job is then read to its end."""
    began = time.perf_counter()
    job = await start()
    first = None
    async for _ in chunks(job):
        if first is None:
            first = time.perf_counter() - began
    assert first is not None, "a job without a chunk"
    return first


def _in_process(handler: Any, job_input: dict[str, Any]) -> Callable[[], Any]:
    async def start() -> Any:
        return handler({"id": f"bench-{random.random()}", "input": job_input})

    return start


async def _one_round(worker: str, job_input: dict[str, Any], handler: Any, endpoints: dict[str, Any]
                     ) -> dict[str, float]:
    ways = list(WAYS)
    random.shuffle(ways)
    times = {}
    for way in ways:
        if way == "in_process":
            times[way] = await _first_chunk(_in_process(handler, job_input), lambda chunks: chunks)
        else:
            endpoint = endpoints[way]
            times[way] = await _first_chunk(lambda endpoint=endpoint: endpoint.run(job_input),
                                            lambda job: job.stream())
    return times


async def measure(worker: str, job_input: dict[str, Any], handler: Any, servers: dict[str, Any], runs: int
                  ) -> list[dict[str, float]]:
    async with servers["direct"].endpoint(worker) as direct, servers["queue"].endpoint(worker) as queue:
        endpoints = {"direct": direct, "queue": queue}
        await _one_round(worker, job_input, handler, endpoints)  # warm: the first job's one-time costs
        return [await _one_round(worker, job_input, handler, endpoints) for _ in range(runs)]


def run(quick: bool, runs: int, out: Path) -> dict[str, Any]:
    from voicepod import registry
    from voicepod.local import LocalServer

    handlers = registry.handlers(REPO)
    jobs = inputs()
    rounds: dict[str, list[dict[str, float]]] = {}
    with LocalServer(handlers, direct=True, ready_timeout_s=600) as direct, \
            LocalServer(handlers, ready_timeout_s=600) as queue:
        for worker, job_input in jobs.items():
            handler = importlib.import_module(f"workers.{worker}.handler").handler  # loads this process's model
            logging.getLogger("httpx").setLevel(logging.WARNING)  # the workers' logging setup shows every request
            rounds[worker] = asyncio.run(measure(worker, job_input, handler, {"direct": direct, "queue": queue},
                                                 runs))
            print(f"{worker}: " + "  ".join(f"{way} {median([r[way] for r in rounds[worker]]) * 1000:.1f} ms"
                                           for way in WAYS), flush=True)
    return _report(rounds, runs, quick, out)


def _report(rounds: dict[str, list[dict[str, float]]], runs: int, quick: bool, out: Path) -> dict[str, Any]:
    first = {w: {way: median([r[way] for r in rs]) for way in WAYS} for w, rs in rounds.items()}
    overhead = {w: median([r["direct"] - r["in_process"] for r in rs]) for w, rs in rounds.items()}
    spread = {w: statistics.pstdev([r["direct"] - r["in_process"] for r in rs]) for w, rs in rounds.items()}
    queue_over = {w: median([r["queue"] - r["in_process"] for r in rs]) for w, rs in rounds.items()}
    table = md_table(
        ["worker", "in process ms", "direct ms", "queue (no delay) ms", "direct overhead ms", "its spread ms",
         "queue overhead ms"],
        [[w, first[w]["in_process"] * 1000, first[w]["direct"] * 1000, first[w]["queue"] * 1000,
          overhead[w] * 1000, spread[w] * 1000, queue_over[w] * 1000] for w in rounds],
    )
    table += (f"\n\nFirst chunk of a small job, medians of {runs} interleaved runs per worker; overheads are medians "
              f"of the per-run differences against the handler in process (goal for the direct route: at most "
              f"{GOAL_S * 1000:.0f} ms). The queue column is serve-local's emulator with no modelled delay: RunPod's "
              "queue adds 0.10-0.16 s more (docs/deploy.md). Timings move with whatever else runs on the machine.")
    payload = {"quick": quick, "runs": runs, "first_chunk_s": first, "overhead_s": overhead,
               "overhead_spread_s": spread, "queue_overhead_s": queue_over, "goal_s": GOAL_S,
               "goal_met": all(value <= GOAL_S for value in overhead.values()), "rounds": rounds}
    write_results("direct_hop", payload, table, out)
    return payload


def main(argv: list[str] | None = None) -> None:
    run_cli(run, __doc__, argv, default_runs=20, quick_help="3 runs")


if __name__ == "__main__":
    main()
