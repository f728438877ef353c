"""The LLM scheduler alone: aggregate tokens/s and each stream's first token at 1 to 16 streams started together.

``python -m benchmarks.scheduler [--quick] [--runs N] [--out DIR] [--random-weights-like DIR]``.

:class:`workers.llm.batching.BatchedGenerator` as the LLM worker builds it on a GPU (16 slots, prefix cache and
joint prefill on, bfloat16), on CUDA when present, fed from one thread per stream; no HTTP and no worker loop. It is
the part of ``benchmarks/capacity.py`` that a GPU machine without voicepod's serving packages can run
(``benchmarks/device_check.sh``), and on a small CPU it shows the scheduler without the HTTP traffic that shares
the cores in ``capacity``. Each level starts its streams together (a burst: the first begins prefilling alone, the
others join before the next step); every stream writes ``max_tokens`` tokens. Per level, medians over runs:
aggregate tokens/s (all streams' tokens over the time from the first start to the last end) and the median
stream's seconds to its first token (when the scheduler chose it); against level 1 (a lone stream), the ratios the
capacity goal names. ``first_text_s`` in the JSON: to the first text the stream hands out, a step or more later (a
word leaves once the next token shows it is complete; with random weights, many tokens later). Once with
``BATCH_INVARIANT`` off (the GPU default) and once on (the CPU default).

``--random-weights-like DIR`` builds the model of DIR's ``config.json`` (with DIR's tokenizer) with random weights
and no end-of-sequence token, for a machine the embedded weights cannot reach: its speed is the real model's (the
same shapes, the same work per token), what it writes is noise.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import md_table, median, run_cli, write_results
from benchmarks.batching_model import llm_for_benchmark, question_ids, random_weights_option

LEVELS = (1, 2, 4, 8, 16)
SLOTS = 16  # the LLM worker's MAX_CONCURRENCY default on a GPU
PROMPT = "Write a long story about {topic} in {place}."
TOPICS = ("a lighthouse keeper", "a dragon", "a robot", "a sailor", "a baker", "a detective", "an astronaut",
          "a gardener", "a pilot", "a painter", "a knight", "a fox", "a teacher", "a miner", "a whale", "a clown")


def _level(batcher: Any, lm: Any, streams: int, run: int, max_tokens: int) -> dict[str, float]:
    """``streams`` requests started together: aggregate tokens/s, median seconds to first token and to first text."""
    from workers.llm.generation import GenerationResult, SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0)
    # Each run and level its own place, so a prompt is never cached whole from an earlier one (only the chat
    # template that all share), as separate calls' prompts are not.
    prompts = [question_ids(lm, PROMPT.format(topic=TOPICS[i], place=f"town number {run * 100 + streams}"))
               for i in range(streams)]
    firsts: list[float] = []
    first_texts: list[float] = []
    tokens: list[int] = []
    started = time.perf_counter()

    def one(ids: Any) -> None:
        result = GenerationResult()
        first_text = None
        for piece in batcher.stream(ids, params, (), threading.Event(), result):
            if piece and first_text is None:
                first_text = time.perf_counter() - started
        assert result.first_token_at is not None and result.completion_tokens == max_tokens, result
        firsts.append(result.first_token_at - started)
        if first_text is not None:  # random weights may write no whole word
            first_texts.append(first_text)
        tokens.append(result.completion_tokens)

    threads = [threading.Thread(target=one, args=(ids,)) for ids in prompts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(tokens) == streams, "a stream failed: see its thread's error above"
    return {"tokens_per_s": sum(tokens) / (time.perf_counter() - started), "ttft_s": median(firsts),
            "first_text_s": median(first_texts) if first_texts else None}


def _case(lm: Any, invariant: bool, runs: int, max_tokens: int) -> dict[str, Any]:
    from workers.llm.batching import BatchedGenerator
    from workers.llm.invariance import make_batch_invariant

    if invariant:
        make_batch_invariant(lm.model)  # stays on for what follows: the invariant case runs last
    batcher = BatchedGenerator(lm, SLOTS, prefix_cache_tokens=4096, prefill_together=True)
    _level(batcher, lm, SLOTS, runs, 4)  # warm-up: first kernel launches, allocator, the chat template cached
    samples = {n: [_level(batcher, lm, n, run, max_tokens) for run in range(runs)] for n in LEVELS}
    batcher.close()
    rate = {str(n): median([s["tokens_per_s"] for s in samples[n]]) for n in LEVELS}
    ttft = {str(n): median([s["ttft_s"] for s in samples[n]]) for n in LEVELS}
    text = {str(n): median(seen) if (seen := [s["first_text_s"] for s in samples[n] if s["first_text_s"]]) else None
            for n in LEVELS}
    return {"tokens_per_s": rate, "ttft_s": ttft, "first_text_s": text, "peak_batch": batcher.peak_batch,
            "tokens_per_s_ratio": {n: rate[n] / rate["1"] for n in rate},
            "ttft_ratio": {n: ttft[n] / ttft["1"] for n in ttft}}


def run(quick: bool, runs: int, out: Path, random_weights_like: Path | None = None) -> dict[str, Any]:
    max_tokens = 32 if quick else 64
    lm = llm_for_benchmark("bfloat16", random_weights_like)
    cases = {"batch_invariant_off": _case(lm, False, runs, max_tokens),
             "batch_invariant_on": _case(lm, True, runs, max_tokens)}
    rows = [[n, *(cases[c][key][str(n)] for c in cases for key in ("tokens_per_s", "tokens_per_s_ratio",
                                                                     "ttft_s", "ttft_ratio"))]
            for n in LEVELS]
    headers = ["streams"]
    for label in ("BATCH_INVARIANT=0", "BATCH_INVARIANT=1"):
        headers += [f"{label} tokens/s", "x lone", "first token s", "x lone"]
    weights = f"random weights shaped as {random_weights_like}" if random_weights_like else "embedded SmolLM2-135M"
    table = md_table(headers, rows)
    table += (f"\n\n{weights}, bfloat16, {SLOTS} slots, prefix cache and joint prefill on; each level's streams "
              f"started together, {max_tokens} greedy tokens each; medians of {runs} runs.")
    payload = {"weights": weights, "dtype": "bfloat16", "slots": SLOTS, "max_tokens": max_tokens, "runs": runs,
               **cases}
    write_results("scheduler", payload, table, out)
    return payload


def main(argv: list[str] | None = None) -> None:
    run_cli(run, __doc__, argv, default_runs=3, quick_help="32 tokens per stream instead of 64",
            options=random_weights_option)


if __name__ == "__main__":
    main()
