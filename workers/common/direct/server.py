"""The worker's HTTP server in load-balancing mode, and its life: up while the model loads, serving once ready.

RunPod's balancer asks ``GET /ping`` on ``PORT_HEALTH``: ``204`` means initializing, ``200`` healthy, anything else
unhealthy (taken out of the routing pool), and a worker's cold start is counted from its first 204 to its first
200 (docs.runpod.io, serverless/load-balancing/overview). So the server starts as the model starts loading
(:func:`serve_while_loading`, which :func:`workers.common.models.timed_load` calls): ``/ping`` answers 204 and every
job route ``503 worker_loading``. :func:`serve` hands it the handler once the warm-up job is done, and ``/ping``
answers 200.

It runs in a thread with its own event loop, since the main thread is busy loading the model until then; the jobs
run on that loop too (their model work goes to threads of its own, as in queue mode). aiohttp cancels a route's
task when its caller's connection closes (``handler_cancellation``): that is how a hang-up stops a job.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import signal
import threading
from collections.abc import Awaitable, Callable

from aiohttp import web
from voicepod.protocol import ErrorCode

from .jobs import STATE, Handler, WorkerState, error_chunk
from .openai_route import openai, openai_refusal
from .replies import MAX_BODY_BYTES, refusal, refused
from .settings import Listen, direct_mode, listen
from .stream_route import stream
from .websocket_route import session

log = logging.getLogger("voicepod.worker")

SHUTDOWN_S = 5.0  # on SIGTERM, how long running jobs may go on before they are cancelled


async def ping(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not state.ready:
        return web.Response(status=204)
    return web.json_response({"status": "ready", "busy": state.busy, "slots": state.slots})


def _key_matches(request: web.Request, key_sha256: str) -> bool:
    given = request.headers.get("Authorization", "")
    given = given[7:] if given.startswith("Bearer ") else given
    return hmac.compare_digest(hashlib.sha256(given.encode()).hexdigest(), key_sha256)


def _guard(key_sha256: str | None) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The checks before every route but ``/ping``: the key (when serve-local set one), the model loaded."""

    @web.middleware
    async def guard(request: web.Request, handler: Callable[..., Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        if request.path == "/ping":
            return await handler(request)
        openai_shaped = request.path.startswith(("/openai/", "/v1/"))
        problem: tuple[str, str] | None = None
        if key_sha256 is not None and not _key_matches(request, key_sha256):
            problem = (ErrorCode.UNAUTHORIZED, "missing or wrong API key (Authorization: Bearer KEY)")
        elif not request.app[STATE].ready:
            problem = (ErrorCode.WORKER_LOADING, "the model is still loading (/ping says 204 until it is ready)")
        if problem is not None:
            return openai_refusal(*problem) if openai_shaped else refusal(error_chunk(*problem))
        try:
            return await handler(request)
        except web.HTTPNotFound:
            if request.match_info.route.resource is not None:
                raise  # a route said it, with its own body
            raise refused(ErrorCode.NOT_FOUND, f"no route {request.method} {request.path} (routes: /ping, "
                          "POST /stream, /ws, /openai/v1/...)") from None

    return guard


def build_app(state: WorkerState, key_sha256: str | None) -> web.Application:
    app = web.Application(middlewares=[_guard(key_sha256)], client_max_size=MAX_BODY_BYTES)
    app[STATE] = state
    app.add_routes([web.get("/ping", ping), web.post("/stream", stream), web.get("/ws", session)])
    for prefix in ("/openai/v1", "/v1"):  # RunPod's queue endpoints' prefix, and the bare one vLLM serves
        app.add_routes([web.post(prefix + "/{path:.+}", openai), web.get(prefix + "/{path:.+}", openai)])
    return app


class DirectServer:
    """The server on ``where``'s port(s), in a thread of its own from :meth:`start` until :meth:`stop`."""

    def __init__(self, where: Listen):
        self.where = where
        self.state = WorkerState()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    def start(self) -> None:
        """Bind and answer (``/ping`` 204) from now on; raises SystemExit when the port cannot be bound."""
        if self._thread is not None:
            return
        bound, failure = threading.Event(), []

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                runner = loop.run_until_complete(self._open())
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                failure.append(exc)
                return
            finally:
                bound.set()
            try:
                loop.run_until_complete(self._stopped.wait())  # type: ignore[union-attr]
            finally:
                loop.run_until_complete(runner.cleanup())
                loop.close()

        self._thread = threading.Thread(target=run, name="voicepod-direct", daemon=True)
        self._thread.start()
        bound.wait()
        if failure:
            raise SystemExit(f"cannot listen on {self.where.host}:{self.where.port}: {failure[0]}")

    async def _open(self) -> web.AppRunner:
        self._stopped = asyncio.Event()
        runner = web.AppRunner(build_app(self.state, self.where.key_sha256), access_log=None,
                               handler_cancellation=True, shutdown_timeout=SHUTDOWN_S)
        await runner.setup()
        for port in sorted({self.where.port, self.where.health_port}):
            await web.TCPSite(runner, self.where.host, port).start()
        log.info("load-balancing mode: listening on %s:%d (/ping says 204 until the worker is ready)",
                 self.where.host, self.where.port)
        return runner

    def serve(self, handler: Handler, concurrency: int) -> None:
        """Run jobs through ``handler``, ``concurrency`` at a time, until SIGTERM or SIGINT; blocks."""
        self.start()
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._become_ready, handler, max(1, concurrency))
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())
        while self._thread.is_alive():
            self._thread.join(0.5)  # with a timeout, so that signals are handled while it waits

    def _become_ready(self, handler: Handler, concurrency: int) -> None:
        self.state.slots = concurrency
        self.state.handler = handler
        log.info("ready: serving jobs, %d at a time (/ping says 200)", concurrency)

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)


_server: list[DirectServer] = []


def _the_server() -> DirectServer:
    if not _server:
        _server.append(DirectServer(listen()))
    return _server[0]


def serve_while_loading() -> None:
    """In load-balancing mode, answer ``/ping`` with 204 from now on (nothing in queue mode)."""
    if direct_mode():
        _the_server().start()


def serve(handler: Handler, concurrency: int) -> None:
    """Serve ``handler`` in load-balancing mode until the process is told to stop; blocks."""
    _the_server().serve(handler, concurrency)
