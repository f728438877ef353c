"""The runpod SDK's job scaler, waking on events where the stock one looks on timers.

The SDK's worker loop (``runpod.serverless.modules.rp_scale.JobScaler``, runpod 1.12) is two tasks around a queue:
``get_jobs`` long-polls the job-take URL and queues what it gets, ``run_jobs`` starts the queued jobs. Two timers
sit on every job's path:

- ``run_jobs`` looks at the queue every 0.1 s (``asyncio.sleep(0.1)`` when idle, ``asyncio.wait(..., timeout=0.1)``
  while jobs run): a job that an idle worker has already taken waits 0 to 0.1 s before its handler starts.
- ``get_jobs`` sleeps 1 s (``asyncio.sleep(1)``) whenever every slot is taken: at concurrency 1, a busy worker asks
  for its next job up to a second after the last one ended, however many are queued.

No setting reaches them: ``concurrency_modifier`` only sets how many slots there are (one more slot would run one
more job at once, not take the next one sooner), and the job-take settings (``jobs_fetcher``...) are honoured
only in the SDK's local test mode and are not where the waits are. So :class:`PromptJobScaler` overrides three
methods of the SDK's class and keeps the rest (the long poll, the concurrency modifier, the in-progress bookkeeping
the heartbeat reports, per-job stop, shutdown):

- :meth:`~PromptJobScaler.run_jobs` starts a job the moment it is queued (``await queue.get()``);
- :meth:`~PromptJobScaler.set_scale`, which ``get_jobs`` calls before each job-take, returns only once a slot is
  free, woken the moment a job ends (:meth:`~PromptJobScaler.handle_job`) or leaves the queue for its handler (the
  SDK's occupancy counts a queued job twice), so ``get_jobs`` never reaches its 1 s sleep;
- :meth:`~PromptJobScaler.handle_job` is the SDK's, plus that wake-up;
- :meth:`~PromptJobScaler.stop_job` is the SDK's for a job whose run has begun; a stop for a job that has not begun
  is kept, and the job is dropped when its run would begin. The job-take reply that brings a job and the stop poll
  that names it travel on separate connections, so a cancel sent right after a job was taken can overtake it: the
  SDK then logs "No in-progress job" and forgets the stop, and the cancelled job runs to its end (the likely cause
  of a phone test that once found a hung-up call's job still IN_PROGRESS). And a stop that comes between a job's
  task being created and its first step would have the SDK cancel a coroutine that never started, so no ``finally``
  of it runs and the job's slot stays taken for good.

``get_jobs`` itself is the SDK's, unchanged. :func:`sdk_worker_loop` makes the SDK's ``serverless.start`` build
this class instead of its own (the one name it looks up); ``VOICEPOD_JOB_PICKUP=sdk`` keeps the stock class.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from .sdk import import_sdk

rp_scale = import_sdk().modules.rp_scale  # the SDK imported as the workers import it (no CPU probe)

log = logging.getLogger("voicepod.worker")

# ``prompt`` (default): PromptJobScaler; ``sdk``: the SDK's own JobScaler, timers and all (for comparison).
PICKUP_ENV = "VOICEPOD_JOB_PICKUP"

# While every slot is taken, how often the concurrency modifier is asked again even if no job ends (the SDK's
# cadence): a modifier that raises the concurrency is heard within this, as with the stock loop.
RESCALE_S = 1.0

# How long a stop for a job not (yet) started here is kept: far longer than a job-take reply is in flight, short
# enough that stops for jobs that had already ended here (a cancel racing a job's end) do not pile up.
EARLY_STOP_S = 60.0


class PromptJobScaler(rp_scale.JobScaler):
    """``rp_scale.JobScaler`` whose job pickup waits on events instead of timers; ``config`` is the SDK's."""

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)
        # A job ended, or left the queue for its handler (the SDK's occupancy counts a queued job twice: queued and
        # in progress): get_jobs may have a slot to fill.
        self._occupancy_fell = asyncio.Event()
        self._queue_replaced = asyncio.Event()  # set_scale made a new queue: run_jobs must wait on that one
        self._early_stops: dict[str, float] = {}  # job id -> when its stop came, for jobs not begun then
        self._begun: set[str] = set()  # jobs whose handle_job has begun, so that a task cancel reaches its finally

    async def set_scale(self) -> None:
        """The SDK's rescale, then wait (instead of ``get_jobs``' 1 s sleep) until a slot is free."""
        while True:
            queue = self.jobs_queue
            await super().set_scale()
            if self.jobs_queue is not queue:
                self._queue_replaced.set()
            self._occupancy_fell.clear()
            if not self.is_alive() or self.current_occupancy() < self.current_concurrency:
                return
            await _first_of(self._occupancy_fell.wait(), self._shutdown_event.wait(), timeout=RESCALE_S)

    async def handle_job(self, session: Any, job: dict[str, Any]) -> None:
        """The SDK's job run, unless the job was stopped before it began; its end wakes :meth:`set_scale`."""
        try:
            if self._early_stops.pop(job["id"], None) is not None:
                log.info("job %s was stopped before it began: not run", job["id"])
                # What the SDK's handle_job does when a job ends (its `finally`), for a job that never runs.
                self.jobs_queue.task_done()
                self.job_progress.remove(job)
                self.jobs_tasks.pop(job["id"], None)
                return
            self._begun.add(job["id"])
            await super().handle_job(session, job)
        finally:
            self._begun.discard(job["id"])
            self._occupancy_fell.set()

    async def stop_job(self, job_id: str) -> bool:
        """The SDK's per-job stop for a job whose run has begun; a stop for any other is kept for
        :data:`EARLY_STOP_S`, so that the job is dropped if its run begins after its stop."""
        if job_id in self._begun:
            return await super().stop_job(job_id)
        now = time.monotonic()
        self._early_stops = {key: at for key, at in self._early_stops.items() if now - at < EARLY_STOP_S}
        self._early_stops[job_id] = now
        return False

    async def run_jobs(self, session: Any) -> None:
        """Start each job as it is queued; at shutdown, let the running ones finish (as the SDK's does)."""
        tasks: set[asyncio.Task[None]] = set()
        while self.is_alive() or not self.jobs_queue.empty():
            if len(tasks) >= self.current_concurrency:  # get_jobs takes no more than the free slots; kept as a guard
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            job = await self._next_queued_job()
            if job is None:
                continue
            task = asyncio.create_task(self.handle_job(session, job))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            self.jobs_tasks[job["id"]] = task
            self._occupancy_fell.set()
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, Exception):
                log.error("job failed during shutdown: %s", result)

    async def _next_queued_job(self) -> dict[str, Any] | None:
        """The next queued job, or None when the worker is stopping or the queue was replaced."""
        if not self.jobs_queue.empty():
            return self.jobs_queue.get_nowait()
        self._queue_replaced.clear()
        getter = asyncio.ensure_future(self.jobs_queue.get())
        await _first_of(getter, self._queue_replaced.wait(), self._shutdown_event.wait())
        if getter.done():
            return getter.result()
        getter.cancel()  # a cancelled Queue.get leaves its item in the queue
        with suppress(asyncio.CancelledError):
            await getter
        return None


async def _first_of(*waits: Any, timeout: float | None = None) -> None:
    """Wait until the first of ``waits`` is done or ``timeout`` passes. Coroutines among them are run here and
    cancelled after; futures are the caller's, left as they are."""
    futures = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(futures, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait, future in zip(waits, futures, strict=True):
            if future is not wait and not future.done():
                future.cancel()
                with suppress(asyncio.CancelledError):
                    await future


def scaler_class() -> type[rp_scale.JobScaler]:
    """The job scaler ``VOICEPOD_JOB_PICKUP`` chooses: :class:`PromptJobScaler` unless it says ``sdk``."""
    choice = os.environ.get(PICKUP_ENV, "prompt").strip().lower()
    if choice not in ("prompt", "sdk"):
        raise SystemExit(f"{PICKUP_ENV}={choice!r}: use 'prompt' (the default) or 'sdk'")
    return rp_scale.JobScaler if choice == "sdk" else PromptJobScaler


@contextmanager
def sdk_worker_loop(scaler: type[rp_scale.JobScaler]) -> Iterator[None]:
    """While inside, the SDK's ``serverless.start`` runs its worker loop with ``scaler``.

    ``runpod.serverless.worker.run_worker`` builds ``rp_scale.JobScaler(config)``; the SDK has no setting for the
    class, so this names ``scaler`` there for the duration (the one SDK name voicepod replaces)."""
    stock = rp_scale.JobScaler
    rp_scale.JobScaler = scaler  # type: ignore[misc]
    try:
        yield
    finally:
        rp_scale.JobScaler = stock  # type: ignore[misc]
