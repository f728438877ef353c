"""The emulator's job bookkeeping: every job it knows, each endpoint's queue, and how jobs end.

Enqueue, hand out to a worker, cancel, time out, fail when the worker dies, forget after RunPod's retention:
the public routes, the SDK worker routes and the OpenAI route all go through :class:`JobBook`, so none of them
depends on another.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ..protocol import ErrorCode
from .jobs import CANCELLED, FAILED, IN_PROGRESS, IN_QUEUE, TIMED_OUT, LocalJob, emulator_error

JOB_RETENTION_S = 1800.0  # RunPod keeps a finished /run job's result for 30 minutes


class JobBook:
    """The jobs of every endpoint.

    ``execution_timeout_s``: a job's limit when its policy sets none. ``stop_on_worker(job)`` asks the worker
    running ``job`` to stop it (the SDK's job-stop poll). ``log`` takes one line. ``queue_delay_s``: how long a
    job waits in the queue before a worker may take it (``serve-local --queue-delay``), a model of what RunPod's
    queue adds to every job (docs/deploy.md, "Queue or direct").
    """

    def __init__(
        self,
        endpoints: list[str],
        execution_timeout_s: float,
        stop_on_worker: Callable[[LocalJob], None],
        log: Callable[[str], None],
        queue_delay_s: float = 0.0,
    ):
        self.execution_timeout_s = execution_timeout_s
        self.queue_delay_s = queue_delay_s
        self.jobs: dict[str, LocalJob] = {}
        self.queues: dict[str, asyncio.Queue[str]] = {name: asyncio.Queue() for name in endpoints}
        self._stop_on_worker = stop_on_worker
        self._log = log
        self._watchdogs: set[asyncio.Task[None]] = set()

    def get(self, endpoint: str, job_id: str) -> LocalJob | None:
        """The job ``job_id`` if it belongs to ``endpoint`` (and has not been forgotten)."""
        job = self.jobs.get(job_id)
        return job if job is not None and job.endpoint == endpoint else None

    def of_endpoint(self, endpoint: str) -> list[LocalJob]:
        return [job for job in self.jobs.values() if job.endpoint == endpoint]

    def enqueue(self, endpoint: str, job_input: object, timeout_s: float | None = None) -> LocalJob:
        """Queue a job for ``endpoint``'s workers; ``timeout_s`` overrides the default execution timeout."""
        self._forget_old_jobs()
        job = LocalJob(endpoint, job_input, timeout_s or self.execution_timeout_s)
        self.jobs[job.id] = job
        if self.queue_delay_s > 0:  # the job is IN_QUEUE meanwhile: a cancel or a purge still reaches it
            asyncio.get_running_loop().call_later(self.queue_delay_s, self.queues[endpoint].put_nowait, job.id)
        else:
            self.queues[endpoint].put_nowait(job.id)
        return job

    def cancel(self, job: LocalJob) -> None:
        """Cancel ``job`` as ``/cancel`` does: a running one is also stopped on its worker."""
        was_running = job.status == IN_PROGRESS
        if job.finish(CANCELLED) and was_running:
            self._stop_on_worker(job)

    def purge(self, endpoint: str) -> int:
        """Cancel the jobs still queued for ``endpoint`` (``/purge-queue``); returns how many."""
        queued = [job for job in self.of_endpoint(endpoint) if job.status == IN_QUEUE]
        for job in queued:
            job.finish(CANCELLED)
        return len(queued)

    def claimable(self, job_id: str) -> LocalJob | None:
        """The queued job ``job_id``, or None if it was cancelled while it waited."""
        job = self.jobs.get(job_id)
        return job if job is not None and job.status == IN_QUEUE else None

    def requeue(self, jobs: list[LocalJob]) -> None:
        """Put jobs taken by a worker that went away mid-poll back for another."""
        for job in jobs:
            self.queues[job.endpoint].put_nowait(job.id)

    def start(self, job: LocalJob, worker_id: str) -> None:
        """``worker_id`` took ``job``: it runs from now, under its execution timeout."""
        job.start(worker_id)
        task = asyncio.create_task(self._watch_timeout(job))
        self._watchdogs.add(task)
        task.add_done_callback(self._watchdogs.discard)

    def worker_exited(self, worker_id: str, job_ids: set[str], returncode: int) -> None:
        """Fail the jobs a worker process was running when it exited."""
        for job_id in job_ids:
            if (job := self.jobs.get(job_id)) is not None:
                message = f"worker process {worker_id} exited with code {returncode} during the job"
                job.finish(FAILED, error=emulator_error(ErrorCode.WORKER_DIED, message))

    def close(self) -> None:
        for task in self._watchdogs:
            task.cancel()

    async def _watch_timeout(self, job: LocalJob) -> None:
        deadline = time.monotonic() + job.execution_timeout_s
        while not job.terminal and (left := deadline - time.monotonic()) > 0:
            await job.wait_change(left)  # returns early when the job ends, so no watchdog outlives its job
        message = f"execution timeout of {job.execution_timeout_s:g} s exceeded"
        if job.finish(TIMED_OUT, error=emulator_error(ErrorCode.TIMED_OUT, message)):
            self._log(f"job {job.id} timed out on {job.worker_id}")
            self._stop_on_worker(job)

    def _forget_old_jobs(self) -> None:
        now = time.monotonic()
        for job_id in [j.id for j in self.jobs.values() if j.finished and now - j.finished > JOB_RETENTION_S]:
            del self.jobs[job_id]
