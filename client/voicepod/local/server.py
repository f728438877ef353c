"""The local endpoint emulator: RunPod's public serverless API in front of real SDK worker processes.

Public routes (``/v2/{endpoint}/...``) behave like RunPod's: ``run``, ``runsync``, ``stream/{id}`` (only what is
new since the last call), ``status/{id}``, ``cancel/{id}``, ``purge-queue``, ``health``, the OpenAI-compatible
``openai/v1/...`` (see :mod:`.openai_route`), Bearer-key auth.
Internal routes (``/_worker/{endpoint}/...``, guarded by a per-run token) are the ones the SDK's worker loop
calls: job-take (long poll), job-stream, job-done, job-stop (long poll).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from .bookkeeping import JobBook
from .jobs import COMPLETED, FAILED, IN_PROGRESS, IN_QUEUE, TIMED_OUT, LocalJob
from .openai_route import handle as openai_route
from .openai_route import openai_error
from .pool import WorkerPool, WorkerProcess

TAKE_POLL_S = 20.0  # under the SDK's 90 s fetch timeout, so a held job-take is never abandoned mid-answer
STOP_POLL_S = 20.0
STREAM_HOLD_S = 1.0  # /stream waits this long for a new chunk before answering with none
RUNSYNC_WAIT_S = 90.0  # RunPod's /runsync answers IN_PROGRESS after about this long
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # RunPod's /run payload limit


@dataclass
class EndpointConfig:
    name: str
    handler: Path
    workers: int = 1


@dataclass
class _Endpoint:
    config: EndpointConfig
    announced: bool = False


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


class Emulator:
    """Serve ``endpoints`` at ``host:port``; ``api_key`` guards the public API when given; ``queue_delay_s`` holds
    every job in its queue that long before a worker may take it (a model of RunPod's queue, ``--queue-delay``)."""

    def __init__(
        self,
        endpoints: list[EndpointConfig],
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        api_key: str | None = None,
        execution_timeout_s: float = 600.0,
        worker_env: dict[str, str] | None = None,
        log: Callable[[str], None] | None = None,
        busy_for_s: float = 0.0,
        queue_delay_s: float = 0.0,
    ):
        self.host = host
        self.port = port
        self._api_key = api_key
        self.execution_timeout_s = execution_timeout_s
        self._token = secrets.token_urlsafe(16)
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.endpoints = {c.name: _Endpoint(c) for c in endpoints}
        self.book = JobBook(list(self.endpoints), execution_timeout_s, self._stop_on_worker, self.log, queue_delay_s)
        self.started = time.monotonic()
        self.pool = WorkerPool(self._sdk_env, worker_env or {}, self._worker_exited, self.log)
        for config in endpoints:
            self.pool.add(config.name, config.handler, config.workers)
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()  # set on shutdown: held long polls answer at once
        # Fault injection: once every worker is ready, refuse the public API (429 and 503 in turn) this long.
        self.busy_for_s = busy_for_s
        self._busy_until = 0.0
        self._refused = 0

    def __repr__(self) -> str:
        return f"Emulator(host={self.host!r}, port={self.port}, endpoints={list(self.endpoints)})"

    @property
    def guarded(self) -> bool:
        """Whether the public API asks for a key."""
        return self._api_key is not None

    # --- lifecycle ---------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth], client_max_size=MAX_PAYLOAD_BYTES)
        public = [
            web.post("/v2/{ep}/run", self.run),
            web.post("/v2/{ep}/runsync", self.runsync),
            web.get("/v2/{ep}/stream/{job}", self.stream),
            web.get("/v2/{ep}/status/{job}", self.status),
            web.post("/v2/{ep}/cancel/{job}", self.cancel),
            web.post("/v2/{ep}/purge-queue", self.purge_queue),
            web.get("/v2/{ep}/health", self.health),
            web.post("/v2/{ep}/openai/v1/{path:.+}", self.openai),
            web.get("/v2/{ep}/openai/v1/{path:.+}", self.openai),
        ]
        internal = [
            web.get("/_worker/{ep}/job-take/{worker}", self.job_take),
            web.get("/_worker/{ep}/job-take-batch/{worker}", self.job_take_batch),
            web.get("/_worker/{ep}/job-stop/{worker}", self.job_stop),
            web.post("/_worker/{ep}/job-stream/{worker}/{job}", self.job_stream),
            web.post("/_worker/{ep}/job-done/{worker}/{job}", self.job_done),
        ]
        app.add_routes(public + internal)
        return app

    async def start(self) -> None:
        """Bind, then start the workers (none is started when the address is taken: ``OSError``)."""
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port).start()
        except OSError:
            await self._runner.cleanup()
            raise
        self.started = time.monotonic()
        await self.pool.start()
        for name, endpoint in self.endpoints.items():
            self.log(f"starting {endpoint.config.workers} worker(s) for '{name}' ({endpoint.config.handler})")

    async def stop(self) -> None:
        self._closing.set()
        for worker in self.pool.workers.values():
            worker.stop_event.set()
        await self.pool.stop()
        self.book.close()
        if self._runner:
            await self._runner.cleanup()

    # --- helpers -----------------------------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        if request.path.startswith("/_worker/"):
            if not hmac.compare_digest(request.query.get("token", ""), self._token):
                return _json({"error": "forbidden"}, 403)
        elif time.monotonic() < self._busy_until and not request.path.endswith("/health"):
            self._refused += 1
            status = 429 if self._refused % 2 else 503
            return web.json_response({"error": "busy (fault injection)"}, status=status, headers={"Retry-After": "0.2"})
        elif self._api_key is not None:
            given = request.headers.get("Authorization", "")
            given = given[7:] if given.startswith("Bearer ") else given
            if not hmac.compare_digest(given.encode(), self._api_key.encode()):
                message = "unauthorized: missing or wrong API key"
                if "/openai/v1/" in request.path:  # OpenAI SDKs read their own error shape
                    return openai_error(401, message, "invalid_api_key")
                return _json({"error": message}, 401)
        try:
            return await handler(request)
        except web.HTTPNotFound as exc:
            if request.match_info.route.resource is not None:
                raise  # a route of ours said it: its own message stands
            hint = "" if request.path.startswith("/v2/") else " (RunPod's API is served under /v2/{endpoint}/)"
            return _json({"error": f"no route {request.method} {request.path}{hint}"}, exc.status)

    def endpoint_for(self, request: web.Request) -> _Endpoint:
        name = request.match_info["ep"]
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            message = f"no endpoint '{name}' here; serving: {', '.join(self.endpoints)}"
            raise web.HTTPNotFound(text=json.dumps({"error": message}), content_type="application/json")
        return endpoint

    def _job(self, request: web.Request) -> LocalJob:
        name = self.endpoint_for(request).config.name
        job = self.book.get(name, request.match_info["job"])
        if job is None:
            raise web.HTTPNotFound(text=json.dumps({"error": "no such job"}), content_type="application/json")
        return job

    async def _submit(self, request: web.Request) -> LocalJob:
        endpoint = self.endpoint_for(request)
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # too deep a nesting: refused, not a 500
            raise web.HTTPBadRequest(text=json.dumps({"error": "body is not valid JSON"}),
                                     content_type="application/json") from None
        if not isinstance(body, dict) or "input" not in body:
            raise web.HTTPBadRequest(text=json.dumps({"error": "body must be an object with an 'input' key"}),
                                     content_type="application/json")
        policy = body.get("policy") if isinstance(body.get("policy"), dict) else {}
        timeout_ms = policy.get("executionTimeout")
        timeout_s = timeout_ms / 1000 if isinstance(timeout_ms, (int, float)) and timeout_ms > 0 else None
        return self.book.enqueue(endpoint.config.name, body["input"], timeout_s)

    def _sdk_env(self, worker: WorkerProcess) -> dict[str, str]:
        """Point the SDK's worker loop at this emulator's job routes (its ``RUNPOD_WEBHOOK_*`` variables)."""
        base = f"http://{self.host}:{self.port}/_worker/{worker.endpoint}"
        query = f"?token={self._token}"
        return {
            "VOICEPOD_MODE": "queue",  # whatever this process's environment says
            "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID{query}",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID{query}",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/$RUNPOD_POD_ID/$ID{query}",
            # The SDK's startup fitness checks (free memory and disk) are for RunPod's hosts, not a laptop.
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
        }

    def _stop_on_worker(self, job: LocalJob) -> None:
        worker = self.pool.workers.get(job.worker_id or "")
        if worker is not None:
            worker.jobs.discard(job.id)
            worker.request_stop(job.id)

    def _worker_exited(self, worker: WorkerProcess, returncode: int) -> None:
        self.book.worker_exited(worker.worker_id, set(worker.jobs), returncode)
        worker.jobs.clear()
        worker.stop_ids.clear()

    # --- public API --------------------------------------------------------------------------------------

    async def run(self, request: web.Request) -> web.Response:
        job = await self._submit(request)
        return _json({"id": job.id, "status": job.status})

    async def runsync(self, request: web.Request) -> web.Response:
        job = await self._submit(request)
        wait_ms = request.query.get("wait")
        deadline = time.monotonic() + (float(wait_ms) / 1000 if wait_ms and wait_ms.isdigit() else RUNSYNC_WAIT_S)
        while not job.terminal and (left := deadline - time.monotonic()) > 0:
            await job.wait_change(left)
        return _json(job.status_body())

    async def stream(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job.cursor == len(job.stream) and not job.terminal:
            await job.wait_change(STREAM_HOLD_S)
        body: dict[str, Any] = {
            "status": job.status,
            "stream": [{"output": output} for output in job.take_new_stream()],
        }
        if job.error is not None:
            body["error"] = job.error
        return _json(body)

    async def status(self, request: web.Request) -> web.Response:
        return _json(self._job(request).status_body())

    async def cancel(self, request: web.Request) -> web.Response:
        job = self._job(request)
        self.book.cancel(job)
        return _json({"id": job.id, "status": job.status})

    async def openai(self, request: web.Request) -> web.StreamResponse:
        return await openai_route(self.book, self.endpoint_for(request).config.name, request, self.log)

    async def purge_queue(self, request: web.Request) -> web.Response:
        removed = self.book.purge(self.endpoint_for(request).config.name)
        return _json({"removed": removed, "status": "completed"})

    async def health(self, request: web.Request) -> web.Response:
        name = self.endpoint_for(request).config.name
        jobs = self.book.of_endpoint(name)
        workers = self.pool.of_endpoint(name)

        def count(status: str) -> int:
            return sum(j.status == status for j in jobs)

        alive = [w for w in workers if w.process and w.process.returncode is None]
        return _json({
            "jobs": {
                "completed": count(COMPLETED),
                "failed": count(FAILED) + count(TIMED_OUT),
                "inProgress": count(IN_PROGRESS),
                "inQueue": count(IN_QUEUE),
                "retried": 0,
            },
            "workers": {
                "idle": sum(w.ready and not w.jobs for w in alive),
                "running": sum(w.ready and bool(w.jobs) for w in alive),
                "ready": sum(w.ready for w in alive),
                "initializing": sum(not w.ready for w in alive),
                "unhealthy": len(workers) - len(alive),
            },
        })

    # --- the SDK worker loop's routes ----------------------------------------------------------------------

    def _worker(self, request: web.Request) -> WorkerProcess:
        worker = self.pool.workers.get(request.match_info["worker"])
        if worker is None or worker.endpoint != request.match_info["ep"]:
            raise web.HTTPNotFound(text="unknown worker")
        return worker

    def _mark_ready(self, worker: WorkerProcess) -> None:
        if worker.ready:
            return
        worker.ready = True
        worker.ready_after_s = time.monotonic() - worker.started_at
        endpoint = self.endpoints[worker.endpoint]
        workers = self.pool.of_endpoint(worker.endpoint)
        if not endpoint.announced and all(w.ready for w in workers):
            endpoint.announced = True
            if self.busy_for_s and all(e.announced for e in self.endpoints.values()):
                self._busy_until = time.monotonic() + self.busy_for_s
                self.log(f"refusing the public API with 429/503 for {self.busy_for_s:g} s (--busy-for)")
            slowest = max(w.ready_after_s or 0.0 for w in workers)
            self.log(
                f"ready: '{worker.endpoint}' with {len(workers)} worker(s) in {slowest:.1f} s "
                f"at http://{self.host}:{self.port}/v2/{worker.endpoint}"
            )
            if all(e.announced for e in self.endpoints.values()):
                self.log(f"all endpoints ready: {', '.join(self.endpoints)} in {time.monotonic() - self.started:.1f} s")

    async def job_take(self, request: web.Request) -> web.Response:
        return await self._take(request, batch=None)

    async def job_take_batch(self, request: web.Request) -> web.Response:
        # The SDK asks for a batch when its concurrency is above 1 and more than one slot is free.
        size = request.query.get("batch_size", "1")
        return await self._take(request, batch=min(max(int(size), 1), 64) if size.isdigit() else 1)

    async def _next_job_id(self, queue: asyncio.Queue[str], timeout: float) -> str | None:
        getter = asyncio.ensure_future(queue.get())
        closing = asyncio.ensure_future(self._closing.wait())
        await asyncio.wait({getter, closing}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        closing.cancel()
        if getter.done():
            return getter.result()
        getter.cancel()
        return None

    async def _take(self, request: web.Request, batch: int | None) -> web.Response:
        """Hold the poll until a job is queued (or ``TAKE_POLL_S`` passes), then hand out one job, or for a
        batch request as many queued jobs as asked for without waiting for more."""
        worker = self._worker(request)
        self._mark_ready(worker)
        queue = self.book.queues[worker.endpoint]
        taken: list[LocalJob] = []
        deadline = time.monotonic() + TAKE_POLL_S
        while not taken and (left := deadline - time.monotonic()) > 0 and not self._closing.is_set():
            job_id = await self._next_job_id(queue, left)
            if job_id is None:
                break
            if job := self.book.claimable(job_id):
                taken.append(job)
        while taken and batch and len(taken) < batch and not queue.empty():
            if job := self.book.claimable(queue.get_nowait()):
                taken.append(job)
        if taken and (request.transport is None or request.transport.is_closing()):
            self.book.requeue(taken)  # the worker went away mid-poll: leave the jobs for another
            taken = []
        if not taken:
            return web.Response(status=204)
        for job in taken:
            self.book.start(job, worker.worker_id)
            worker.jobs.add(job.id)
        bodies = [{"id": job.id, "input": job.input} for job in taken]
        return _json(bodies if batch else bodies[0])

    async def job_stop(self, request: web.Request) -> web.Response:
        worker = self._worker(request)
        if not worker.stop_ids and not self._closing.is_set():
            worker.stop_event.clear()
            try:
                await asyncio.wait_for(worker.stop_event.wait(), STOP_POLL_S)
            except TimeoutError:
                return web.Response(status=204)
        if request.transport is None or request.transport.is_closing():
            # A poll left over from a worker process that died: its successor must get these ids.
            return web.Response(status=204)
        ids, worker.stop_ids = worker.stop_ids, []
        worker.stop_event.clear()
        return _json({"jobsToStop": ids})

    async def _posted_job(self, request: web.Request) -> tuple[LocalJob | None, Any]:
        worker = self._worker(request)
        job = self.book.jobs.get(request.match_info["job"])
        body = json.loads(await request.text())
        if job is None or job.worker_id != worker.worker_id or job.status != IN_PROGRESS:
            return None, body  # cancelled, timed out or failed meanwhile: late output is dropped, as on RunPod
        return job, body

    async def job_stream(self, request: web.Request) -> web.Response:
        job, body = await self._posted_job(request)
        if job is not None:
            job.stream.append(body.get("output"))
            job.notify()
        return web.Response(text="ok")

    async def job_done(self, request: web.Request) -> web.Response:
        job, body = await self._posted_job(request)
        if job is not None:
            self.pool.workers[job.worker_id or ""].jobs.discard(job.id)
            if body.get("error"):
                job.finish(FAILED, error=str(body["error"]))
            else:
                job.finish(COMPLETED, output=body.get("output"))
        return web.Response(text="ok")

