"""RunPod's job API, as far as one worker process needs it, for timing that worker from its own command line.

A worker built on the runpod SDK takes jobs from, and posts chunks and results to, the URLs in its
``RUNPOD_WEBHOOK_*`` variables. :class:`JobFeed` serves those URLs on localhost: it notes when the worker first
asks for a job (the moment it is ready), hands out the jobs queued with :meth:`JobFeed.submit` and records when
each one's first chunk and its result arrive. ``voicepod serve-local`` runs the same SDK loop for real use;
this is the benchmark's stopwatch, with no routing, auth or retries to add time of its own.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TAKE_POLL_S = 1.0  # how long a job-take waits for a job before answering "none" (204), as RunPod's long poll


@dataclass
class FedJob:
    """One job handed to the worker; times are ``time.perf_counter()`` values."""

    id: str
    input: dict[str, Any]
    taken_at: float | None = None
    first_chunk_at: float | None = None
    done_at: float | None = None
    chunks: list[Any] = field(default_factory=list)
    result: dict[str, Any] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class JobFeed:
    """Serves one worker's job API on ``127.0.0.1``; use as ``async with JobFeed() as feed``."""

    def __init__(self) -> None:
        self.first_poll_at: float | None = None
        # Called once, at the worker's first request for a job (the benchmark reads the worker's CPU time then).
        self.on_first_poll: Callable[[], None] | None = None
        self._queue: asyncio.Queue[FedJob] = asyncio.Queue()
        self._jobs: dict[str, FedJob] = {}
        self._runner: web.AppRunner | None = None
        self.base = ""

    def environment(self, worker_id: str = "bench-0") -> dict[str, str]:
        """The variables that point the runpod SDK of a worker process at this feed."""
        return {
            "RUNPOD_POD_ID": worker_id,
            "RUNPOD_WEBHOOK_GET_JOB": f"{self.base}/job-take/$ID?feed=1",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{self.base}/job-done/$RUNPOD_POD_ID/$ID?feed=1",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{self.base}/job-stream/$RUNPOD_POD_ID/$ID?feed=1",
            # The SDK's host fitness checks (memory, disk, internet, CUDA) are RunPod's, and need the internet.
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
        }

    def submit(self, job_input: dict[str, Any]) -> FedJob:
        """Queue a job for the worker to take."""
        job = FedJob(id=f"job-{len(self._jobs)}", input=job_input)
        self._jobs[job.id] = job
        self._queue.put_nowait(job)
        return job

    async def __aenter__(self) -> JobFeed:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes([
            web.get("/job-take/{worker}", self._take),
            web.get("/job-take-batch/{worker}", self._take),
            web.get("/job-stop/{worker}", self._stop),
            web.post("/job-stream/{worker}/{job}", self._stream),
            web.post("/job-done/{worker}/{job}", self._done),
        ])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _take(self, request: web.Request) -> web.Response:
        if self.first_poll_at is None:
            self.first_poll_at = time.perf_counter()
            if self.on_first_poll is not None:
                self.on_first_poll()
        try:
            job = await asyncio.wait_for(self._queue.get(), TAKE_POLL_S)
        except TimeoutError:
            return web.Response(status=204)
        job.taken_at = time.perf_counter()
        body = {"id": job.id, "input": job.input}
        return web.json_response([body] if request.path.startswith("/job-take-batch/") else body)

    async def _stop(self, request: web.Request) -> web.Response:
        await asyncio.sleep(TAKE_POLL_S)  # nothing is ever cancelled here
        return web.Response(status=204)

    async def _stream(self, request: web.Request) -> web.Response:
        job = self._jobs[request.match_info["job"]]
        job.first_chunk_at = job.first_chunk_at or time.perf_counter()
        job.chunks.append(json.loads(await request.text()).get("output"))
        return web.Response(text="ok")

    async def _done(self, request: web.Request) -> web.Response:
        job = self._jobs[request.match_info["job"]]
        job.done_at = time.perf_counter()
        job.result = json.loads(await request.text())
        job.done.set()
        return web.Response(text="ok")
