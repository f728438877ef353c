"""Smoke tests of the benchmark scripts: they run and write what the docs read (not timed tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_waterfall_png_is_written(tmp_path):
    from benchmarks.waterfall import draw

    streamed = {"stt": {"started": 0.0, "first_chunk": 0.4, "finished": 0.5},
                "llm": {"started": 0.5, "first_chunk": 0.9, "finished": 3.0},
                "tts": {"started": 1.2, "first_chunk": 1.5, "finished": 3.4}, "voice_to_voice_s": 1.5}
    sequential = {"stt": {"started": 0.0, "finished": 0.5}, "llm": {"started": 0.5, "finished": 3.0},
                  "tts": {"started": 3.0, "finished": 4.0}, "total_s": 4.0}
    path = draw(streamed, sequential, tmp_path / "w.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cost_benchmark_reads_the_chain_results(tmp_path):
    (tmp_path / "chain.json").write_text(json.dumps({
        "device": "cpu x86_64, 2 cores, no GPU",
        "cost_inputs": {"billed_s": {"stt": 0.5, "llm": 2.0, "tts": 0.5}, "turns_per_minute": 6.0},
    }))
    subprocess.run([sys.executable, "-m", "benchmarks.cost", "--out", str(tmp_path)], cwd=REPO, check=True,
                   capture_output=True)
    result = json.loads((tmp_path / "cost.json").read_text())
    a100 = next(r for r in result["by_idle_s"]["0.0"] if r["gpu"].startswith("A100"))
    assert a100["flex_per_minute"] == pytest.approx(6 * 3.0 * 0.00076)
    assert "PROJECTION" in (tmp_path / "cost.md").read_text()


@pytest.mark.slow
def test_tts_benchmark_quick_mode_writes_its_json(tmp_path):
    subprocess.run([sys.executable, "-m", "benchmarks.tts", "--quick", "--runs", "1", "--out", str(tmp_path)],
                   cwd=REPO, check=True, capture_output=True, timeout=120)
    result = json.loads((tmp_path / "tts.json").read_text())
    assert 0 < result["median"]["first_audio_s"] <= result["median"]["streamed_total_s"]
    assert result["audio_s"] > 3  # four sentences of speech
