"""Cold start of each worker, from nothing to ready for jobs and to the first chunk of a first job.

``python -m benchmarks.cold_start [--runs 3] [--worker stt] [--out benchmarks/results]``

Each run starts ``voicepod serve-local`` with one endpoint and one worker process, as a RunPod worker starts
in its container: the model comes from a baked folder (``MODEL_DIR``, made by ``workers.common.bake``, the
same step as the images) with the hub off (``HF_HUB_OFFLINE=1``). Measured per run, in seconds:

- ``ready_s``: process start until the worker has loaded its model and asks for jobs;
- ``first_chunk_s`` / ``first_job_s``: from sending the worker's own ``test_input.json`` until its first chunk
  and its last arrive;
- ``load_s``: the model load alone, as the worker bills it in the first job's metrics.

The reported value of each is the median over the runs. After the first run the weights are in the page
cache, as they are on a RunPod host that already pulled the image; a first pull from a registry is not
measured here. Results go to ``cold_start.json`` and ``cold_start.md`` in the output folder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from voicepod.local import LocalServer

from workers.common.bake import bake

REPO = Path(__file__).resolve().parent.parent
WORKERS = ("stt", "llm", "tts")
# Worker settings beyond MODEL_DIR: the TTS folder holds a Piper voice, which the piper engine loads.
EXTRA_ENV = {"tts": {"ENGINE": "piper"}}


@dataclass
class Run:
    """One cold start; all times in seconds."""

    ready_s: float
    first_chunk_s: float
    first_job_s: float
    load_s: float
    chunks: int


def baked_folder(worker: str, cache: Path) -> Path:
    """The worker's embedded model baked into ``cache/<worker>`` (the LLM into its usual baked folder)."""
    if worker == "llm":
        from workers.llm.bake import default_model_dir

        folder = default_model_dir()
    else:
        folder = cache / worker
    return bake(worker, folder)


def check_llm_folder(folder: Path) -> list[str]:
    """The weight files of a baked LLM folder; fails unless it is safetensors only (the GGUF takes ~33 s)."""
    weights = sorted(p.name for p in folder.iterdir() if p.suffix in (".safetensors", ".gguf", ".bin"))
    if not weights or any(not name.endswith(".safetensors") for name in weights):
        raise RuntimeError(f"{folder} must hold safetensors weights only, has {weights}")
    return weights


async def _first_job(server: LocalServer, worker: str, job_input: dict[str, Any]) -> tuple[float, float, dict]:
    async with server.endpoint(worker, timeout=120) as endpoint:
        started = time.perf_counter()
        job = await endpoint.run(job_input)
        first = None
        last: dict[str, Any] = {}
        count = 0
        async for chunk in job.stream():
            if first is None:
                first = time.perf_counter() - started
            last = chunk
            count += 1
        if last.get("type") != "done":
            raise RuntimeError(f"{worker}: the first job did not finish with a done chunk: {last}")
        return first or 0.0, time.perf_counter() - started, {**last, "_chunks": count}


def measure(worker: str, model_dir: Path) -> Run:
    """Start the worker once from nothing and run its test input."""
    job_input = json.loads((REPO / "workers" / worker / "test_input.json").read_text())["input"]
    env = {"MODEL_DIR": str(model_dir), "HF_HUB_OFFLINE": "1", **EXTRA_ENV.get(worker, {})}
    started = time.perf_counter()
    with LocalServer({worker: REPO / "workers" / worker / "handler.py"}, env=env, ready_timeout_s=300) as server:
        ready = time.perf_counter() - started
        first, total, done = asyncio.run(_first_job(server, worker, job_input))
    return Run(round(ready, 3), round(first, 3), round(total, 3), float(done["metrics"]["load_s"]), done["_chunks"])


def benchmark(workers: list[str], runs: int, cache: Path) -> dict[str, Any]:
    """Measure each worker ``runs`` times; return the results as the JSON report holds them."""
    results: dict[str, Any] = {}
    for worker in workers:
        folder = baked_folder(worker, cache)
        entry: dict[str, Any] = {"model_dir": str(folder)}
        if worker == "llm":
            entry["weights"] = check_llm_folder(folder)
        measured = [measure(worker, folder) for _ in range(runs)]
        entry["runs"] = [asdict(run) for run in measured]
        entry["median"] = {key: round(statistics.median(getattr(run, key) for run in measured), 3)
                           for key in ("ready_s", "first_chunk_s", "first_job_s", "load_s")}
        results[worker] = entry
    return {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "device": "cpu"},
        "runs": runs,
        "workers": results,
    }


def markdown(report: dict[str, Any]) -> str:
    """A table of the medians."""
    lines = [
        f"Cold start, median of {report['runs']} run(s), {report['machine']['cpus']} CPU cores, no GPU "
        "(seconds; `benchmarks/cold_start.py`).",
        "",
        "| worker | ready for jobs | first chunk of first job | first job done | model load |",
        "|---|---|---|---|---|",
    ]
    for worker, entry in report["workers"].items():
        m = entry["median"]
        lines.append(f"| {worker} | {m['ready_s']:.2f} | {m['ready_s'] + m['first_chunk_s']:.2f} "
                     f"(+{m['first_chunk_s']:.2f}) | {m['ready_s'] + m['first_job_s']:.2f} | {m['load_s']:.2f} |")
    lines += ["", "First chunk and done are counted from process start; in brackets, from sending the job."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cold_start", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="cold starts per worker (the median is reported)")
    parser.add_argument("--worker", action="append", choices=WORKERS, help="only this worker (repeatable)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="folder for the results")
    parser.add_argument("--cache", type=Path, default=None,
                        help="where to bake the STT and TTS models (default: the voicepod cache folder)")
    args = parser.parse_args(argv)
    cache = args.cache or Path(os.environ.get("VOICEPOD_CACHE") or Path.home() / ".cache" / "voicepod") / "baked"
    report = benchmark(args.worker or list(WORKERS), args.runs, cache)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cold_start.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "cold_start.md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
