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


def test_call_waterfall_png_is_written_for_a_speculative_turn(tmp_path):
    from benchmarks.waterfall import draw_call

    # A speculative turn's stages start before the end of turn was detected: times before the silence ended.
    turn = {"end_silence_s": 0.55, "mouth_to_ear_s": 1.2,
            "stt": {"started": 0.2, "finished": 0.6},
            "llm": {"started": 0.6, "first_chunk": 0.8, "finished": 2.0},
            "tts": {"started": 0.9, "first_chunk": 1.1, "finished": 2.4}}
    path = draw_call({"on": turn, "off": {**turn, "mouth_to_ear_s": 1.6}}, tmp_path / "c.png", "test")
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


def test_capacity_counts_a_workers_busy_seconds_once_however_many_jobs_overlap():
    from benchmarks.capacity import _busy_s, _calls_per_worker

    # Three jobs, two overlapping: the worker was busy 0-3 and 5-6.
    assert _busy_s([(0.0, 2.0), (1.0, 3.0), (5.0, 6.0)]) == pytest.approx(4.0)
    assert _busy_s([(0.0, 4.0), (1.0, 2.0)]) == pytest.approx(4.0)
    levels = {"1": {"p95_s": 1.0}, "2": {"p95_s": 1.5}, "4": {"p95_s": 1.9}, "8": {"p95_s": 3.5}}
    assert _calls_per_worker(levels) == 4


def test_cost_prices_the_capacity_results_shared_seconds(tmp_path, capsys):
    from voicepod.cli import main

    results = tmp_path / "capacity.json"
    results.write_text(json.dumps({"device": "cpu x86_64, 2 cores, no GPU", "cost_inputs": {
        "billed_s": {"stt": 0.1, "llm": 0.5, "tts": 0.2}, "turns_per_minute": 6.0, "calls": 4}}))
    assert main(["cost", "--results", str(results), "--idle-s", "0", "--gpu", "A100 (80 GB)"]) == 0
    # 6 turns x 0.8 s x $0.00076.
    assert f"${6 * 0.8 * 0.00076:.4f}" in capsys.readouterr().out


@pytest.mark.slow
def test_tts_benchmark_quick_mode_writes_its_json(tmp_path):
    subprocess.run([sys.executable, "-m", "benchmarks.tts", "--quick", "--runs", "1", "--out", str(tmp_path)],
                   cwd=REPO, check=True, capture_output=True, timeout=120)
    result = json.loads((tmp_path / "tts.json").read_text())
    assert 0 < result["median"]["first_audio_s"] <= result["median"]["streamed_total_s"]
    assert result["audio_s"] > 3  # four sentences of speech


@pytest.mark.slow
def test_scheduler_benchmark_runs_on_a_models_shape_with_random_weights(tmp_path):
    # What benchmarks/device_check.sh runs on a GPU machine, from the files `make device-kit` copies (no weights).
    from benchmarks.batching_model import copy_shape
    from workers.llm.bake import default_model_dir, ensure_embedded

    shape = copy_shape(ensure_embedded(default_model_dir()), tmp_path / "shape")
    subprocess.run([sys.executable, "-m", "benchmarks.scheduler", "--quick", "--runs", "1", "--out", str(tmp_path),
                    "--random-weights-like", str(shape)], cwd=REPO, check=True, capture_output=True, timeout=600)
    result = json.loads((tmp_path / "scheduler.json").read_text())
    assert result["weights"].startswith("random weights")
    for case in ("batch_invariant_off", "batch_invariant_on"):
        # Every level ran, every stream to its last token (the benchmark checks), 16 at once at the top.
        assert set(result[case]["tokens_per_s"]) == {"1", "2", "4", "8", "16"}
        assert result[case]["peak_batch"] == 16
        assert set(result[case]["ttft_s"]) == set(result[case]["tokens_per_s"])


@pytest.mark.parametrize("arguments", [["benchmarks.scheduler", "--random-weights-like", "{empty}"],
                                       ["benchmarks.batching_model", "{empty}", "{empty}/out"]])
def test_a_folder_without_a_models_shape_is_refused_in_one_line(tmp_path, arguments):
    done = subprocess.run([sys.executable, "-m", *(a.format(empty=tmp_path) for a in arguments)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{tmp_path} lacks config.json" in done.stderr.splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_turn_benchmark_counts_cut_offs_on_time_and_late_ends():
    from benchmarks.turn_model import outcomes

    def pause(said, kind, final, p, unfinished=(False, 0.6, "ends a sentence")):
        return {"said": said, "kind": kind, "final": final, "probability": p, "before_is_sentence": said == "taxi",
                "unfinished": {"tiny.en": list(unfinished)}}

    text_says_unfinished = (True, 0.9, "ends on the preposition 'for'")
    rows = [
        pause("taxi", "unfinished", False, 0.9), pause("taxi", "unfinished", True, 0.9),  # cut off at its pause
        pause("table for", "unfinished", False, 0.9, text_says_unfinished), pause("table for", "unfinished", True, 0.8),
        pause("close?", "complete", True, 0.3),  # the end called not done: late
        pause("France?", "complete", True, 0.9),
    ]
    alone, combined = outcomes(rows, None), outcomes(rows, "tiny.en")
    assert alone["unfinished"]["cut_off"] == 2 and alone["one_turn_share"] == 0
    assert combined["unfinished"] | {"cut_off_texts": None} == {
        "utterances": 2, "cut_off": 1, "on_time": 1, "late": 0, "cut_off_texts": None,
        "cut_off_where_words_so_far_are_a_sentence": 1}
    assert combined["one_turn_share"] == 0.5
    assert combined["complete"] == {"utterances": 2, "cut_off": 0, "on_time": 1, "late": 1, "cut_off_texts": []}


@pytest.mark.slow
def test_speech_text_benchmark_quick_mode_writes_its_json(tmp_path):
    subprocess.run([sys.executable, "-m", "benchmarks.speech_text", "--quick", "--runs", "1", "--out", str(tmp_path)],
                   cwd=REPO, check=True, capture_output=True, timeout=300)
    result = json.loads((tmp_path / "speech_text.json").read_text())
    assert result["sentences"] > 10 and 0 < result["median"]["rewrite_ms_median"] <= result["median"]["rewrite_ms_max"]
    assert result["median"]["first_audio_ms_on"] > 0


def test_phone_turn_taking_counts_one_turn_cut_offs_late_ends_and_what_a_reply_survived():
    from benchmarks.phone_turns import summarize

    def call(detector, kind, turns, ended_by, continued=0, m2e=1.0, sentence=False, budget=0.2):
        return {"detector": detector, "kind": kind, "text": kind, "before_is_sentence": sentence, "budget": budget,
                "mouth_to_ear_s": m2e, "turns": turns, "ended_by": ended_by, "silence_s": [0.5] * turns,
                "continued": [continued] * turns, "held": [True] if continued else []}

    def over(kind, clears, resumed=False, playing=True):
        return {"detector": "smart", "kind": kind, "text": kind, "clears_s": clears, "playing_at_start": True,
                "playing_at_end": playing, "interjections": [{"resumed": resumed}]}

    rows = [
        call("smart", "complete", 1, ["smart"], m2e=0.9), call("silence", "complete", 1, ["silence"], m2e=1.3),
        call("smart", "complete", 1, ["smart"], m2e=0.74), call("silence", "complete", 1, ["silence"], m2e=1.1),
        call("smart", "unfinished", 1, ["smart"], continued=1),  # cut off, taken back: one turn
        call("smart", "unfinished", 2, ["smart", "smart"], sentence=True),  # cut off for good
        call("smart", "unfinished", 1, ["max_silence"]),  # waited out, late at its end
        call("silence", "unfinished", 2, ["silence", "silence"], budget=None),
        over("backchannel", []), over("backchannel", [0.5], resumed=True), over("backchannel", [], playing=False),
        over("interruption", [0.45]), over("interruption", [0.62]), over("interruption", []),
    ]
    result = summarize(rows)
    assert {k: round(v, 2) for k, v in result["mouth_to_ear_s"].items()} == {"smart": 0.82, "silence": 1.2}
    assert round(result["smart_gain_s"], 2) == 0.38
    smart = result["unfinished"]["smart"][0.2]
    assert smart["one_turn_share"] == 2 / 3 and smart["one_turn_share_unfinished_words"] == 1.0
    assert smart["cut_off_share"] == 2 / 3 and smart["cut_off_share_unfinished_words"] == 0.5
    assert smart["late_share"] == 1 / 3 and smart["continued"] == 1 and smart["continuations_held"] == 1
    assert result["unfinished"]["silence"][None]["one_turn_share"] == 0 and result["one_turn_share"] == 2 / 3
    assert result["backchannel_kept_share"] == 0.5 and result["backchannels"]["cut_and_resumed"] == 1
    assert result["backchannels"]["reply_over_before"] == 1
    assert result["interruptions"] | {"time_to_cut_s": None} == {
        "measured": 3, "cut": 2, "cut_within_goal": 1, "time_to_cut_s": None}
    # 0.74 s: the reply came before a caller who goes on 0.7 s after their last word could count as talking.
    assert result["continuation_race"] == {"smart_ended_questions": 2, "reply_before_the_caller_is_heard": 1,
                                           "reply_before_speech_started": 2}
