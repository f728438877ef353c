"""Run ``voicepod serve-local`` as a child process: for tests, benchmarks and ``voicepod demo``."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from .. import registry
from ..cli_errors import UsageError
from ..endpoint import Endpoint
from .direct import endpoint_urls

# What the workers need to run on this machine (the `workers` extra), checked before any is started.
_WORKER_PACKAGES = ("aiohttp", "runpod", "faster_whisper", "torch", "onnxruntime")


def local_workers(workers_dir: Path | None = None) -> dict[str, Path]:
    """Every worker's handler file under ``workers_dir`` (the checkout's ``workers/`` by default), once this
    environment is known to run them; raises :class:`UsageError` saying what to install or where to run from.
    For the commands that start the embedded models themselves (``voicepod demo``, ``voicepod phone --local``)."""
    import importlib.util

    missing = [name for name in _WORKER_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"running the workers here needs {', '.join(missing)}: pip install 'voicepod[workers]' "
                         "from a checkout (or `make demo`)")
    folder = workers_dir or registry.checkout_root() / "workers"
    handlers = {worker.name: folder / worker.name / "handler.py" for worker in registry.WORKERS}
    if absent := [str(path) for path in handlers.values() if not path.is_file()]:
        raise UsageError(f"no worker handler at {', '.join(absent)}: run from a voicepod checkout "
                         "(or pass --workers-dir)")
    return handlers


def progress_printer(started: float) -> Callable[[dict[str, bool]], None]:
    """An ``on_progress`` for :class:`LocalServer` that prints each endpoint's state, with seconds since
    ``started`` (a ``time.monotonic()``), to stderr."""

    def show(ready: dict[str, bool]) -> None:
        states = "  ".join(f"{name}: {'ready' if ok else 'loading'}" for name, ok in ready.items())
        print(f"[{time.monotonic() - started:5.1f} s] {states}", file=sys.stderr, flush=True)

    return show


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports (``serve-local --direct`` takes one per endpoint)."""
    for _ in range(100):
        first = free_port()
        with contextlib.ExitStack() as held:
            try:
                for port in range(first, first + count):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return first
    raise OSError(f"no {count} consecutive free ports found")


class LocalServer:
    """A ``serve-local`` subprocess, started on ``with`` and stopped on exit.

    ``endpoints`` maps endpoint names to handler files; ``workers`` maps names to worker counts (default 1);
    ``env`` is added to the workers' environment; ``ready_timeout_s`` bounds the wait for every worker to load
    its model; ``on_progress`` is called with each endpoint's readiness whenever it changes; ``extra_args``
    are passed to ``serve-local`` as they are. The server's log (its own lines and its
    workers') goes to ``log_path``, a temporary file by default, and ``logs()`` reads it. ``direct``: run the
    workers in load-balancing mode (``serve-local --direct``), one per endpoint, each at :meth:`url`.
    """

    def __init__(
        self,
        endpoints: dict[str, str | Path],
        *,
        workers: dict[str, int] | None = None,
        api_key: str | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
        ready_timeout_s: float = 600.0,
        extra_args: list[str] | None = None,
        log_path: str | Path | None = None,
        on_progress: Callable[[dict[str, bool]], None] | None = None,
        direct: bool = False,
    ):
        self.endpoints = {name: Path(path) for name, path in endpoints.items()}
        self.workers = workers or {}
        self.api_key = api_key
        self.env = env or {}
        self.direct = direct
        self.port = port or (free_ports(len(self.endpoints)) if direct else free_port())
        self.ready_timeout_s = ready_timeout_s
        self.extra_args = extra_args or []
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix="voicepod-serve-local-", suffix=".log")
            os.close(fd)
        self.log_path = Path(log_path)
        self.process: subprocess.Popen[bytes] | None = None
        self.on_progress = on_progress

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2"

    def url(self, name: str) -> str:
        """With ``direct``, the URL of endpoint ``name``'s worker (its load-balancing endpoint)."""
        return endpoint_urls(list(self.endpoints), "127.0.0.1", self.port)[name]

    def endpoint(self, name: str, **kwargs: Any) -> Endpoint:
        kwargs.setdefault("api_key", self.api_key)
        if self.direct:
            return Endpoint(self.url(name), **kwargs)
        return Endpoint(name, base_url=self.base_url, **kwargs)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def command(self) -> list[str]:
        args = [sys.executable, "-m", "voicepod.cli", "serve-local", "--port", str(self.port)]
        if self.direct:
            args.append("--direct")
        for name, count in self.workers.items():
            args += ["--workers", f"{name}={count}"]
        args += self.extra_args
        args += [f"{name}={path}" for name, path in self.endpoints.items()]
        return args

    def __enter__(self) -> LocalServer:
        env = {**os.environ, **self.env}
        if self.api_key:
            env["VOICEPOD_LOCAL_API_KEY"] = self.api_key  # not on the command line, where `ps` would show it
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait_ready(self) -> None:
        """Block until every endpoint's workers have taken their first job-take poll (models loaded)."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        deadline = time.monotonic() + self.ready_timeout_s
        waiting = dict(self.endpoints)
        last_state: dict[str, bool] = {}
        while waiting:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"serve-local exited early:\n{self.logs()[-4000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers not ready after {self.ready_timeout_s} s:\n{self.logs()[-4000:]}")
            for name in list(waiting):
                if self._ready(name, headers):
                    del waiting[name]
            if self.on_progress and (state := {n: n not in waiting for n in self.endpoints}) != last_state:
                self.on_progress(state)
                last_state = state
            time.sleep(0.2)

    def _ready(self, name: str, headers: dict[str, str]) -> bool:
        try:
            if self.direct:  # what RunPod's balancer asks
                return httpx.get(f"{self.url(name)}/ping", timeout=2).status_code == 200
            health = httpx.get(f"{self.base_url}/{name}/health", headers=headers, timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return False
        return health["workers"]["ready"] >= self.workers.get(name, 1)

    def stop(self, grace_s: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
