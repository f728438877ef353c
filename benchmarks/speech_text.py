"""Speech text: what rewriting text for the ear (``workers/tts/speech_text.py``, issue 31) adds to the TTS worker's
first audio, against that first audio itself.

Each sentence of some LLM-like replies (markdown, lists, prices, times, dates, addresses, emoji) is rewritten many
times (the median of each sentence's runs), and spoken as a one-sentence job through the worker's handler, as
``VoiceAgent`` sends them, with ``normalize`` on and off in turn; and whole replies go through the handler as plain API
calls send them, where every sentence is rewritten before the first is spoken (the done chunk's ``text_s``).
Goal: under 2 ms a sentence.

``python -m benchmarks.speech_text [--quick] [--runs N]``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from benchmarks import md_table, median, run_cli, write_results

REPLIES = [
    "## Top picks 📚\n\nHere are **three** books I'd recommend:\n\n1. *The Hobbit* by J.R.R. Tolkien — a classic "
    "($9.99 at [Acme](https://acme.com/books)).\n2. **Dune** by Frank Herbert, e.g. for sci-fi fans 🚀\n"
    "3. `Emma` by Jane Austen; ~40% off until 3/15/2025 at 5:30 pm!",
    "Sure! The plan costs $5.99 a month, or $59.99 a year (save 17%). Questions? Email support@acme.com or call "
    "(555) 123-4567, 9 a.m. to 5 p.m.",
    "To make pancakes:\n- Mix 1 1/2 cups of flour, 2 eggs and 1 cup of milk.\n- Heat a pan to 375°F.\n"
    "- Cook each side for 2-3 minutes. Enjoy! 🥞",
    "The capital of France is Paris. It has about 2.1 million people, and the Eiffel Tower opened on March 31, 1889.",
]


async def _first_audio(handler: Any, text: str, normalize: bool) -> tuple[float, dict[str, Any]]:
    """(seconds to the first audio chunk, the done chunk's metrics) of one handler job."""
    started = time.perf_counter()
    first = None
    async for chunk in handler({"id": "bench", "input": {"text": text, "normalize": normalize}}):
        if chunk["type"] == "audio" and first is None:
            first = time.perf_counter() - started
        if chunk["type"] == "done":
            return first or 0.0, chunk["metrics"]
        if chunk["type"] == "error":
            raise RuntimeError(f"{text!r}: {chunk['error']}")
    raise RuntimeError("no done chunk")


def _rewrite_s(speech_text: Any, piece: str, reps: int) -> float:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        speech_text(piece)
        times.append(time.perf_counter() - started)
    return median(times)


def run(quick: bool, runs: int, out: Path) -> dict[str, Any]:
    from voicepod.sentences import is_speakable, split_sentences

    from workers.tts import handler as tts
    from workers.tts.speech_text import speech_text

    pieces = [piece for reply in REPLIES for piece in split_sentences(reply) if is_speakable(piece)]
    reps = 20 if quick else 200
    asyncio.run(_first_audio(tts.handler, "Hello.", True))  # warm up (first ONNX run)
    rewrite = [_rewrite_s(speech_text, piece, reps) for piece in pieces]
    first_on, first_off, whole_text_s = [], [], []
    for _ in range(runs):
        for piece in pieces:  # on and off in turn, so that drift on the machine hits both alike
            first_on.append(asyncio.run(_first_audio(tts.handler, piece, True))[0])
            first_off.append(asyncio.run(_first_audio(tts.handler, piece, False))[0])
        for reply in REPLIES:
            whole_text_s.append(asyncio.run(_first_audio(tts.handler, reply, True))[1]["text_s"])
    m = {"rewrite_ms_median": 1000 * median(rewrite), "rewrite_ms_max": 1000 * max(rewrite),
         "first_audio_ms_on": 1000 * median(first_on), "first_audio_ms_off": 1000 * median(first_off),
         "whole_reply_text_ms_median": 1000 * median(whole_text_s)}
    share = m["rewrite_ms_median"] / m["first_audio_ms_on"]
    table = md_table(
        ["rewrite a sentence, ms (median)", "slowest sentence, ms", "first audio, rewritten, ms",
         "first audio, as written, ms", "rewrite / first audio", "whole reply: cut + rewrite before first audio, ms"],
        [[m["rewrite_ms_median"], m["rewrite_ms_max"], m["first_audio_ms_on"], m["first_audio_ms_off"],
          f"{share:.2%}", m["whole_reply_text_ms_median"]]],
    )
    table += (f"\n\n{len(pieces)} sentences of {len(REPLIES)} LLM-like replies ({tts.ENGINE.name} engine); each "
              f"sentence rewritten {reps} times (its median), first audio of one-sentence jobs through the handler, "
              f"medians of {runs} interleaved rounds. Goal: under 2 ms a sentence.")
    payload = {"runs": runs, "sentences": len(pieces), "median": m, "rewrite_over_first_audio": share,
               "goal_ms": 2.0, "goal_met": m["rewrite_ms_max"] < 2.0,
               "samples": {"rewrite_ms": [1000 * t for t in rewrite], "first_on": first_on, "first_off": first_off,
                           "whole_text_s": whole_text_s}}
    write_results("speech_text", payload, table, out)
    return payload


def main(argv: list[str] | None = None) -> None:
    run_cli(run, __doc__, argv, default_runs=3, quick_help="fewer repetitions and rounds")


if __name__ == "__main__":
    main()
