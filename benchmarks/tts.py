"""TTS: time to first audio and real-time factor of the worker's handler (in process, sentence by sentence)
against the engine synthesizing the whole 4-sentence text at once.

``python -m benchmarks.tts [--quick] [--runs N]``. Interleaved runs, medians reported.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from benchmarks import md_table, median, run_cli, write_results

TEXT = ("The harbour was quiet in the early morning. A man in a yellow coat walked along the pier. "
        "He stopped at the last crate and frowned. Then he wrote something in a small notebook.")


async def _streamed(handler: Any) -> tuple[float, float, float]:
    """(first audio s, total s, audio duration s) of one handler job."""
    started = time.perf_counter()
    first = None
    async for chunk in handler({"id": "bench", "input": {"text": TEXT}}):
        if chunk["type"] == "audio" and first is None:
            first = time.perf_counter() - started
        if chunk["type"] == "done":
            return first or 0.0, time.perf_counter() - started, chunk["duration"]
    raise RuntimeError("no done chunk")


def run(quick: bool, runs: int, out: Path) -> dict[str, Any]:
    from workers.tts import handler as tts

    asyncio.run(_streamed(tts.handler))  # warm up (first ONNX run)
    first, streamed, whole, durations = [], [], [], []
    for _ in range(runs):
        f, total, duration = asyncio.run(_streamed(tts.handler))
        first.append(f)
        streamed.append(total)
        durations.append(duration)
        started = time.perf_counter()
        samples, rate = tts.ENGINE.synthesize(TEXT)
        whole.append(time.perf_counter() - started)
    duration = median(durations)
    m = {"first_audio_s": median(first), "streamed_total_s": median(streamed), "whole_text_s": median(whole)}
    ratio = m["first_audio_s"] / m["whole_text_s"]
    table = md_table(
        ["first audio (streamed) s", "all audio (streamed) s", "whole text at once s", "first / whole", "RTF"],
        [[m["first_audio_s"], m["streamed_total_s"], m["whole_text_s"], f"{ratio:.2f}",
          m["streamed_total_s"] / duration]],
    )
    table += (f"\n\n{tts.ENGINE.name} engine, 4 sentences, {duration:.1f} s of speech; RTF = synthesis seconds per "
              f"second of audio; medians of {runs} interleaved runs.")
    payload = {"runs": runs, "audio_s": duration, "median": m, "first_over_whole": ratio,
               "rtf": m["streamed_total_s"] / duration, "samples": {"first": first, "streamed": streamed,
                                                                     "whole": whole}}
    write_results("tts", payload, table, out)
    return payload


def main(argv: list[str] | None = None) -> None:
    run_cli(run, __doc__, argv, default_runs=7, quick_help="fewer runs")


if __name__ == "__main__":
    main()
