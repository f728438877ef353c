"""What a local server's workers hold while jobs run: their peak resident memory, and the most jobs the endpoint had
in progress and in its queue at once (its ``/health``), sampled while the jobs run; and the check that a worker's
memory follows its ``MAX_CONCURRENCY``, not the number of jobs submitted."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil
from voicepod import Endpoint
from voicepod.local import LocalServer

T = TypeVar("T")


@dataclass
class Watched:
    peak_mib: float  # the anonymous memory of all the server's worker processes together
    most_in_progress: int
    most_in_queue: int


def workers_memory_mib(server: LocalServer) -> float:
    """The anonymous resident memory (heap, tensors, arenas) of the server's worker processes (the children of
    ``serve-local``), together, in MiB.

    Anonymous only: a worker's file-backed pages (a memory-mapped model file, its libraries) are counted in its RSS
    when touched and dropped under memory pressure, which would move the figure by hundreds of MiB for no job's sake.
    Not the workers' own children: a worker's ``espeak-ng`` is forked from it and, until it execs, shows the
    worker's whole memory as its own (the TTS worker's peak read twice its size that way).
    """
    return sum(workers_memory_by_endpoint(server).values())


def anonymous_mib(pid: int) -> float:
    """The anonymous resident memory of process ``pid`` in MiB (see :func:`workers_memory_mib` for why anonymous);
    0 if it has ended."""
    try:
        memory = psutil.Process(pid).memory_info()
    except psutil.Error:  # it ended between the listing and the reading
        return 0.0
    return (memory.rss - memory.shared) / 2**20  # on Linux, shared is RssFile + RssShmem


def worker_pids(server: LocalServer) -> dict[str, list[int]]:
    """The process ids of the server's workers (the children of ``serve-local``) by endpoint name: an endpoint's
    worker processes run its handler file. Not the workers' own children (``espeak-ng``)."""
    assert server.process is not None
    handlers = {path.resolve(): name for name, path in server.endpoints.items()}
    pids: dict[str, list[int]] = {name: [] for name in server.endpoints}
    for child in psutil.Process(server.process.pid).children():
        with contextlib.suppress(psutil.Error):  # a process that ended between the listing and the reading
            name = next((handlers[Path(arg).resolve()] for arg in child.cmdline()[1:]
                         if Path(arg).resolve() in handlers), None)
            if name is not None:
                pids[name].append(child.pid)
    return pids


def workers_memory_by_endpoint(server: LocalServer) -> dict[str, float]:
    """The anonymous resident memory of the server's worker processes in MiB, summed by endpoint name."""
    return {name: sum(anonymous_mib(pid) for pid in pids) for name, pids in worker_pids(server).items()}


async def watch(server: LocalServer, endpoint: Endpoint, work: Awaitable[T],
                every_s: float = 0.01) -> tuple[T, Watched]:
    """Await ``work`` while sampling the workers' memory (in a thread, so that a busy event loop cannot miss a
    peak) and the endpoint's job counts every ``every_s`` seconds; return its result and what was seen."""
    watched = Watched(workers_memory_mib(server), 0, 0)
    done = threading.Event()
    failures: list[BaseException] = []

    def sample_memory() -> None:
        try:
            while not done.wait(every_s):
                watched.peak_mib = max(watched.peak_mib, workers_memory_mib(server))
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test, not lost with the thread
            failures.append(exc)

    async def poll_health() -> None:
        while True:
            jobs = (await endpoint.health())["jobs"]
            watched.most_in_progress = max(watched.most_in_progress, jobs["inProgress"])
            watched.most_in_queue = max(watched.most_in_queue, jobs["inQueue"])
            await asyncio.sleep(every_s)

    sampler = threading.Thread(target=sample_memory, daemon=True)
    sampler.start()
    poller = asyncio.create_task(poll_health())
    try:
        result = await work
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller  # a /health that failed raises here
        done.set()
        sampler.join()
    if failures:
        raise failures[0]
    return result, watched


async def run_beyond_slots(server: LocalServer, endpoint: Endpoint, run_one: Callable[[], Awaitable[T]], slots: int,
                           slack_mib: float = 24.0, warm_rounds: int = 5) -> list[T]:
    """Run rounds of ``slots`` jobs at once until the workers' peak memory holds, then three times as many jobs at
    once; return every job's result.

    Checks that the worker ran ``slots`` at a time while the others waited in the queue, and that the workers' peak
    anonymous memory (:func:`workers_memory_mib`) with three times the jobs submitted rose above the last round's
    peak by less than a quarter of what the rounds had added to the idle workers' memory, or ``slack_mib`` if that
    is more. The rounds come first because allocators grow over the first runs of a job (the TTS worker's
    onnxruntime: +170, +60, then +4 MiB a round), which says nothing about how many jobs run at once.
    """
    idle = workers_memory_mib(server)
    results: list[T] = []
    rounds: list[Watched] = []
    while len(rounds) < 2 or rounds[-1].peak_mib - rounds[-2].peak_mib >= slack_mib:
        assert len(rounds) < warm_rounds, f"the workers' memory did not settle over {warm_rounds} rounds: {rounds}"
        done, at_round = await watch(server, endpoint, asyncio.gather(*(run_one() for _ in range(slots))))
        assert at_round.most_in_progress == slots, at_round
        results += done
        rounds.append(at_round)
    full = rounds[-1]
    more, at_more = await watch(server, endpoint, asyncio.gather(*(run_one() for _ in range(3 * slots))))
    assert at_more.most_in_progress == slots and at_more.most_in_queue >= slots, at_more
    added = full.peak_mib - idle
    assert at_more.peak_mib - full.peak_mib < max(added / 4, slack_mib), (idle, full, at_more)
    return [*results, *more]
