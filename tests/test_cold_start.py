"""The cold-start benchmark, one run per worker on the embedded models baked as the images bake theirs."""

from __future__ import annotations

import json

import pytest

from benchmarks.cold_start import check_llm_folder, main


@pytest.mark.slow
def test_cold_start_benchmark_reports_ready_and_first_chunk_for_each_worker(tmp_path):
    report = main(["--runs", "1", "--out", str(tmp_path / "results"), "--cache", str(tmp_path / "baked")])
    saved = json.loads((tmp_path / "results" / "cold_start.json").read_text())
    assert saved == report and set(saved["workers"]) == {"stt", "llm", "tts"}
    for worker, entry in saved["workers"].items():
        m = entry["median"]
        assert 0 < m["load_s"] < m["ready_s"], worker
        assert 0 < m["first_chunk_s"] <= m["first_job_s"], worker
        assert entry["runs"][0]["chunks"] >= 2, worker  # streamed: at least one chunk before done
    # The baked LLM is bf16 safetensors: seconds to load, where the GGUF takes ~33 s on these machines.
    assert saved["workers"]["llm"]["weights"] == ["model.safetensors"]
    assert saved["workers"]["llm"]["median"]["load_s"] < 25
    table = (tmp_path / "results" / "cold_start.md").read_text()
    assert all(f"| {worker} |" in table for worker in ("stt", "llm", "tts"))


def test_an_llm_folder_with_a_gguf_is_refused(tmp_path):
    (tmp_path / "model.safetensors").write_text("")
    (tmp_path / "gemma.gguf").write_text("")
    with pytest.raises(RuntimeError, match="safetensors weights only"):
        check_llm_folder(tmp_path)
