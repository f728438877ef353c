"""Replies at the cap: how many voice replies to questions that invite lists end on a finished sentence, with each
allowance to finish past the 60-token cap (``finish_sentence_within``, issue 31), against no allowance (0) in the same
run; and how many tokens that costs.

The embedded LLM (SmolLM2-135M-Instruct) through the LLM worker's handler in process, with ``VoiceAgent``'s system
prompt and cap: greedy and two seeded samples (temperature 0.7, ``VoiceAgent``'s) per question. A reply "ends
finished" when the model ended it or its text ends where a sentence or list item does
(:func:`voicepod.sentences.ends_sentence`): what the client's aggregator speaks whole; otherwise the aggregator drops
its last sentence.

``python -m benchmarks.reply_cap [--quick] [--allowances 0,10,20,30]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

from benchmarks import md_table, median, run_cli, write_results

QUESTIONS = ["Can you recommend a good book to read?", "Recommend three books.",
             "What are the steps to make pancakes?", "What are the steps to change a flat tire?",
             "List five healthy snacks.", "Give me some tips for sleeping better.",
             "What should I pack for a beach trip?", "How do I start running?"]
SAMPLING = [(0.0, None), (0.7, 1), (0.7, 2)]


async def _reply(work: Any, question: str, allowance: int, temperature: float, seed: int | None) -> dict[str, Any]:
    from voicepod.agent import DEFAULT_SYSTEM_PROMPT, VOICE_MAX_TOKENS
    from voicepod.protocol import LLMRequest

    request = LLMRequest.model_validate({
        "messages": [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": question}],
        "max_tokens": VOICE_MAX_TOKENS, "temperature": temperature, "seed": seed, "finish_sentence_within": allowance,
    })
    async for chunk in work(request):
        if chunk["type"] == "done":
            return chunk
    raise RuntimeError("no done chunk")


def run(quick: bool, runs: int, out: Path, allowances: str = "0,10,20,30") -> dict[str, Any]:
    os.environ.setdefault("MAX_CONCURRENCY", "1")  # one generate at a time: each reply as it is alone
    from voicepod.sentences import ends_sentence

    from workers.llm import handler as llm

    chosen = [int(a) for a in allowances.split(",")]
    questions = QUESTIONS[:3] if quick else QUESTIONS
    rows, results = [], {}
    for allowance in chosen:
        replies = [asyncio.run(_reply(llm.work, q, allowance, t, s)) for q in questions for t, s in SAMPLING]
        finished = [r["finish_reason"] == "stop" or ends_sentence(r["text"]) for r in replies]
        tokens = [r["usage"]["completion_tokens"] for r in replies]
        capped = [r for r in replies if r["finish_reason"] == "length"]
        results[allowance] = {"replies": len(replies), "finished": sum(finished), "cut_by_cap": len(capped),
                              "tokens_median": median(tokens), "tokens_max": max(tokens),
                              "texts": [r["text"] for r in replies]}
        rows.append([allowance, f"{sum(finished)} of {len(replies)}", len(capped), median(tokens), max(tokens)])
    table = md_table(["allowance (tokens)", "replies ending finished", "cut by the cap", "tokens (median)",
                      "tokens (most)"], rows)
    table += (f"\n\n{len(questions)} questions that invite lists x {len(SAMPLING)} (greedy, two seeded samples at "
              "temperature 0.7); SmolLM2-135M-Instruct, VoiceAgent's system prompt and 60-token cap.")
    write_results("reply_cap", {"allowances": chosen, "questions": questions, "results": results}, table, out)
    return results


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allowances", default="0,10,20,30", help="comma-separated finish_sentence_within values")


def main(argv: list[str] | None = None) -> None:
    run_cli(run, __doc__, argv, default_runs=1, quick_help="three questions", options=_options)


if __name__ == "__main__":
    main()
