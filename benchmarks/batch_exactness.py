"""Batch exactness: how many greedy streams decoded beside others are what the same request gives alone.

``python -m benchmarks.batch_exactness [--quick] [--out DIR] [--random-weights-like DIR]``.

The embedded SmolLM2-135M on the batched scheduler (:class:`workers.llm.batching.BatchedGenerator`, prefix cache
on, as deployed): each of :data:`PROMPTS` alone on a one-slot scheduler, then all of them sent 30 ms apart to an
eight-slot one, so they join, share and leave batches. For float32 and bfloat16, with joint prefill on and off: the
streams identical to their lone ones, and for the others the first character where they part; bfloat16 also with
``BATCH_INVARIANT=1`` (:mod:`workers.llm.invariance`). The counts are what ``DTYPE``, ``PREFILL_TOGETHER`` and
``BATCH_INVARIANT`` promise (README, batched decoding); the batched run's tokens/s (all streams, first sent to last
done) show what each setting costs, against the others in the same run. Also, per case, how many prompts run alone
a second time (their whole prompt then in the prefix cache, so prefilled in another chunk) write their first run's
stream: what the prefix cache does to a rerun, batch or not. On CUDA when present. ``--random-weights-like DIR``
(as in ``benchmarks/scheduler.py``): that model's shape with random weights, for a machine the weights cannot reach;
its near-even token scores make near-ties common, so a kernel whose rounding follows the batch shows there sooner.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import md_table, run_cli, write_results
from benchmarks.batching_model import llm_for_benchmark, question_ids, random_weights_option

PROMPTS = ("What is the capital of Spain?", "How do I make tea?", "Tell me a joke.", "Count from 1 to 20.",
           "Why is the sky blue?", "How do plants grow?", "Write a long story about a dragon in Rome.",
           "Name three colours.", "What is two plus two?", "Describe a cat.", "Who wrote Hamlet?",
           "Give me a recipe for soup.")
ARRIVAL_S = 0.03  # between two requests of the batched run: they join the batch at different steps
SLOTS = 8


def _compare(dtype_name: str, prefill_together: bool, max_tokens: int, invariant: bool = False,
             random_weights_like: Path | None = None) -> dict[str, Any]:
    from workers.llm.batching import BatchedGenerator
    from workers.llm.generation import GenerationResult, SamplingParams
    from workers.llm.invariance import make_batch_invariant

    lm = llm_for_benchmark(dtype_name, random_weights_like)
    if invariant:
        make_batch_invariant(lm.model)
    params = SamplingParams(max_tokens=max_tokens, temperature=0)

    tokens = []

    def answer(batcher: BatchedGenerator, question: str) -> str:
        result = GenerationResult()
        text = "".join(batcher.stream(question_ids(lm, question), params, (), threading.Event(), result))
        tokens.append(result.completion_tokens)
        return text

    alone_batcher = BatchedGenerator(lm, 1, prefix_cache_tokens=4096, prefill_together=prefill_together)
    alone = {q: answer(alone_batcher, q) for q in PROMPTS}
    # Each again, alone, now that its whole prompt is cached: it prefills only its last token, where its first run
    # prefilled everything after what earlier prompts had cached (the chat template) in one forward.
    rerun = {q: answer(alone_batcher, q) for q in PROMPTS}
    alone_batcher.close()
    batcher = BatchedGenerator(lm, SLOTS, prefix_cache_tokens=4096, prefill_together=prefill_together)
    together: dict[str, str] = {}
    threads = [threading.Thread(target=lambda q=q: together.__setitem__(q, answer(batcher, q))) for q in PROMPTS]
    tokens.clear()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
        time.sleep(ARRIVAL_S)
    for thread in threads:
        thread.join(timeout=600)
    tokens_per_s = sum(tokens) / (time.perf_counter() - started)
    batcher.close()
    parted = {q: next((i for i, (a, b) in enumerate(zip(alone[q], together[q], strict=False)) if a != b),
                      min(len(alone[q]), len(together[q])))
              for q in PROMPTS if alone[q] != together[q]}
    return {"dtype": dtype_name, "prefill_together": prefill_together, "batch_invariant": invariant,
            "identical": len(PROMPTS) - len(parted), "streams": len(PROMPTS), "peak_batch": batcher.peak_batch,
            "parted_at_char": parted, "batched_tokens_per_s": round(tokens_per_s, 1),
            "rerun_cached_identical": sum(rerun[q] == alone[q] for q in PROMPTS)}


def run(quick: bool, runs: int, out: Path, random_weights_like: Path | None = None) -> dict[str, Any]:
    max_tokens = 32 if quick else 48
    cases = [(dtype, together, False) for dtype in ("float32", "bfloat16") for together in (True, False)]
    results = [_compare(dtype, together, max_tokens, invariant, random_weights_like)
               for dtype, together, invariant in [*cases, ("bfloat16", True, True), ("bfloat16", False, True)]]
    table = md_table(["dtype", "joint prefill", "BATCH_INVARIANT", "identical to alone", "others part at character",
                      "batched tokens/s", "alone again, prompt cached: identical"],
                     [[r["dtype"], "on" if r["prefill_together"] else "off", "1" if r["batch_invariant"] else "0",
                       f"{r['identical']} of {r['streams']}",
                       ", ".join(str(c) for c in sorted(r["parted_at_char"].values())) or "-",
                       r["batched_tokens_per_s"], f"{r['rerun_cached_identical']} of {r['streams']}"]
                      for r in results])
    weights = f"Random weights shaped as {random_weights_like}" if random_weights_like else "Embedded SmolLM2-135M"
    table += (f"\n\n{weights}, {max_tokens} greedy tokens per stream, prefix cache on; each prompt alone "
              f"against all {len(PROMPTS)} sent {ARRIVAL_S * 1000:.0f} ms apart to {SLOTS} slots. Last column: each "
              f"prompt alone a second time, its whole prompt then cached, against its first run (which prefilled "
              f"all after what earlier prompts had cached at once).")
    payload = {"weights": weights, "max_tokens": max_tokens, "prompts": list(PROMPTS), "results": results}
    write_results("batch_exactness", payload, table, out)
    return payload


def main(argv: list[str] | None = None) -> None:
    run_cli(run, __doc__, argv, default_runs=1, quick_help="32 tokens per stream instead of 48",
            options=random_weights_option)


if __name__ == "__main__":
    main()
