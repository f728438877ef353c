"""Load: 20 concurrent voice sessions doing full turns on 2 workers per endpoint, nothing lost, memory flat.

The CI-sized run of benchmarks/soak.py (``make soak`` runs it longer). Throughput and latency percentiles go to
``benchmarks/results/load.json``; they are reported, not asserted: CI machines vary too much.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from benchmarks.soak import RESULTS, run_load, serve
from tests.speech import espeak_wav

pytestmark = pytest.mark.slow

SESSIONS = 20
ROUNDS = 3


async def test_twenty_sessions_of_full_turns_lose_nothing_and_keep_memory_flat() -> None:
    audio = espeak_wav("Hello there.")
    with serve(workers=2) as server:
        # Four tokens keep CI's 2 cores to minutes; the soak run uses longer replies.
        short = {"max_tokens": 4, "temperature": 0}
        report = await run_load(server.base_url, audio, SESSIONS, ROUNDS, llm_options=short)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "load.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    assert report.turns == SESSIONS * ROUNDS
    assert report.turns_failed == 0, report.errors[:5]
    assert report.jobs_with_bad_streams == 0, report.errors[:5]
    assert report.jobs >= 3 * report.turns  # at least one STT, LLM and TTS job per turn
    assert report.audio_chunks > 0
    # The first two rounds warm caches and connection pools (about 2 MiB); after them, Python allocations must
    # not grow with the turns (3-round runs grew 40 to 120 KiB in the last round, the recorder's own log included).
    traced = report.traced_kib_after_round
    assert traced[-1] - traced[1] < 1024, traced
