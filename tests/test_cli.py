"""The commands a new user types first: `voicepod demo` and `python -m workers.X` on each test_input.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from voicepod.audio import read_wav
from voicepod.registry import NAMES

from .conftest import REPO


@pytest.mark.parametrize("worker", NAMES)
def test_each_worker_runs_its_test_input_and_prints_chunks_as_they_come(worker):
    result = subprocess.run(
        [sys.executable, "-m", f"workers.{worker}"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    chunks = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [c["seq"] for c in chunks] == list(range(len(chunks)))
    assert len(chunks) >= 2 and chunks[-1]["type"] == "done"


def test_demo_runs_one_spoken_turn_on_the_embedded_models(tmp_path):
    out = tmp_path / "reply.wav"
    result = subprocess.run(
        [sys.executable, "-m", "voicepod.cli", "demo", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "you said:" in result.stdout and "capital of France" in result.stdout
    assert "paris" in result.stdout.split("reply:", 1)[1].lower()
    assert "stt: ready  llm: ready  tts: ready" in result.stderr and "workers stopped" in result.stderr
    for wav in (out, tmp_path / "question.wav"):
        samples, rate = read_wav(wav.read_bytes())
        assert len(samples) / rate > 0.5


@pytest.mark.parametrize("worker, field", [("stt", "audio_base64"), ("llm", "messages"), ("tts", "sample_rate")])
def test_worker_help_answers_before_loading_any_model(worker, field, tmp_path):
    # A model folder that does not exist: loading it would fail, so a 0 exit proves --help loaded nothing.
    env = {**os.environ, "MODEL_DIR": str(tmp_path / "no-model-here")}
    result = subprocess.run([sys.executable, "-m", f"workers.{worker}", "--help"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"usage: python -m workers.{worker}" in result.stdout and f"  {field}: " in result.stdout


def test_worker_with_a_missing_input_file_says_so_in_one_line(tmp_path):
    env = {**os.environ, "MODEL_DIR": str(tmp_path / "no-model-here")}
    result = subprocess.run([sys.executable, "-m", "workers.tts", str(tmp_path / "input.json")], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == f"python -m workers.tts: {tmp_path / 'input.json'}: No such file or directory"
