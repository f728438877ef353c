"""``serve-local --direct``: each endpoint's worker in load-balancing mode, serving its own port, as a worker of a
RunPod load-balancing endpoint does (``VOICEPOD_MODE=direct``, ``PORT``, ``PORT_HEALTH``).

There is no emulator in front: a client talks to the worker's own server (``workers/common/direct``), so what it
measures is the direct route itself. RunPod's balancer, which adds one hop and spreads requests over workers, has
no local stand-in: one worker per endpoint. Endpoint ``i`` (in the order given) listens on ``port + i``. Readiness
is what RunPod's balancer sees, ``GET /ping``: a line says when each endpoint answers 200.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

from .pool import WorkerPool, WorkerProcess

if TYPE_CHECKING:  # the emulator's module needs aiohttp; LocalServer, which reads endpoint_urls, must not
    from .server import EndpointConfig

PING_EVERY_S = 0.2


def endpoint_urls(names: list[str], host: str, port: int) -> dict[str, str]:
    """Each endpoint's URL: the ``i``-th name listens on ``port + i``."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return {name: f"http://{shown}:{port + i}" for i, name in enumerate(names)}


class DirectEndpoints:
    """The worker of each of ``endpoints``, in load-balancing mode on ``host``, ports from ``port`` on.

    ``api_key``: when given, the workers refuse requests without it (they get its SHA-256, never the key);
    ``worker_env`` is added to their environment; ``log`` takes one line.
    """

    def __init__(self, endpoints: list[EndpointConfig], *, host: str = "127.0.0.1", port: int = 8000,
                 api_key: str | None = None, worker_env: dict[str, str] | None = None,
                 log: Callable[[str], None] | None = None):
        self.host, self.port = host, port
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.urls = endpoint_urls([c.name for c in endpoints], host, port)
        self._ports = {c.name: port + i for i, c in enumerate(endpoints)}
        self._key_sha256 = hashlib.sha256(api_key.encode()).hexdigest() if api_key else None
        self.pool = WorkerPool(self._mode_env, worker_env or {}, self._exited, self.log)
        for config in endpoints:
            self.pool.add(config.name, config.handler, 1)
        self._watch: asyncio.Task[None] | None = None

    def _mode_env(self, worker: WorkerProcess) -> dict[str, str]:
        port = str(self._ports[worker.endpoint])
        env = {"VOICEPOD_MODE": "direct", "PORT": port, "PORT_HEALTH": port, "VOICEPOD_DIRECT_HOST": self.host}
        if self._key_sha256:
            env["VOICEPOD_DIRECT_KEY_SHA256"] = self._key_sha256
        return env

    def _exited(self, worker: WorkerProcess, returncode: int) -> None:
        # Its jobs' callers see their connections break (the client raises JobFailed worker_died); the pool
        # restarts it.
        self.log(f"worker {worker.worker_id} exited with code {returncode}")

    async def start(self) -> None:
        """Check that every port is free (``OSError`` if not, before any worker starts), then start the workers."""
        for port in self._ports.values():
            with socket.socket() as probe:
                try:
                    probe.bind((self.host, port))
                except OSError as exc:
                    raise OSError(exc.errno or errno.EADDRINUSE, exc.strerror, f"{self.host}:{port}") from None
        await self.pool.start()
        self._watch = asyncio.create_task(self._announce_ready())
        for name, url in self.urls.items():
            self.log(f"starting the '{name}' worker in load-balancing mode at {url} (/ping 204 while it loads)")

    async def _announce_ready(self) -> None:
        """Ping every worker not known ready (a restarted one too) until it answers 200, and say so."""
        started = time.monotonic()
        announced: set[str] = set()
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                for worker in self.pool.workers.values():
                    if worker.ready or worker.process is None or worker.process.returncode is not None:
                        continue
                    url = self.urls[worker.endpoint]
                    try:
                        worker.ready = (await client.get(f"{url}/ping")).status_code == 200
                    except httpx.HTTPError:
                        continue
                    if worker.ready:
                        first = worker.endpoint not in announced
                        self.log(f"{'ready' if first else 'ready again'}: '{worker.endpoint}' at {url} in "
                                 f"{time.monotonic() - worker.started_at:.1f} s")
                        announced.add(worker.endpoint)
                        if first and announced == set(self.urls):
                            self.log(f"all endpoints ready: {', '.join(self.urls)} in "
                                     f"{time.monotonic() - started:.1f} s")
                await asyncio.sleep(PING_EVERY_S)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        await self.pool.stop()
