"""Cold start of each worker, from process start to ready for jobs, part by part, and its first job against warm ones.

``python -m benchmarks.cold_start [--runs 5] [--worker stt] [--profile] [--out benchmarks/results]``

Each run starts the worker with its Docker image's own command line (the ``CMD`` of ``Dockerfile.<worker>``, such
as ``python -m workers.stt.handler``) and the image's settings: the model from a baked folder (``MODEL_DIR``, made
by ``workers.common.bake``, the same step as the images) with the hub off (``HF_HUB_OFFLINE=1``). Its runpod SDK
takes jobs from a local stand-in for RunPod's job API (``benchmarks/job_feed.py``). Measured per run, in seconds
from process start:

- ``interpreter_s``: starting Python (``python -c pass``, measured apart, once per benchmark);
- ``imports_s``: the rest until the worker starts loading its model (its own ``loading`` log line);
- ``load_s``: the model load, from that line to its ``loaded`` line (the worker's ``timed_load``);
- ``sdk_s``: from there until the worker first asks for a job: importing and starting the runpod SDK, and
  meanwhile, in a thread, the worker's warm-up job through its handler (``workers/common/warm_up.py``; off with
  ``--env WARM_UP=0``),
  whose own seconds, as its ``warmed up`` line says, are ``warm_up_s``;
- ``ready_s``: process start until that first request: the sum of the four;
- ``ready_cpu_s``: the CPU seconds the worker process (with the children it waited for) had used by then, from
  ``/proc``: unlike the wall times, it hardly grows when other programs share the CPU;

then, from handing a job to the worker until its first chunk and its result arrive: ``first_job_s`` and
``first_chunk_s`` for the first job (its own ``test_input.json``, handed out as soon as the worker is ready) and
``warm_job_s`` / ``warm_chunk_s``, the median of the same job run again ``--warm-jobs`` times.

``--profile`` adds as many runs with ``PYTHONPROFILEIMPORTTIME=1`` (what ``python -X importtime`` prints, set in
the environment so the command line stays the image's) and reports the seconds of the top-level imports of each
package: before the model load, inside it (libraries that import their code lazily, as transformers does) and
after it (the SDK). Those runs are slower for the profiling; their timings are not in the medians.

Reported values are medians over the runs. After the first run the weights are in the page cache, as on a RunPod
host that already pulled the image; pulling it is not measured, nor are RunPod's own host checks (the SDK's
fitness checks need the internet: ``RUNPOD_SKIP_AUTO_SYSTEM_CHECKS``). Results go to ``cold_start.json`` and
``cold_start.md`` in the output folder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from voicepod.registry import NAMES

from benchmarks.job_feed import FedJob, JobFeed
from workers.common.bake import bake

REPO = Path(__file__).resolve().parent.parent
WORKERS = NAMES  # the workers voicepod knows (voicepod.registry)
# Settings beyond MODEL_DIR: the TTS image runs the transformers VITS engine on a GPU; the baked folder here is
# the embedded Piper voice, which the piper engine loads (the CPU default).
EXTRA_ENV = {"tts": {"ENGINE": "piper"}}
# The lines the worker's timed_load logs (workers/common/models.py) around its model load.
_LOADING = re.compile(r" voicepod\.worker loading ")
_LOADED = re.compile(r" voicepod\.worker loaded ")
_WARMED_UP = re.compile(r" voicepod\.worker warmed up .* in ([\d.]+) s$")
_IMPORT_TIME = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)")
PHASES = ("before_load", "during_load", "after_load")


@dataclass
class Run:
    """One cold start; all times in seconds."""

    ready_s: float
    ready_cpu_s: float
    imports_s: float
    load_s: float
    warm_up_s: float
    sdk_s: float
    first_chunk_s: float
    first_job_s: float
    warm_chunk_s: float
    warm_job_s: float
    chunks: int
    imports_by_package: dict[str, dict[str, float]] = field(default_factory=dict)


def image_command(worker: str) -> list[str]:
    """The ``CMD`` of ``Dockerfile.<worker>``, run by this interpreter (the image's ``python``)."""
    for line in (REPO / f"Dockerfile.{worker}").read_text().splitlines():
        if line.startswith("CMD "):
            command = json.loads(line[4:])
            return [sys.executable if command[0] in ("python", "python3") else command[0], *command[1:]]
    raise RuntimeError(f"Dockerfile.{worker} has no CMD line")


def baked_folder(worker: str, cache: Path, llm_model_dir: Path | None = None) -> Path:
    """The worker's model baked into ``cache/<worker>``; the LLM's is ``llm_model_dir`` if given, else the
    worker's own baked embedded model (``workers.llm.bake.default_model_dir``, baked there if missing)."""
    if worker == "llm":
        if llm_model_dir is not None:
            return llm_model_dir
        from workers.llm.bake import default_model_dir

        return bake(worker, default_model_dir())
    return bake(worker, cache / worker)


def check_llm_folder(folder: Path) -> list[str]:
    """The weight files of a baked LLM folder; fails unless it is safetensors only (the GGUF takes ~33 s)."""
    weights = sorted(p.name for p in folder.iterdir() if p.suffix in (".safetensors", ".gguf", ".bin"))
    if not weights or any(not name.endswith(".safetensors") for name in weights):
        raise RuntimeError(f"{folder} must hold safetensors weights only, has {weights}")
    return weights


def interpreter_start_s(runs: int) -> float:
    """Median wall time of ``python -c pass``: what any worker pays before its first import."""
    times = []
    for _ in range(max(3, runs)):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def imports_by_package(lines: list[tuple[float, str]]) -> dict[str, dict[str, float]]:
    """Seconds of the top-level imports of each package in ``PYTHONPROFILEIMPORTTIME`` output, per phase."""
    phases: dict[str, dict[str, float]] = {phase: defaultdict(float) for phase in PHASES}
    phase = PHASES[0]
    for _, line in lines:
        if _LOADING.search(line):
            phase = PHASES[1]
        elif _LOADED.search(line):
            phase = PHASES[2]
        elif (match := _IMPORT_TIME.match(line)) and not match.group(3):
            phases[phase][match.group(4).split(".")[0]] += int(match.group(2)) / 1e6
    return {name: dict(sorted(found.items(), key=lambda item: -item[1])) for name, found in phases.items()}


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process ``pid`` and of the children it has waited for (0 off Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields 14-17 of proc(5) (utime, stime, cutime, cstime), counted here from field 3 (state) on.
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


async def _read_lines(stream: asyncio.StreamReader, into: list[tuple[float, str]]) -> None:
    async for raw in stream:
        into.append((time.perf_counter(), raw.decode(errors="replace").rstrip()))


def _first(lines: list[tuple[float, str]], pattern: re.Pattern[str], what: str) -> float:
    found = next((at for at, line in lines if pattern.search(line)), None)
    if found is None:
        raise RuntimeError(f"the worker never logged its {what} line:\n" + "\n".join(line for _, line in lines[-40:]))
    return found


async def _wait(job: FedJob, process: asyncio.subprocess.Process, lines: list[tuple[float, str]]) -> FedJob:
    waiter = asyncio.ensure_future(job.done.wait())
    exited = asyncio.ensure_future(process.wait())
    await asyncio.wait({waiter, exited}, timeout=300, return_when=asyncio.FIRST_COMPLETED)
    exited.cancel()
    if not job.done.is_set():
        waiter.cancel()
        raise RuntimeError("the worker ended or hung before finishing a job:\n"
                           + "\n".join(line for _, line in lines[-40:]))
    last = (job.result or {}).get("output") or [{}]
    if not job.chunks or last[-1].get("type") != "done":
        raise RuntimeError(f"the job did not end in a done chunk: {job.result}")
    return job


@dataclass
class WorkerRun:
    """A worker process's life under :func:`run_worker`: its output lines (with ``perf_counter`` times), its jobs,
    when it started and when it first asked for a job."""

    lines: list[tuple[float, str]]
    jobs: list[FedJob]
    started: float
    ready: float
    ready_cpu_s: float


async def run_worker(worker: str, model_dir: Path, job_inputs: list[dict[str, Any]], profile: bool = False,
                     env: dict[str, str] | None = None) -> WorkerRun:
    """Start ``worker`` from nothing with its image's command line and the image's settings (plus ``env``), run
    ``job_inputs`` one after another (the first handed out as soon as the worker is ready), then stop it."""
    lines: list[tuple[float, str]] = []
    async with JobFeed() as feed:
        environment = {**os.environ, "MODEL_DIR": str(model_dir), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
                       **EXTRA_ENV.get(worker, {}), **(env or {}), **feed.environment(f"bench-{worker}")}
        if profile:
            environment["PYTHONPROFILEIMPORTTIME"] = "1"
        jobs = [feed.submit(job_inputs[0])]  # taken by the worker's first request, the moment it is ready
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            *image_command(worker), env=environment, cwd=str(REPO), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        assert process.stdout is not None
        cpu_at_ready: list[float] = []
        feed.on_first_poll = lambda: cpu_at_ready.append(cpu_seconds(process.pid))
        reader = asyncio.create_task(_read_lines(process.stdout, lines))
        try:
            await _wait(jobs[0], process, lines)
            for job_input in job_inputs[1:]:
                jobs.append(await _wait(feed.submit(job_input), process, lines))
        finally:
            if process.returncode is None:
                process.terminate()
            await process.wait()
            await reader
    return WorkerRun(lines=lines, jobs=jobs, started=started, ready=feed.first_poll_at or 0.0,
                     ready_cpu_s=cpu_at_ready[0] if cpu_at_ready else 0.0)


async def cold_start(worker: str, model_dir: Path, interpreter_s: float, warm_jobs: int, profile: bool,
                     env: dict[str, str] | None = None) -> Run:
    """Start ``worker`` once from nothing and run its test input ``1 + warm_jobs`` times, one after another."""
    job_input = json.loads((REPO / "workers" / worker / "test_input.json").read_text())["input"]
    run = await run_worker(worker, model_dir, [job_input] * (1 + warm_jobs), profile, env)
    loading, loaded = _first(run.lines, _LOADING, "loading"), _first(run.lines, _LOADED, "loaded")
    warm_up = next((float(match.group(1)) for _, line in run.lines if (match := _WARMED_UP.search(line))), 0.0)
    first, warm = run.jobs[0], run.jobs[1:]

    def since_taken(job: FedJob, at: float | None) -> float:
        return round((at or 0.0) - (job.taken_at or 0.0), 3)

    def warm_median(pick: Any) -> float:
        return round(statistics.median(since_taken(job, pick(job)) for job in warm), 3) if warm else 0.0

    return Run(
        ready_s=round(run.ready - run.started, 3),
        ready_cpu_s=round(run.ready_cpu_s, 3),
        imports_s=round(loading - run.started - interpreter_s, 3),
        load_s=round(loaded - loading, 3),
        warm_up_s=round(warm_up, 3),
        sdk_s=round(run.ready - loaded, 3),
        first_chunk_s=since_taken(first, first.first_chunk_at),
        first_job_s=since_taken(first, first.done_at),
        warm_chunk_s=warm_median(lambda job: job.first_chunk_at),
        warm_job_s=warm_median(lambda job: job.done_at),
        chunks=len(first.chunks),
        imports_by_package=imports_by_package(run.lines) if profile else {},
    )


_MEDIANS = ("ready_s", "ready_cpu_s", "imports_s", "load_s", "warm_up_s", "sdk_s", "first_chunk_s", "first_job_s",
            "warm_chunk_s", "warm_job_s")


def _median_imports(runs: list[Run], top: int = 8) -> dict[str, dict[str, float]]:
    merged: dict[str, dict[str, float]] = {}
    for phase in PHASES:
        names = {name for run in runs for name in run.imports_by_package.get(phase, {})}
        medians = {name: round(statistics.median(run.imports_by_package.get(phase, {}).get(name, 0.0)
                                                 for run in runs), 3) for name in names}
        merged[phase] = dict(sorted(medians.items(), key=lambda item: -item[1])[:top])
    return merged


def benchmark(workers: list[str], runs: int, cache: Path, warm_jobs: int = 2, profile: bool = False,
              llm_model_dir: Path | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Measure each worker ``runs`` times (with ``env`` added to the workers' settings); return the results as
    the JSON report holds them."""
    interpreter_s = interpreter_start_s(runs)
    results: dict[str, Any] = {}
    for worker in workers:
        folder = baked_folder(worker, cache, llm_model_dir)
        entry: dict[str, Any] = {"model_dir": str(folder), "command": " ".join(image_command(worker)[1:])}
        if worker == "llm":
            entry["weights"] = check_llm_folder(folder)
        measured = [asyncio.run(cold_start(worker, folder, interpreter_s, warm_jobs, False, env))
                    for _ in range(runs)]
        entry["runs"] = [asdict(run) for run in measured]
        entry["median"] = {key: round(statistics.median(getattr(run, key) for run in measured), 3)
                           for key in _MEDIANS}
        entry["median"]["interpreter_s"] = round(interpreter_s, 3)
        if profile:
            profiled = [asyncio.run(cold_start(worker, folder, interpreter_s, 0, True, env)) for _ in range(runs)]
            entry["imports_by_package"] = _median_imports(profiled)
        results[worker] = entry
    return {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "device": os.environ.get("DEVICE") or "default (cuda if visible, else cpu)",
                    # What else ran: the wall times grow with it, the CPU seconds hardly.
                    "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None},
        "runs": runs,
        "warm_jobs": warm_jobs,
        "env": env or {},
        "workers": results,
    }


def markdown(report: dict[str, Any]) -> str:
    """Tables of the medians: the parts of a cold start, first job against warm, imports by package."""
    lines = [
        f"Cold start, median of {report['runs']} run(s), {report['machine']['cpus']} CPU cores "
        f"(seconds; `python -m benchmarks.cold_start`; each worker started with its image's command line"
        + "".join(f", {key}={value}" for key, value in report.get("env", {}).items()) + ").",
        "",
        "| worker | ready for jobs | (CPU s) | interpreter | imports | model load | SDK start (beside it: warm-up) "
        "| first job | warm job "
        "| first / warm | first chunk, first / warm |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for worker, entry in report["workers"].items():
        m = entry["median"]
        ratio = m["first_job_s"] / m["warm_job_s"] if m["warm_job_s"] else float("nan")
        lines.append(
            f"| {worker} | {m['ready_s']:.2f} | {m['ready_cpu_s']:.2f} | {m['interpreter_s']:.2f} "
            f"| {m['imports_s']:.2f} | {m['load_s']:.2f} "
            f"| {m['sdk_s']:.2f} ({m['warm_up_s']:.2f}) | {m['first_job_s']:.2f} | {m['warm_job_s']:.2f} | {ratio:.2f} "
            f"| {m['first_chunk_s']:.2f} / {m['warm_chunk_s']:.2f} |"
        )
    lines += ["", "Ready for jobs is counted from process start; the jobs from handing them to the worker "
              f"(warm: median of {report['warm_jobs']} more of the same job after the first)."]
    profiled = {worker: entry["imports_by_package"] for worker, entry in report["workers"].items()
                if "imports_by_package" in entry}
    if profiled:
        lines += ["", "Top-level imports by package (seconds, `PYTHONPROFILEIMPORTTIME=1`, medians; a package is "
                  "charged with what it imports first):", "",
                  "| worker | before the model load | inside the model load | after it (SDK) |", "|---|---|---|---|"]
        for worker, phases in profiled.items():
            cells = [", ".join(f"{name} {seconds:.2f}" for name, seconds in phases[phase].items() if seconds >= 0.01)
                     or "-" for phase in PHASES]
            lines.append(f"| {worker} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cold_start", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="cold starts per worker (the median is reported)")
    parser.add_argument("--worker", action="append", choices=WORKERS, help="only this worker (repeatable)")
    parser.add_argument("--warm-jobs", type=int, default=2, help="jobs after the first, to time a warm job")
    parser.add_argument("--profile", action="store_true", help="also break the imports down by package")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="folder for the results")
    parser.add_argument("--cache", type=Path, default=None,
                        help="where to bake the STT and TTS models (default: the voicepod cache folder)")
    parser.add_argument("--llm-model-dir", type=Path, default=None,
                        help="a baked LLM folder to start (default: the LLM worker's own baked embedded model)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for the workers, such as WARM_UP=0 (repeatable)")
    args = parser.parse_args(argv)
    if bad := [item for item in args.env if "=" not in item]:
        parser.error(f"--env takes KEY=VALUE, got {bad[0]!r}")
    env = dict(item.split("=", 1) for item in args.env)
    cache = args.cache or Path(os.environ.get("VOICEPOD_CACHE") or Path.home() / ".cache" / "voicepod") / "baked"
    report = benchmark(args.worker or list(WORKERS), args.runs, cache, args.warm_jobs, args.profile,
                       args.llm_model_dir, env)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cold_start.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "cold_start.md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
