"""TTS memory over many sentences: what the worker's memory steps are made of, told apart by variant.

``python -m benchmarks.tts_memory [--quick] [--sentences N] [--variants a,b] [--out DIR]``.

Each variant runs in its own process (glibc reads its ``MALLOC_*`` settings at start): the TTS worker's own
handler, in process, speaks ``N`` sentences of mixed length as 4 jobs at a time (the worker's default
``MAX_CONCURRENCY`` on a CPU; each job in its own thread, as the worker runs them), in mu-law 8 kHz as a call asks.
After every round it reads the process's anonymous memory (``rss - shared``, as ``tests/worker_memory.py``) and
glibc's own account (``mallinfo2``): what the program holds (``uordblks + hblkhd``: live Python objects, the model,
onnxruntime's arena, which allocates through malloc) and what glibc holds free and has not returned to the
system (``fordblks``: fragmentation, per-thread arenas). Variants:

- ``worker``: the worker as it is (``workers/tts/piper.py``: onnxruntime's CPU arena, shrunk at the end of each
  run, ``memory.enable_memory_arena_shrinkage``);
- ``arena``: the arena kept as it grows (onnxruntime's default, and the worker before the shrinkage);
- ``no_arena``: onnxruntime's CPU arena off (every tensor straight from malloc);
- ``worker_arena_max_2``, ``arena_max_2``: the first two with glibc's malloc arenas cut to two
  (``MALLOC_ARENA_MAX=2``; by default a process gets up to 8 a core, and each keeps what it freed);
- ``trim``: the arena kept, and glibc's free memory handed back (``malloc_trim``) after each round: what is left
  is what the program holds.

Growth is the anonymous memory's rise over the last two thirds of the rounds (the soak's measure,
:func:`benchmarks.phone_soak.growth`); throughput is sentences per second of the whole run. The variants run two at
a time, side by side, so that each pair shares the machine's load (a shared machine's speed moves by 2-3x within
minutes): compare sentences/s within a pair only.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import PASSAGE, REPO, RESULTS, md_table, median, write_results
from benchmarks.phone_soak import growth

# Each variant: how the voices' sessions run (``worker``: as the worker runs them; ``arena``: the arena kept as it
# grows; ``no_arena``) and what it adds to the environment.
VARIANTS = {
    "worker": ("worker", {}),
    "arena": ("arena", {}),
    "worker_arena_max_2": ("worker", {"MALLOC_ARENA_MAX": "2"}),
    "arena_max_2": ("arena", {"MALLOC_ARENA_MAX": "2"}),
    "no_arena": ("no_arena", {}),
    "trim": ("arena", {}),
}
JOBS_AT_ONCE = 4
WORDS = PASSAGE.replace(",", "").replace(".", "").split()


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def sentences(count: int, seed: int = 0) -> list[str]:
    """``count`` sentences of 3 to 40 words from :data:`PASSAGE`'s words: lengths as varied as replies'."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        words = [rng.choice(WORDS).lower() for _ in range(rng.randint(3, 40))]
        out.append(" ".join(words).capitalize() + ".")
    return out


def _memory(libc: ctypes.CDLL) -> dict[str, float]:
    import psutil

    info = psutil.Process().memory_info()
    libc.mallinfo2.restype = MallInfo2
    glibc = libc.mallinfo2()
    mib = 2**20
    return {"anon_mib": (info.rss - info.shared) / mib, "held_mib": (glibc.uordblks + glibc.hblkhd) / mib,
            "free_in_glibc_mib": glibc.fordblks / mib}


def _configure(variant: str, tts: Any) -> None:
    """Change the loaded voices' sessions as ``variant`` asks (nothing for ``worker``). Done here, not in the worker:
    the variants are what the worker does not do."""
    import onnxruntime

    from workers.tts.engine import _embedded_piper_voice

    session = VARIANTS[variant][0]
    if session == "worker":
        return
    for voice in tts.ENGINE._voices.values():  # noqa: SLF001 - a measurement of the session's own options
        options = onnxruntime.SessionOptions()
        options.enable_cpu_mem_arena = session != "no_arena"
        path = _embedded_piper_voice()  # the worker's voice (this measures the embedded one only)
        voice._session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        voice._run_options = onnxruntime.RunOptions()  # the arena kept as it grew: no shrinkage after a run


async def _job(tts: Any, text: str) -> float:
    """One job of the worker's handler; the seconds of speech it made."""
    async for chunk in tts.handler({"id": "mem", "input": {"text": text, "format": "mulaw", "sample_rate": 8000}}):
        if chunk["type"] == "done":
            return chunk["duration"]
        if chunk["type"] == "error":
            raise RuntimeError(chunk)
    raise RuntimeError("no done chunk")


def child(variant: str, count: int) -> None:
    """Run one variant in this process; print one JSON line per round, then a summary line."""
    from workers.tts import handler as tts

    libc = ctypes.CDLL("libc.so.6")
    _configure(variant, tts)
    texts = sentences(count)
    print(json.dumps({"round": 0, "sentences": 0, **_memory(libc)}), flush=True)
    started = time.perf_counter()
    audio_s = 0.0
    for start in range(0, len(texts), JOBS_AT_ONCE):

        async def round_(batch: list[str] = texts[start:start + JOBS_AT_ONCE]) -> list[float]:
            return await asyncio.gather(*(_job(tts, text) for text in batch))

        audio_s += sum(asyncio.run(round_()))
        if variant == "trim":
            libc.malloc_trim(0)
        print(json.dumps({"round": start // JOBS_AT_ONCE + 1, "sentences": start + JOBS_AT_ONCE, **_memory(libc)}),
              flush=True)
    print(json.dumps({"done": True, "wall_s": time.perf_counter() - started, "audio_s": audio_s}), flush=True)


def _run_variant(variant: str, count: int) -> dict[str, Any]:
    env = {**os.environ, **VARIANTS[variant][1], "PYTHONPATH": os.pathsep.join([str(REPO / "client"), str(REPO)])}
    result = subprocess.run([sys.executable, "-m", "benchmarks.tts_memory", "--child", variant, "--sentences",
                             str(count)], env=env, cwd=REPO, capture_output=True, text=True, timeout=4 * 3600)
    if result.returncode != 0:
        raise RuntimeError(f"variant {variant} failed:\n{result.stderr[-3000:]}")
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    rounds = [line for line in lines if "round" in line]
    summary = lines[-1]
    anon = [r["anon_mib"] for r in rounds]
    return {"rounds": rounds, "wall_s": summary["wall_s"], "sentences_per_s": count / summary["wall_s"],
            "anon_start_mib": anon[len(anon) // 3], "anon_end_mib": anon[-1], "anon_max_mib": max(anon),
            "growth": growth(anon), "anon_last_third_mib": median(anon[2 * len(anon) // 3:]),
            "held_end_mib": rounds[-1]["held_mib"], "free_in_glibc_end_mib": rounds[-1]["free_in_glibc_mib"]}


def run(quick: bool, count: int, variants: list[str], out: Path) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    results: dict[str, dict[str, Any]] = {}
    for pair in (variants[i:i + 2] for i in range(0, len(variants), 2)):
        with ThreadPoolExecutor(len(pair)) as pool:
            for variant, result in zip(pair, pool.map(lambda v: _run_variant(v, count), pair), strict=True):
                results[variant] = result
                print(f"{variant:>12}: anon {result['anon_start_mib']:.0f} -> {result['anon_end_mib']:.0f} MiB "
                      f"(last third {result['anon_last_third_mib']:.0f}), growth {result['growth']:.1%}, "
                      f"{result['sentences_per_s']:.2f} sentences/s", file=sys.stderr, flush=True)
    table = md_table(
        ["variant", "anon MiB at 1/3", "at end", "median of the last third", "max", "growth over last 2/3",
         "held by the program MiB", "free in glibc MiB", "sentences/s"],
        [[v, r["anon_start_mib"], r["anon_end_mib"], r["anon_last_third_mib"], r["anon_max_mib"],
          f"{r['growth']:.1%}", r["held_end_mib"], r["free_in_glibc_end_mib"], r["sentences_per_s"]]
         for v, r in results.items()])
    table += (f"\n\n{count} sentences of 3-40 words (the worker's sentence cap is 250 characters), {JOBS_AT_ONCE} jobs "
              f"at a time through the TTS worker's handler in process (mu-law 8 kHz), variants two at a time side by "
              f"side in the order listed (compare sentences/s within a pair). Anonymous memory (rss - shared) after "
              f"each round; 'held' is glibc's in-use bytes (uordblks + hblkhd: the program's, onnxruntime's arena "
              f"included), 'free in glibc' its fordblks (freed, not returned), both at the end.")
    payload = {"sentences": count, "jobs_at_once": JOBS_AT_ONCE, "quick": quick, "variants": results}
    write_results("tts_memory", payload, table, out)
    return payload


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 sentences a variant")
    parser.add_argument("--sentences", type=int)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    count = args.sentences or (200 if args.quick else 1600)
    if args.child:
        child(args.child, count)
        return
    variants = args.variants.split(",")
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown variant(s) {sorted(unknown)}; choose from {list(VARIANTS)}")
    run(args.quick, count, variants, args.out)


if __name__ == "__main__":
    main()
