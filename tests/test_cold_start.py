"""The cold-start benchmark, one run per worker on the embedded models baked as the images bake theirs."""

from __future__ import annotations

import json

import pytest

from benchmarks.cold_start import check_llm_folder, imports_by_package, main


@pytest.mark.slow
def test_cold_start_benchmark_reports_the_parts_of_each_workers_start_and_its_jobs(tmp_path):
    report = main(["--runs", "1", "--warm-jobs", "1", "--profile", "--out", str(tmp_path / "results"),
                   "--cache", str(tmp_path / "baked")])
    saved = json.loads((tmp_path / "results" / "cold_start.json").read_text())
    assert saved == report and set(saved["workers"]) == {"stt", "llm", "tts"}
    for worker, entry in saved["workers"].items():
        m = entry["median"]
        assert entry["command"] == f"-m workers.{worker}.handler"
        parts = m["interpreter_s"] + m["imports_s"] + m["load_s"] + m["sdk_s"]
        assert 0 < m["load_s"] < m["ready_s"] and parts == pytest.approx(m["ready_s"], abs=0.01), worker
        assert m["warm_up_s"] > 0, worker  # the worker warmed up before it asked for a job
        assert 0 < m["first_chunk_s"] <= m["first_job_s"] and 0 < m["warm_chunk_s"] <= m["warm_job_s"], worker
        assert entry["runs"][0]["chunks"] >= 2, worker  # streamed: at least one chunk before done
        # The profile finds the worker's model runtime among its imports, and the SDK imported after the load.
        imported = {name for phase in entry["imports_by_package"].values() for name in phase}
        assert {"stt": "faster_whisper", "llm": "torch", "tts": "onnxruntime"}[worker] in imported, imported
        assert "runpod" in entry["imports_by_package"]["after_load"], worker
    # The baked LLM is bf16 safetensors: seconds to load, where the GGUF takes ~33 s on these machines.
    assert saved["workers"]["llm"]["weights"] == ["model.safetensors"]
    assert saved["workers"]["llm"]["median"]["load_s"] < 25
    table = (tmp_path / "results" / "cold_start.md").read_text()
    assert all(f"| {worker} |" in table for worker in ("stt", "llm", "tts"))


def test_imports_are_charged_to_their_top_package_in_the_phase_they_happen():
    lines = [(0.0, line) for line in [
        "import time: self [us] | cumulative | imported package",
        "import time:       100 |       2000 |   numpy.core",
        "import time:       300 |     500000 | numpy",
        "import time:       100 |     250000 | pydantic",
        "2026-01-01 00:00:00,000 voicepod.worker loading whisper",
        "import time:       100 |     125000 | numpy.fft",
        "2026-01-01 00:00:01,000 voicepod.worker loaded whisper in 1.00 s",
        "import time:       100 |     300000 | runpod",
    ]]
    assert imports_by_package(lines) == {
        "before_load": {"numpy": 0.5, "pydantic": 0.25},
        "during_load": {"numpy": 0.125},
        "after_load": {"runpod": 0.3},
    }


def test_an_llm_folder_with_a_gguf_is_refused(tmp_path):
    (tmp_path / "model.safetensors").write_text("")
    (tmp_path / "gemma.gguf").write_text("")
    with pytest.raises(RuntimeError, match="safetensors weights only"):
        check_llm_folder(tmp_path)
