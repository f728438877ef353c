"""LLM: time to first token and tokens/s through the worker's handler (in process) against raw
``model.generate`` on the same loaded model, prompt and settings (greedy, same max tokens).

``python -m benchmarks.llm [--quick] [--runs N]``. The two are interleaved run by run; medians reported.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import md_table, median, run_cli, write_results

PROMPT = "User: Describe a walk along a harbour in the early morning.\nAssistant:"


class _FirstToken:
    """A ``generate`` streamer that notes when the first new token arrives (the prompt comes first)."""

    def __init__(self) -> None:
        self.calls = 0
        self.first: float | None = None

    def put(self, value: Any) -> None:
        self.calls += 1
        if self.calls == 2 and self.first is None:
            self.first = time.perf_counter()

    def end(self) -> None:
        pass


def _raw(lm: Any, max_tokens: int) -> tuple[float, float, int]:
    import torch

    ids = lm.tokenizer(PROMPT, return_tensors="pt").input_ids
    streamer = _FirstToken()
    outputs: list[Any] = []

    def generate() -> None:
        with torch.inference_mode():
            outputs.append(lm.model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                min_new_tokens=max_tokens, do_sample=False, streamer=streamer,
                pad_token_id=lm.tokenizer.eos_token_id))

    # In a thread of its own, as the worker runs it: torch's CPU thread pool is per calling thread, and
    # measuring the two from different threads compared thread pools, not the handler's overhead.
    started = time.perf_counter()
    thread = threading.Thread(target=generate)
    thread.start()
    thread.join()
    total = time.perf_counter() - started
    output = outputs[0]
    assert streamer.first is not None
    return streamer.first - started, total, int(output.shape[1] - ids.shape[1])


async def _handler(handler: Any, max_tokens: int) -> tuple[float, float, int]:
    started = time.perf_counter()
    first = None
    async for chunk in handler({"id": "bench", "input": {"prompt": PROMPT, "max_tokens": max_tokens,
                                                         "temperature": 0}}):
        if chunk["type"] == "delta" and first is None:
            first = time.perf_counter() - started
        if chunk["type"] == "done":
            return first or 0.0, time.perf_counter() - started, chunk["usage"]["completion_tokens"]
        if chunk["type"] == "error":
            raise RuntimeError(chunk["error"])
    raise RuntimeError("no done chunk")


def run(quick: bool, runs: int, out: Path) -> dict[str, Any]:
    from workers.llm import handler as llm

    max_tokens = 32 if quick else 96
    asyncio.run(_handler(llm.handler, 4))  # the first job carries the load time; keep it out of the numbers
    samples: dict[str, list[tuple[float, float, int]]] = {"raw": [], "handler": []}
    for _ in range(runs):
        samples["raw"].append(_raw(llm.LM, max_tokens))
        samples["handler"].append(asyncio.run(_handler(llm.handler, max_tokens)))
    summary: dict[str, dict[str, float]] = {}
    for name, values in samples.items():
        # Decode rate after the first token, so a slow prompt pass does not hide in the throughput.
        summary[name] = {
            "ttft_s": median([v[0] for v in values]),
            "tokens_per_s": median([(v[2] - 1) / (v[1] - v[0]) for v in values]),
            "tokens": median([v[2] for v in values]),
        }
    ttft_overhead = summary["handler"]["ttft_s"] - summary["raw"]["ttft_s"]
    rate_ratio = summary["handler"]["tokens_per_s"] / summary["raw"]["tokens_per_s"]
    table = md_table(
        ["", "time to first token s", "tokens/s", "tokens"],
        [[name, s["ttft_s"], s["tokens_per_s"], int(s["tokens"])] for name, s in summary.items()],
    )
    table += (f"\n\nHandler against raw generate: first token {ttft_overhead * 1000:+.0f} ms, throughput "
              f"{rate_ratio - 1:+.1%}. {llm.LM.name} (bf16, baked), greedy, {max_tokens} new tokens; medians "
              f"of {runs} interleaved runs.")
    payload = {"max_tokens": max_tokens, "runs": runs, "summary": summary,
               "ttft_overhead_s": ttft_overhead, "throughput_ratio": rate_ratio, "samples": samples}
    write_results("llm", payload, table, out)
    return payload


def main(argv: list[str] | None = None) -> None:
    run_cli(run, __doc__, argv, default_runs=5, quick_help="fewer and shorter runs")


if __name__ == "__main__":
    main()
