"""Load and soak: concurrent voice sessions doing full turns (STT -> LLM -> TTS) through the local emulator.

Every stream poll's reply is recorded on the way in, so the run can check, per job, that the chunks the
endpoint handed out are exactly the job's aggregate output: complete, in ``seq`` order, none twice. Client
memory (tracemalloc and RSS) is sampled after each round. ``python -m benchmarks.soak`` (``make soak``) runs
the long version and writes ``benchmarks/results/soak.json``; tests/test_load.py runs a short one in CI.

``python -m benchmarks.soak --phone [--minutes M] [--calls N] [--out DIR]`` soaks the phone server instead
(:mod:`benchmarks.phone_soak`) and writes ``DIR/phone_soak.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time
import tracemalloc
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from voicepod import registry
from voicepod.agent import Audio, Done, VoiceAgent
from voicepod.endpoint import Endpoint
from voicepod.local import LocalServer

REPO = Path(__file__).resolve().parent.parent
HANDLERS = registry.handlers(REPO)
RESULTS = REPO / "benchmarks" / "results"
LLM_OPTIONS = {"max_tokens": 12, "temperature": 0}


class Recorder(httpx.AsyncBaseTransport):
    """A pass-through transport that keeps the ``seq`` of every chunk each ``/stream/`` reply carried."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=200))
        self.seqs: dict[tuple[str, str], list[int]] = defaultdict(list)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        parts = request.url.path.split("/")
        if len(parts) >= 2 and parts[-2] == "stream":
            body = await response.aread()
            await response.aclose()
            for item in json.loads(body).get("stream") or []:
                self.seqs[(parts[-3], parts[-1])].append(item["output"]["seq"])
            return httpx.Response(response.status_code, headers=response.headers, content=body)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class LoadReport:
    sessions: int
    rounds: int
    turns: int = 0
    turns_failed: int = 0
    jobs: int = 0
    jobs_with_bad_streams: int = 0
    chunks: int = 0
    audio_chunks: int = 0
    wall_s: float = 0.0
    turns_per_s: float = 0.0
    jobs_per_s: float = 0.0
    turn_s: dict[str, float] = field(default_factory=dict)
    voice_to_voice_s: dict[str, float] = field(default_factory=dict)
    traced_kib_after_round: list[float] = field(default_factory=list)
    rss_mib_after_round: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def rss_mib() -> float:
    """This process's resident memory now (Linux), in MiB; 0 where /proc is missing."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except OSError:
        return 0.0
    import os

    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p95 and max of ``values`` in seconds (empty if there are none)."""
    if not values:
        return {}
    cuts = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
    return {"p50": round(cuts[49], 3), "p95": round(cuts[94], 3), "max": round(max(values), 3)}


async def _turn(agent: VoiceAgent, audio: bytes) -> tuple[Done, int]:
    audio_events, last_sentence = 0, -1
    done: Done | None = None
    async for event in agent.respond(audio, history=[]):  # a fresh history: memory must not grow by design
        if isinstance(event, Audio):
            assert event.sentence >= last_sentence, "reply audio out of sentence order"
            last_sentence = event.sentence
            audio_events += 1
        elif isinstance(event, Done):
            done = event
    assert done is not None and not done.interrupted, "turn ended without Done"
    return done, audio_events


async def run_load(
    base_url: str,
    audio: bytes,
    sessions: int,
    rounds: int,
    api_key: str | None = None,
    llm_options: dict[str, Any] | None = None,
) -> LoadReport:
    """Run ``sessions`` concurrent sessions for ``rounds`` turns each against the endpoints at ``base_url``
    (named stt, llm, tts), then check every job's stream against its aggregate output. ``llm_options``: the
    agent's LLM settings (default: 12 greedy tokens, a short spoken reply)."""
    report = LoadReport(sessions, rounds)
    recorder = Recorder()
    http = httpx.AsyncClient(transport=recorder, timeout=120)
    endpoints = {name: Endpoint(name, api_key, base_url, http_client=http) for name in HANDLERS}
    agents = [VoiceAgent(endpoints["stt"], endpoints["llm"], endpoints["tts"], llm_options=llm_options or LLM_OPTIONS)
              for _ in range(sessions)]
    turn_s: list[float] = []
    v2v: list[float] = []
    tracemalloc.start()
    started = time.monotonic()
    try:
        for _ in range(rounds):
            outcomes = await asyncio.gather(*(_turn(agent, audio) for agent in agents), return_exceptions=True)
            for outcome in outcomes:
                report.turns += 1
                if isinstance(outcome, BaseException):
                    report.turns_failed += 1
                    report.errors.append(f"{type(outcome).__name__}: {outcome}"[:300])
                    continue
                done, audio_events = outcome
                report.audio_chunks += audio_events
                turn_s.append(done.metrics.total_s or 0.0)
                if done.metrics.voice_to_voice_s is not None:
                    v2v.append(done.metrics.voice_to_voice_s)
            gc.collect()
            report.traced_kib_after_round.append(round(tracemalloc.get_traced_memory()[0] / 1024, 1))
            report.rss_mib_after_round.append(rss_mib())
        report.wall_s = round(time.monotonic() - started, 2)
        tracemalloc.stop()
        await _check_streams(endpoints, recorder, report)
    finally:
        await http.aclose()
    report.turns_per_s = round(report.turns / report.wall_s, 3) if report.wall_s else 0.0
    report.jobs_per_s = round(report.jobs / report.wall_s, 3) if report.wall_s else 0.0
    report.turn_s = percentiles(turn_s)
    report.voice_to_voice_s = percentiles(v2v)
    return report


async def _check_streams(endpoints: dict[str, Endpoint], recorder: Recorder, report: LoadReport) -> None:
    for (name, job_id), seqs in recorder.seqs.items():
        report.jobs += 1
        report.chunks += len(seqs)
        status = await endpoints[name].job(job_id).status()
        output = status.get("output")
        expected = [o["seq"] for o in output] if isinstance(output, list) else None
        complete = status.get("status") == "COMPLETED" and output and output[-1].get("type") == "done"
        if seqs != list(range(len(seqs))) or seqs != expected or not complete:
            report.jobs_with_bad_streams += 1
            report.errors.append(f"{name} job {job_id}: streamed {seqs}, aggregate {expected}, {status.get('status')}")


def serve(workers: int = 2) -> LocalServer:
    """The three real workers behind the emulator, ``workers`` processes each."""
    return LocalServer(HANDLERS, workers={name: workers for name in HANDLERS}, ready_timeout_s=600)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phone", action="store_true",
                        help="soak the phone server instead: simulated callers over voicepod phone and serve-local, "
                        "every process's memory sampled (benchmarks/phone_soak.py)")
    parser.add_argument("--minutes", type=float, default=3.0, help="--phone: how long calls keep coming (default 3)")
    parser.add_argument("--calls", type=int, default=4, help="--phone: calls at once (default 4)")
    parser.add_argument("--sessions", type=int, help="the agent's soak: sessions at once (default 20)")
    parser.add_argument("--rounds", type=int, help="the agent's soak: turns a session (default 15)")
    parser.add_argument("--workers", type=int, help="the agent's soak: workers per endpoint (default 2)")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="a folder: soak.json (or phone_soak.json with --phone) is written there")
    args = parser.parse_args(argv)
    given = [name for name in ("sessions", "rounds", "workers") if getattr(args, name) is not None]
    if args.phone and given:  # the phone soak runs one worker of each kind, as a deployment's smallest set
        parser.error(f"--{given[0]} is the agent's soak's: the phone soak takes --minutes and --calls")
    if args.phone:
        _phone(args.minutes, args.calls, args.out)
        return
    from tests.speech import espeak_wav

    audio = espeak_wav("What is the capital of France?")
    with serve(args.workers or 2) as server:
        report = asyncio.run(run_load(server.base_url, audio, args.sessions or 20, args.rounds or 15))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    print(json.dumps(asdict(report), indent=2))
    if report.turns_failed or report.jobs_with_bad_streams:
        raise SystemExit(1)


def _phone(minutes: float, calls: int, out: Path) -> None:
    from benchmarks import phone_soak

    report = phone_soak.run(minutes, calls, out)
    summary = {k: v for k, v in asdict(report).items() if k not in ("t_s", "rss_mb", "emulator_mb", "fds", "tasks")}
    print(json.dumps(summary, indent=2))
    if report.lost or not report.flat or any(report.jobs_left_running.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
