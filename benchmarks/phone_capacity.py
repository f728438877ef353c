"""Phone capacity of one worker set: mouth-to-ear at 1, 5, 10 and 20 simultaneous calls through ``voicepod phone``
over one worker of each kind at its default ``MAX_CONCURRENCY``, and the calls carried before p95 doubles.

``python -m benchmarks.phone_capacity [--quick] [--runs N] [--out DIR]``. Each level places N simulated Twilio
calls (:mod:`benchmarks.phone_traffic`: real-time 20 ms frames, espeak-ng questions cut at their last voiced
sample), their starts spread over about one turn; each caller asks its questions one after another, each after the
last reply has played and a short pause. Mouth-to-ear is the caller's: from its last voiced frame sent to the first
reply audio it receives. Every question is also checked as the soak checks it (answered, with its own call's audio);
``lost`` counts the others. Calls carried: the most calls whose p95 stays within twice one call's (as
``benchmarks/capacity.py`` counts calls per worker for the agent alone). The first call carries the workers' first
runs and is not counted. On this project's 2-core CPU machine this shows the method and that machine's figures; on
a GPU worker set it is the number calls are sized by.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

from benchmarks import md_table, median, run_cli, write_results
from benchmarks.capacity import _calls_per_worker, _percentile
from benchmarks.phone_soak import phone_over_workers
from benchmarks.phone_traffic import PLAIN, Clips, call_and_check

LEVELS = (1, 5, 10, 20)
TURN_S = 12.0  # about one turn: a question, the wait, a reply of two or three sentences


async def _level(server: Any, phone: Any, clips: Clips, calls: int, questions: int, seed: int) -> dict[str, Any]:
    from voicepod.registry import CHAIN

    endpoints = {stage: server.endpoint(stage, timeout=120) for stage in CHAIN}

    async def one(i: int) -> tuple[list[float], int, list[str]]:
        rng = random.Random(seed * 100 + i)
        await asyncio.sleep(i * TURN_S / calls)  # callers do not all speak at the same instant
        _, check = await call_and_check(phone, endpoints, clips, [PLAIN] * questions, rng, greeting=False)
        return check.mouth_to_ear_s, check.asked - check.answered, check.lost

    try:
        results = await asyncio.gather(*(one(i) for i in range(calls)))
    finally:
        for endpoint in endpoints.values():
            await endpoint.aclose()
    m2e = [s for r in results for s in r[0]]
    return {"calls": calls, "questions": calls * questions, "lost": sum(r[1] for r in results),
            "lost_detail": [line for r in results for line in r[2]], "mouth_to_ear_s": m2e,
            "p50_s": median(m2e) if m2e else None, "p95_s": _percentile(m2e, 0.95) if m2e else None}


async def _measure(levels: tuple[int, ...], questions: int, runs: int) -> dict[str, Any]:
    clips = await asyncio.to_thread(Clips.spoken)
    with phone_over_workers(["--greeting", ""]) as (server, phone):
        await _level(server, phone, clips, 1, 1, seed=999)  # the workers' first runs
        samples: dict[str, list[dict[str, Any]]] = {str(n): [] for n in levels}
        for run in range(runs):
            for n in levels:
                samples[str(n)].append(await _level(server, phone, clips, n, questions, seed=run))
                last = samples[str(n)][-1]
                print(f"{n:>3} calls: p50 {last['p50_s']} s, p95 {last['p95_s']} s, lost {last['lost']}", flush=True)
    return samples


def run(quick: bool, runs: int, out: Path, levels: str = ",".join(map(str, LEVELS))) -> dict[str, Any]:
    questions = 2 if quick else 4
    samples = asyncio.run(_measure(tuple(int(n) for n in levels.split(",")), questions, runs))
    by_level: dict[str, dict[str, Any]] = {}
    for n, by_run in samples.items():
        m2e = [s for r in by_run for s in r["mouth_to_ear_s"]]
        by_level[n] = {"p50_s": median(m2e) if m2e else None, "p95_s": _percentile(m2e, 0.95) if m2e else None,
                     "questions": sum(r["questions"] for r in by_run), "lost": sum(r["lost"] for r in by_run),
                     "lost_detail": [line for r in by_run for line in r["lost_detail"]], "mouth_to_ear_s": m2e}
    answered = {n: level for n, level in by_level.items() if level["p95_s"] is not None}
    carried = _calls_per_worker(answered) if "1" in answered else 0
    table = md_table(["calls at once", "mouth-to-ear p50 s", "p95 s", "questions", "lost"],
                     [[n, level["p50_s"], level["p95_s"], level["questions"], level["lost"]]
                      for n, level in by_level.items()])
    table += (f"\n\nCalls one worker per kind (default MAX_CONCURRENCY) carries before p95 mouth-to-ear doubles: "
              f"{carried}. {questions} questions a call, {runs} run(s); mouth-to-ear from the caller's last voiced "
              f"frame to the first reply audio it received, through `voicepod phone` (its defaults: the smart turn "
              f"detector). Timings move with whatever else runs on the machine.")
    payload = {"quick": quick, "runs": runs, "questions_per_call": questions, "levels": by_level,
               "calls_carried": carried}
    write_results("phone_capacity", payload, table, out)
    return payload


def main(argv: list[str] | None = None) -> None:
    def options(parser: Any) -> None:
        parser.add_argument("--levels", default=",".join(map(str, LEVELS)),
                            help="calls at once, comma-separated (default 1,5,10,20)")

    run_cli(run, __doc__, argv, default_runs=1, quick_help="2 questions a call, not 4", options=options)


if __name__ == "__main__":
    main()
