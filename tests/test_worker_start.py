"""How a worker starts: with its image's command line it serves a correct first job, and starting it never runs the
runpod SDK's CPU probe (py-cpuinfo starting a second Python process, ~1.1 s of every cold start)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from voicepod.audio import read_wav
from voicepod.registry import NAMES

from benchmarks.cold_start import baked_folder, image_command, run_worker
from tests.speech import espeak_available, espeak_wav, wer

REPO = Path(__file__).resolve().parents[1]

# Run in a fresh interpreter: records every process the code below starts, through Python's audit hooks.
_WATCH_PROCESSES = """
import json, sys
started = []
sys.addaudithook(lambda event, args: started.append(repr(args)) if event == "subprocess.Popen" else None)
{code}
import cpuinfo
from runpod.serverless.utils import rp_debugger
print(json.dumps({{"started": started, "processor": rp_debugger.PROCESSOR,
                  "probe_restored": cpuinfo.get_cpu_info is cpuinfo.cpuinfo.get_cpu_info}}))
"""


def _watch(code: str, env: dict[str, str] | None = None) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _WATCH_PROCESSES.format(code=code)], cwd=REPO, capture_output=True, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_sdk_starts_without_its_cpu_probe_and_still_knows_the_processor():
    seen = _watch("from workers.common.sdk import import_sdk\nimport_sdk()")
    assert not [args for args in seen["started"] if "cpuinfo" in args], seen["started"]
    assert seen["processor"] and seen["processor"] != "Unable to get processor info."
    # Only the SDK's import was answered: code that asks py-cpuinfo later gets its real probe.
    assert seen["probe_restored"]


def test_the_plain_sdk_import_does_run_the_probe():
    # The check above can fail: importing runpod as it comes starts py-cpuinfo's probe process.
    seen = _watch("import runpod")
    assert [args for args in seen["started"] if "cpuinfo" in args]


@pytest.mark.parametrize("worker", ["stt", "tts", pytest.param("llm", marks=pytest.mark.slow)])
def test_a_worker_imports_and_starts_its_sdk_without_the_cpu_probe(worker, tmp_path):
    # What the image's `python -m workers.<worker>.handler` runs before the SDK's loop: the handler module (and
    # its model load), then the SDK's import.
    env = {"MODEL_DIR": str(baked_folder(worker, tmp_path)), "ENGINE": "piper"}
    seen = _watch(f"import workers.{worker}.handler\nfrom workers.common.sdk import import_sdk\nimport_sdk()", env)
    assert not [args for args in seen["started"] if "cpuinfo" in args], seen["started"]


def test_the_benchmark_starts_each_worker_with_its_image_command():
    for worker in NAMES:
        assert image_command(worker) == [sys.executable, "-m", f"workers.{worker}.handler"]


def _done(job) -> dict:
    output = job.result["output"]
    assert output[-1]["type"] == "done", output[-1]
    return output[-1]


@pytest.mark.slow
@pytest.mark.skipif(not espeak_available(), reason="needs the espeak-ng binary (Debian package espeak-ng)")
def test_stt_started_by_its_image_command_transcribes_its_first_job(tmp_path):
    said = "The quick brown fox jumps over the lazy dog. Please call me back tomorrow morning."
    job_input = {"audio_base64": base64.b64encode(espeak_wav(said)).decode()}
    run = asyncio.run(run_worker("stt", baked_folder("stt", tmp_path), [job_input, job_input]))
    first, second = (_done(job) for job in run.jobs)
    assert wer(said, first["text"]) < 0.2, first["text"]
    assert first["text"] == second["text"]
    assert first["metrics"]["load_s"] > 0 and second["metrics"]["load_s"] == 0  # the load is billed to job one


@pytest.mark.slow
def test_tts_started_by_its_image_command_speaks_its_first_job(tmp_path):
    job_input = {"text": "Hello from voicepod. This is the first job.", "format": "wav", "chunk_ms": 5000}
    run = asyncio.run(run_worker("tts", baked_folder("tts", tmp_path), [job_input]))
    job = run.jobs[0]
    done = _done(job)
    assert done["sentences"] == 2 and done["duration"] > 1.5
    audio = b"".join(base64.b64decode(chunk["audio"]) for chunk in job.chunks if chunk.get("type") == "audio")
    samples, rate = read_wav(audio)
    assert len(samples) / rate == pytest.approx(done["duration"], abs=0.05)
    assert np.abs(samples).max() > 0.1  # speech, not silence


@pytest.mark.slow
def test_llm_started_by_its_image_command_answers_its_first_job(tmp_path):
    job_input = json.loads((REPO / "workers" / "llm" / "test_input.json").read_text())["input"]
    run = asyncio.run(run_worker("llm", baked_folder("llm", tmp_path), [job_input, job_input]))
    first, second = (_done(job) for job in run.jobs)
    assert "Paris" in first["text"], first["text"]
    assert first["text"] == second["text"]  # greedy: the warm-up before ready changed nothing


@pytest.mark.slow
def test_stt_embedded_base_is_baked_on_first_use_and_transcribes_a_phone_question(tmp_path):
    # The phone's choice of Whisper (benchmarks/phone_stt.py) as a setting: no MODEL_DIR, STT_EMBEDDED=base.
    from benchmarks.utterances import COMPLETE, of_kind, spoken_set
    from workers.stt.bake import BASE_SIZE

    clip = of_kind(spoken_set(), COMPLETE)[4]  # "What is the capital of France?", in the Piper voice
    job_input = {"audio_base64": base64.b64encode(clip.mulaw(0.3)).decode(), "audio_format": "mulaw"}
    env = {"MODEL_DIR": "", "STT_EMBEDDED": "base", "VOICEPOD_CACHE": str(tmp_path)}
    run = asyncio.run(run_worker("stt", tmp_path / "unused", [job_input], env=env))
    assert wer(clip.utterance.text, _done(run.jobs[0])["text"]) < 0.2, _done(run.jobs[0])["text"]
    assert (tmp_path / "models" / "whisper-base" / "model.bin").stat().st_size == BASE_SIZE
    assert any("whisper-base" in line for _, line in run.lines)


def test_stt_refuses_an_unknown_embedded_model_in_one_line():
    env = {**os.environ, "MODEL_DIR": "", "MODEL_NAME": "", "STT_EMBEDDED": "small"}
    result = subprocess.run([sys.executable, "-c", "import workers.stt.handler"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == "STT_EMBEDDED must be one of tiny.en, base, not 'small'"
