"""The phone soak: simulated callers over ``voicepod phone`` and serve-local's three workers for minutes or hours,
calls starting and ending through the run (questions, pauses, barge-ins, hang-ups and dropped lines), with every
process's memory, the phone server's open files and asyncio tasks sampled throughout.

``python -m benchmarks.soak --phone [--minutes M] [--calls N] [--out DIR]`` writes ``DIR/phone_soak.json``;
tests/test_phone_reliability.py runs a short one in CI. Memory is anonymous resident memory (``rss - shared``, as
tests/worker_memory.py reads it: a memory-mapped model's pages come and go with the page cache), in MiB, under
the issue's name ``rss_mb``; a worker's ``espeak-ng`` child is not counted. The run is flat when no process's
memory grew more than 10% over the last two thirds of the run (:func:`growth`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks import REPO
from benchmarks.phone_traffic import (
    BARGE_IN,
    PAUSED_STEP,
    PHONE_ARGS,
    PLAIN,
    CallCheck,
    CallOutcome,
    Clips,
    call_and_check,
    plan,
)

FLAT_GROWTH = 0.10
# Each line's first call, so that a short soak has each kind of step: a barge-in, a pause inside a question.
FIRST_CALLS = ([BARGE_IN, PLAIN], [PAUSED_STEP, PLAIN], [PLAIN])
PROCESSES = ("phone", "stt", "llm", "tts")


def growth(samples: list[float]) -> float:
    """How much ``samples`` grew over their last two thirds, as a share: the median of the last tenth against the
    median of the tenth that starts a third of the way in (medians: a sample taken mid-job carries the job's
    buffers, which are not growth). 0 for fewer than 6 samples."""
    if len(samples) < 6:
        return 0.0
    width = max(2, len(samples) // 10)
    third = len(samples) // 3
    base = statistics.median(samples[third:third + width])
    return (statistics.median(samples[-width:]) - base) / base if base else 0.0


@dataclass
class Samples:
    """What the sampler read, every ``every_s`` seconds: seconds since the start, each process's memory in MiB
    (the workers summed by kind), serve-local's own (the emulator, not part of a deployment: it keeps finished jobs'
    results for 30 minutes, as RunPod does), the phone server's open file descriptors and asyncio tasks."""

    t_s: list[float] = field(default_factory=list)
    rss_mb: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in PROCESSES})
    emulator_mb: list[float] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    tasks: list[int] = field(default_factory=list)


class Sampler:
    """Samples in a thread (a busy event loop must not skip samples), from ``after_s`` seconds on, until stopped."""

    def __init__(self, server: Any, phone: Any, every_s: float, after_s: float = 0.0):
        self.server, self.phone, self.every_s, self.after_s = server, phone, every_s, after_s
        self.samples = Samples()
        self.failures: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = time.monotonic()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def idle(self) -> tuple[int, int]:
        """The phone server's open file descriptors and asyncio tasks now."""
        return psutil.Process(self.phone.process.pid).num_fds(), httpx.get(f"{self.phone.url}/health").json()["tasks"]

    def _run(self) -> None:
        from tests.worker_memory import anonymous_mib, workers_memory_by_endpoint

        try:
            if self._stop.wait(self.after_s):
                return
            while True:
                s = self.samples
                workers = workers_memory_by_endpoint(self.server)
                fds, tasks = self.idle()
                s.t_s.append(round(time.monotonic() - self._started - self.after_s, 1))
                s.rss_mb["phone"].append(round(anonymous_mib(self.phone.process.pid), 1))
                for name in PROCESSES[1:]:
                    s.rss_mb[name].append(round(workers[name], 1))
                s.emulator_mb.append(round(anonymous_mib(self.server.process.pid), 1))
                s.fds.append(fds)
                s.tasks.append(tasks)
                if self._stop.wait(self.every_s):
                    return
        except BaseException as exc:  # noqa: BLE001 - reported by the soak, not lost with the thread
            self.failures.append(exc)


@dataclass
class PhoneSoakReport:
    minutes: float
    calls_at_once: int
    warm_up_minutes: float = 0.0
    calls: int = 0
    broken_calls: int = 0
    turns: int = 0
    asked: int = 0
    answered: int = 0
    lost: int = 0
    lost_detail: list[str] = field(default_factory=list)
    crossed_bytes: int = 0
    verified_bytes: int = 0
    interrupted_turns: int = 0
    barge_ins: int = 0
    cancelled_speculations: int = 0
    dropped_lines: int = 0
    jobs_left_running: dict[str, int] = field(default_factory=dict)
    mouth_to_ear_s: dict[str, float] = field(default_factory=dict)
    idle_before: dict[str, int] = field(default_factory=dict)
    idle_after: dict[str, int] = field(default_factory=dict)
    growth: dict[str, float] = field(default_factory=dict)
    flat: bool = False
    wall_s: float = 0.0
    every_s: float = 0.0
    t_s: list[float] = field(default_factory=list)
    rss_mb: dict[str, list[float]] = field(default_factory=dict)
    emulator_mb: list[float] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    tasks: list[int] = field(default_factory=list)

    def add(self, outcome: CallOutcome, check: CallCheck) -> None:
        self.calls += 1
        self.broken_calls += outcome.error is not None
        self.dropped_lines += outcome.hang_up == "drop"
        self.turns += check.turns
        self.asked += check.asked
        self.answered += check.answered
        self.lost += check.asked - check.answered
        self.lost_detail += check.lost
        self.crossed_bytes += check.crossed_bytes
        self.verified_bytes += check.verified_bytes
        self.interrupted_turns += check.interrupted_turns
        self.barge_ins += check.clears
        self.cancelled_speculations += check.cancelled_speculations


async def _caller_slot(slot: int, deadline: float, phone: Any, endpoints: dict[str, Any], clips: Clips,
                       report: PhoneSoakReport, m2e: list[float], seed: int) -> None:
    """One line's callers, one call after another until ``deadline``: each call 1 to 3 questions, hung up (the
    line's second call, and one in five after it, drops the connection instead), checked against its record as soon
    as it ends."""
    rng = random.Random(seed * 1000 + slot)
    await asyncio.sleep(slot * 1.5)  # the lines start apart, as calls do
    placed = 0
    while time.monotonic() < deadline:
        steps = FIRST_CALLS[slot % len(FIRST_CALLS)] if not placed else plan(rng, rng.randint(1, 3))
        hang_up = "drop" if placed == 1 or (placed > 1 and rng.random() < 0.2) else "stop"
        placed += 1
        outcome, check = await call_and_check(phone, endpoints, clips, steps, rng, hang_up=hang_up)
        report.add(outcome, check)
        m2e += check.mouth_to_ear_s
        await asyncio.sleep(rng.uniform(0.5, 3.0))


async def _jobs_left(endpoints: dict[str, Any], settle_s: float = 30.0) -> dict[str, int]:
    """Jobs still queued or running on each endpoint once the calls are over (given ``settle_s`` to finish: a TTS
    job that ended on its own as its call hung up is over by then)."""
    deadline = time.monotonic() + settle_s
    while True:
        left = {}
        for name, endpoint in endpoints.items():
            jobs = (await endpoint.health())["jobs"]
            left[name] = jobs["inProgress"] + jobs["inQueue"]
        if not any(left.values()) or time.monotonic() > deadline:
            return left
        await asyncio.sleep(1.0)


async def _settled(sampler: Sampler, tasks_before: int, settle_s: float = 15.0) -> dict[str, int]:
    """The phone server's open files and tasks once the calls are over: given ``settle_s`` to get back to the tasks
    it had before the first call (a call's last tasks end a moment after its socket)."""
    deadline = time.monotonic() + settle_s
    while True:
        fds, tasks = await asyncio.to_thread(sampler.idle)
        if tasks <= tasks_before or time.monotonic() > deadline:
            return {"fds": fds, "tasks": tasks}
        await asyncio.sleep(1.0)


async def soak_calls(server: Any, phone: Any, minutes: float, calls: int, every_s: float, seed: int = 0,
                     warm_up_minutes: float = 0.0) -> PhoneSoakReport:
    """Run ``calls`` lines of callers for ``minutes`` on ``phone`` (a running ``tests.phone_util.PhoneServer``
    over ``server``, a running ``LocalServer``), sampling every ``every_s`` seconds; with ``warm_up_minutes``, the
    calls begin that long before the sampling (their questions are checked all the same)."""
    from voicepod.registry import CHAIN

    from benchmarks.soak import percentiles

    clips = await asyncio.to_thread(Clips.spoken)
    report = PhoneSoakReport(minutes, calls, warm_up_minutes=warm_up_minutes, every_s=every_s)
    endpoints = {stage: server.endpoint(stage, timeout=120) for stage in CHAIN}
    m2e: list[float] = []
    started = time.monotonic()
    try:
        with Sampler(server, phone, every_s, after_s=warm_up_minutes * 60) as sampler:
            fds, tasks = sampler.idle()
            report.idle_before = {"fds": fds, "tasks": tasks}
            deadline = started + (warm_up_minutes + minutes) * 60
            await asyncio.gather(*(_caller_slot(i, deadline, phone, endpoints, clips, report, m2e, seed)
                                   for i in range(calls)))
            report.jobs_left_running = await _jobs_left(endpoints)
            report.idle_after = await _settled(sampler, report.idle_before["tasks"])
        if sampler.failures:
            raise sampler.failures[0]
    finally:
        for endpoint in endpoints.values():
            await endpoint.aclose()
    report.wall_s = round(time.monotonic() - started, 1)
    s = sampler.samples
    report.t_s, report.rss_mb, report.emulator_mb, report.fds, report.tasks = s.t_s, s.rss_mb, s.emulator_mb, \
        s.fds, s.tasks
    report.growth = {name: round(growth(values), 4) for name, values in s.rss_mb.items()}
    report.flat = all(g <= FLAT_GROWTH for g in report.growth.values())
    report.mouth_to_ear_s = percentiles(m2e)
    return report


@contextlib.contextmanager
def phone_over_workers(phone_args: list[str] | None = None, env: dict[str, str] | None = None):
    """serve-local with one worker of each kind (their default ``MAX_CONCURRENCY``; ``env`` added to the workers'
    environment) and ``voicepod phone`` over it, with the simulated traffic's settings: ``(server, phone)``."""
    from voicepod import registry
    from voicepod.local import LocalServer

    from tests.phone_util import PhoneServer

    with LocalServer(registry.handlers(REPO), env=env, ready_timeout_s=600) as server, \
            PhoneServer(server.base_url, [*PHONE_ARGS, *(phone_args or [])]) as phone:
        yield server, phone


def run(minutes: float, calls: int, out: Path, every_s: float | None = None) -> PhoneSoakReport:
    """The soak on fresh workers; writes ``out/phone_soak.json``."""
    import json

    every_s = every_s or max(1.0, minutes * 60 / 200)  # about 200 samples a run
    with phone_over_workers() as (server, phone):
        report = asyncio.run(soak_calls(server, phone, minutes, calls, every_s))
    from benchmarks import machine

    out.mkdir(parents=True, exist_ok=True)
    measured = {"device": machine(), "date": time.strftime("%Y-%m-%d")}
    (out / "phone_soak.json").write_text(json.dumps(measured | asdict(report), indent=2) + "\n")
    return report
