"""Job pickup on the runpod SDK's worker loop: a worker starts a job as soon as it can, not on the SDK's timers
(``workers.common.job_take``; issue 17 part 3).

Two halves. In process, the SDK's own ``get_jobs`` and our ``run_jobs`` run against a job-take that hands out jobs
as a long poll does; the test lets the event loop turn a few dozen times with no time passing (``sleep(0)``), so a
job that waits on any timer (the SDK's 0.1 s queue look, its 1 s sleep while full) cannot start: the outcome does
not depend on the machine's speed. Then over serve-local, the worker process as deployed (``start_worker``), with
bounds far from the stock loop's second, and the stock loop itself as the control.
"""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

import pytest
from voicepod.local import LocalServer

from benchmarks.pickup import busy_gaps, idle_delays

from .conftest import TEST_HANDLERS

job_take = pytest.importorskip("workers.common.job_take")

PICKUP = TEST_HANDLERS / "pickup.py"
TURNS = 50  # event-loop turns with no time passing; pickup needs about ten


class FakeJobApi:
    """A job-take long poll in process: ``submit`` queues a job; each job's handler runs until ``finish``."""

    def __init__(self) -> None:
        self.queued: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.started: list[str] = []
        self.running: set[str] = set()
        self.most_at_once = 0
        self._release: dict[str, asyncio.Event] = {}
        self._count = 0

    def submit(self) -> str:
        self._count += 1
        job = {"id": f"job-{self._count}", "input": {}}
        self._release[job["id"]] = asyncio.Event()
        self.queued.put_nowait(job)
        return job["id"]

    def finish(self, job_id: str) -> None:
        self._release[job_id].set()

    async def take(self, _session: Any, count: int) -> list[dict[str, Any]]:
        jobs = [await self.queued.get()]  # held until a job is there, like RunPod's job-take
        while len(jobs) < count and not self.queued.empty():
            jobs.append(self.queued.get_nowait())
        return jobs

    async def handle(self, _session: Any, _config: Any, job: dict[str, Any]) -> None:
        self.started.append(job["id"])
        self.running.add(job["id"])
        self.most_at_once = max(self.most_at_once, len(self.running))
        try:
            await self._release[job["id"]].wait()
        finally:
            self.running.discard(job["id"])


async def turns(count: int = TURNS) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


class Worker:
    """A scaler's job loops running on ``api``; ``concurrency`` is a callable, as the SDK's modifier."""

    def __init__(self, api: FakeJobApi, concurrency: Any = lambda _current: 1):
        config = {"handler": None, "concurrency_modifier": concurrency,
                  "jobs_fetcher": api.take, "jobs_handler": api.handle}  # fetcher and handler: SDK test hooks
        self.scaler = job_take.PromptJobScaler(config)
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Worker:
        self.tasks = [asyncio.create_task(self.scaler.get_jobs(None)), asyncio.create_task(self.scaler.run_jobs(None))]
        await turns()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.scaler.kill_worker()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def test_an_idle_worker_starts_a_job_without_waiting_on_a_timer():
    api = FakeJobApi()
    async with Worker(api):
        first = api.submit()
        await turns()
        assert api.started == [first]


async def test_a_job_queued_behind_a_busy_worker_starts_when_the_job_before_it_ends():
    api = FakeJobApi()
    async with Worker(api):
        first, second = api.submit(), api.submit()
        await turns()
        assert api.started == [first]  # one slot: the second waits its turn
        api.finish(first)
        await turns()
        assert api.started == [first, second]
        assert api.most_at_once == 1


async def test_at_concurrency_two_a_freed_slot_is_filled_at_once_and_never_more_run():
    api = FakeJobApi()
    async with Worker(api, concurrency=lambda _current: 2):
        jobs = [api.submit() for _ in range(4)]
        await turns()
        assert sorted(api.started) == sorted(jobs[:2])  # taken as one batch
        api.finish(jobs[0])
        await turns()
        assert api.started[2] == jobs[2]
        api.finish(jobs[1])
        await turns()
        assert api.started[3:] == [jobs[3]]
        assert api.most_at_once == 2


async def test_at_concurrency_two_a_job_submitted_while_one_runs_starts_at_once():
    # The SDK counts a job twice while it sits in its queue (queued and in progress): the free slot must still be
    # seen as soon as the job leaves the queue, not a second later.
    api = FakeJobApi()
    async with Worker(api, concurrency=lambda _current: 2):
        first = api.submit()
        await turns()
        assert api.started == [first]
        second = api.submit()
        await turns()
        assert api.started == [first, second]


async def test_a_concurrency_raised_between_jobs_takes_effect_and_pickup_stays_prompt():
    api = FakeJobApi()
    slots = {"n": 1}
    async with Worker(api, concurrency=lambda _current: slots["n"]) as worker:
        first = api.submit()
        await turns()
        slots["n"] = 3
        api.finish(first)
        # The SDK makes a new job queue for the new size, only with no job in flight (with one, it looks again each
        # second: its own timer, kept, as a rescale is rare); run_jobs must then wait on the new queue, not the old.
        await asyncio.sleep(1.5)
        assert worker.scaler.jobs_queue.maxsize == 3
        more = [api.submit() for _ in range(3)]
        await turns()
        assert api.started == [first, *more]
        assert api.most_at_once == 3


async def test_stopping_the_worker_ends_its_job_loop_after_the_running_job():
    api = FakeJobApi()
    async with Worker(api) as worker:
        job = api.submit()
        await turns()
        worker.scaler.kill_worker()
        runner = worker.tasks[1]
        await turns()
        assert not runner.done()  # a running job is let finish, as by the SDK's loop
        api.finish(job)
        await turns()
        assert runner.done() and runner.exception() is None


async def test_a_stop_that_overtakes_its_job_keeps_the_job_from_running_and_frees_its_slot():
    # The job-take reply and the stop poll travel apart: the stop can reach the worker before the job does.
    api = FakeJobApi()
    async with Worker(api) as worker:
        assert not await worker.scaler.stop_job("job-1")  # submit() names its first job job-1
        api.submit()
        await turns()
        assert api.started == []
        second = api.submit()
        await turns()
        assert api.started == [second]
        assert worker.scaler.current_occupancy() == 1


async def test_a_stop_between_a_jobs_task_and_its_first_step_frees_the_slot():
    # Cancelling a task that has not run a step skips its `finally`: the SDK's stop_job would leave the slot taken.
    api = FakeJobApi()
    scaler = Worker(api).scaler
    job = {"id": "job-1", "input": {}}
    scaler.jobs_queue.put_nowait(job)  # as get_jobs queues a job and run_jobs takes it
    scaler.job_progress.add(job)
    scaler.jobs_queue.get_nowait()
    task = asyncio.create_task(scaler.handle_job(None, job))
    scaler.jobs_tasks[job["id"]] = task
    assert not await scaler.stop_job(job["id"])  # no await inside: the task has not run yet
    await turns()
    assert task.done() and not task.cancelled() and api.started == []
    assert scaler.current_occupancy() == 0 and job["id"] not in scaler.jobs_tasks


# --- over serve-local, the worker process as deployed -----------------------------------------------------------


def _server(**env: str) -> LocalServer:
    return LocalServer({"pickup": PICKUP}, env=env, ready_timeout_s=120, extra_args=["--execution-timeout", "60"])


@pytest.fixture(scope="module")
def server():
    with _server() as srv:
        yield srv


async def test_over_serve_local_jobs_queued_behind_a_busy_worker_follow_each_other_at_once(server):
    async with server.endpoint("pickup") as ep:
        gaps = await busy_gaps(ep, jobs=6)
    # The stock loop leaves about a second between them (test_the_stock_sdk_loop_...); bounds far from that.
    assert statistics.median(gaps) < 0.3, gaps
    assert max(gaps) < 0.7, gaps  # each one: the stock gap is about 0.9 s with these 50 ms jobs


async def test_over_serve_local_an_idle_worker_starts_a_submitted_job_promptly(server):
    async with server.endpoint("pickup") as ep:
        delays = await idle_delays(ep, runs=3)
    assert statistics.median(delays) < 0.3, delays


async def test_over_serve_local_a_cancelled_job_frees_the_worker_for_the_next(server):
    async with server.endpoint("pickup") as ep:
        stuck = await ep.run({"work_s": 60, "announce": True})
        async for chunk in stuck.stream():
            assert chunk["type"] == "started"  # the handler runs: the SDK knows the job, and can stop it
            break
        await stuck.cancel()
        result = await ep.run_sync({"work_s": 0}, timeout=30)
        assert result["status"] == "COMPLETED"
        assert (await stuck.status())["status"] == "CANCELLED"


def test_over_serve_local_max_concurrency_two_runs_two_at_once_and_fills_a_freed_slot_at_once():
    async def run(srv: LocalServer) -> list[dict[str, Any]]:
        async with srv.endpoint("pickup") as ep:
            done = []
            for job in await asyncio.gather(*(ep.run({"work_s": 0.4}) for _ in range(4))):
                done.append([chunk async for chunk in job.stream()][-1])
            return sorted(done, key=lambda c: c["started"])

    with _server(MAX_CONCURRENCY="2") as srv:
        done = asyncio.run(run(srv))
    first_end = min(c["ended"] for c in done[:2])
    assert done[1]["started"] < done[0]["ended"]  # the first two ran together
    assert done[2]["started"] >= first_end  # the third waited for a free slot, never three at once
    assert done[2]["started"] - first_end < 0.3  # and took it at once (the stock loop: about 0.6 s here)


def test_the_stock_sdk_loop_waits_about_a_second_between_queued_jobs():
    """The control: what job_take is for. If a runpod release stops waiting, this fails and job_take can go."""

    async def gaps(srv: LocalServer) -> list[float]:
        async with srv.endpoint("pickup") as ep:
            return await busy_gaps(ep, jobs=4)

    with _server(VOICEPOD_JOB_PICKUP="sdk") as srv:
        measured = asyncio.run(gaps(srv))
    assert statistics.median(measured) > 0.5, measured
