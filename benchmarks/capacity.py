"""Capacity: what one LLM worker carries when several streams share it, batched against one at a time.

``python -m benchmarks.capacity [--quick] [--runs N] [--out DIR]``. Two emulated workers (``serve-local``, the
runpod SDK's own loop) serve the embedded LLM: one with ``MAX_CONCURRENCY=8`` (concurrent jobs decoded in one
batch), one with ``MAX_CONCURRENCY=1`` (jobs take turns, the behaviour before batching). 1, 2, 4 and 8 streams
start together on each; every stream runs to ``max_tokens`` (greedy). Per level: aggregate tokens/s (all streams'
tokens over the time from the first request to the last done chunk) and each stream's time to first token (queue
wait included: what a caller waits). Medians over runs; the two workers alternate run by run.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from benchmarks import REPO, md_table, median, run_cli, write_results

HANDLER = REPO / "workers" / "llm" / "handler.py"
LEVELS = (1, 2, 4, 8)
# Counting never ends on its own, so every stream writes exactly max_tokens; each starts elsewhere, so the streams
# are different requests (different prompts and answers), as separate calls' are.
PROMPT = "Count from {start} to 1000, separated by commas."


async def _stream(endpoint: Any, start: int, max_tokens: int) -> tuple[float, float, int]:
    """One request: (seconds to its first token, seconds to its done chunk, completion tokens)."""
    from voicepod.protocol import CompletionDone, DeltaChunk

    began = time.perf_counter()
    job = await endpoint.run({"messages": [{"role": "user", "content": PROMPT.format(start=start)}],
                              "max_tokens": max_tokens, "temperature": 0})
    first = None
    async for chunk in job.chunks():
        if isinstance(chunk, DeltaChunk) and first is None:
            first = time.perf_counter() - began
        elif isinstance(chunk, CompletionDone):
            return first or 0.0, time.perf_counter() - began, chunk.usage.completion_tokens
    raise RuntimeError("the stream ended without a done chunk")


async def _level(endpoint: Any, streams: int, max_tokens: int) -> dict[str, float]:
    began = time.perf_counter()
    results = await asyncio.gather(*(_stream(endpoint, 10 * (i + 1), max_tokens) for i in range(streams)))
    wall = time.perf_counter() - began
    return {"tokens_per_s": sum(r[2] for r in results) / wall, "ttft_s": median([r[0] for r in results]),
            "ttft_max_s": max(r[0] for r in results), "wall_s": wall}


async def _measure(quick: bool, runs: int) -> dict[str, Any]:
    from voicepod.local import LocalServer

    max_tokens = 32 if quick else 64
    samples: dict[str, dict[str, list[dict[str, float]]]] = {
        mode: {str(n): [] for n in LEVELS} for mode in ("batched", "one_at_a_time")}
    with LocalServer({"llm": HANDLER}, env={"MAX_CONCURRENCY": "8"}, ready_timeout_s=300) as batched, \
            LocalServer({"llm": HANDLER}, env={"MAX_CONCURRENCY": "1"}, ready_timeout_s=300) as serial:
        servers = {"batched": batched, "one_at_a_time": serial}
        endpoints = {mode: server.endpoint("llm", timeout=900) for mode, server in servers.items()}
        try:
            for endpoint in endpoints.values():  # the first job of a worker carries its load time
                await _stream(endpoint, 1, 4)
            for _ in range(runs):
                for n in LEVELS:
                    for mode, endpoint in endpoints.items():
                        samples[mode][str(n)].append(await _level(endpoint, n, max_tokens))
        finally:
            for endpoint in endpoints.values():
                await endpoint.aclose()
    return {"max_tokens": max_tokens, "samples": samples}


def _medians(samples: dict[str, list[dict[str, float]]], key: str) -> dict[str, float]:
    return {n: round(median([s[key] for s in values]), 3) for n, values in samples.items()}


def run(quick: bool, runs: int, out: Path) -> dict[str, Any]:
    measured = asyncio.run(_measure(quick, runs))
    samples = measured["samples"]
    batched_rate, serial_rate = _medians(samples["batched"], "tokens_per_s"), _medians(
        samples["one_at_a_time"], "tokens_per_s")
    batched_ttft, serial_ttft = _medians(samples["batched"], "ttft_s"), _medians(samples["one_at_a_time"], "ttft_s")
    rows = [[n, batched_rate[n], serial_rate[n], batched_ttft[n], serial_ttft[n]] for n in batched_rate]
    table = md_table(["streams", "batched tokens/s", "one at a time tokens/s", "batched first token s",
                      "one at a time first token s"], rows)
    speedup = batched_rate["8"] / batched_rate["1"]
    ttft_ratio = batched_ttft["8"] / batched_ttft["1"]
    table += (f"\n\nAt 8 streams one batched worker writes {speedup:.1f}x a lone stream's tokens/s, with a median "
              f"first token {ttft_ratio:.1f}x a lone stream's (goal: at least 3x, at most 2x). Embedded SmolLM2-135M "
              f"(bf16), greedy, {measured['max_tokens']} tokens per stream; medians of {runs} runs. First token "
              f"includes the queue wait. The machine may be shared: rerun on a quiet one before quoting.")
    payload = {
        "max_tokens": measured["max_tokens"], "runs": runs,
        "llm_tokens_per_s": batched_rate, "llm_ttft_s": batched_ttft,
        "one_at_a_time": {"llm_tokens_per_s": serial_rate, "llm_ttft_s": serial_ttft},
        "speedup_at_8": speedup, "ttft_ratio_at_8": ttft_ratio, "samples": samples,
    }
    write_results("capacity", payload, table, out)
    return payload


def main(argv: list[str] | None = None) -> None:
    run_cli(run, __doc__, argv, default_runs=3, quick_help="shorter streams, fewer runs")


if __name__ == "__main__":
    main()
