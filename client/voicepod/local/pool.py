"""Worker processes: each runs a handler file unchanged through the runpod SDK's real worker loop.

The SDK's worker loop takes jobs, posts stream chunks and results, and long-polls for stop signals at URLs given
by its ``RUNPOD_WEBHOOK_*`` variables; we point those at the emulator's internal routes. That is the code path a
deployed worker runs, which the SDK's own local modes skip (they do not stream generator handlers). With
``serve-local --direct`` the same processes run in load-balancing mode instead, each serving its own port
(:mod:`voicepod.local.direct`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

RESTART_LIMIT = 3  # a worker that dies this many times before ever taking a job is broken, not unlucky


def package_root(handler_path: Path) -> Path:
    """The folder to put on ``sys.path`` so a handler inside a package (``workers/stt/handler.py``) can
    import its siblings (``workers.common``) when run as a plain file."""
    folder = handler_path.resolve().parent
    while (folder / "__init__.py").exists():
        folder = folder.parent
    return folder


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # Linux only: if the emulator is killed outright, its workers must not poll a dead server forever.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class WorkerProcess:
    endpoint: str
    index: int
    handler: Path
    worker_id: str
    process: asyncio.subprocess.Process | None = None
    ready: bool = False
    started_at: float = 0.0
    ready_after_s: float | None = None
    jobs: set[str] = field(default_factory=set)
    stop_ids: list[str] = field(default_factory=list)
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    early_deaths: int = 0

    def request_stop(self, job_id: str) -> None:
        self.stop_ids.append(job_id)
        self.stop_event.set()


class WorkerPool:
    """Starts, watches and restarts the worker processes of every endpoint.

    ``mode_env(worker)`` is what tells a worker process how to serve (the runpod SDK's job routes, or its own port in
    load-balancing mode); ``extra_env`` is added to every worker's environment. ``on_exit(worker, returncode)`` is
    called when a worker process ends, before it is restarted.
    """

    def __init__(
        self,
        mode_env: Callable[[WorkerProcess], dict[str, str]],
        extra_env: dict[str, str],
        on_exit: Callable[[WorkerProcess, int], None],
        log: Callable[[str], None],
    ):
        self.mode_env = mode_env
        self.extra_env = extra_env
        self.on_exit = on_exit
        self.log = log
        self.workers: dict[str, WorkerProcess] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def add(self, endpoint: str, handler: Path, count: int) -> None:
        for index in range(count):
            worker = WorkerProcess(endpoint, index, handler.resolve(), worker_id=f"{endpoint}-{index}")
            self.workers[worker.worker_id] = worker

    def of_endpoint(self, endpoint: str) -> list[WorkerProcess]:
        return [w for w in self.workers.values() if w.endpoint == endpoint]

    def _env(self, worker: WorkerProcess) -> dict[str, str]:
        root = str(package_root(worker.handler))
        env = {
            "RUNPOD_DEBUG_LEVEL": "INFO",  # the SDK logs every poll at DEBUG
            **os.environ,
            **self.extra_env,
            "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
            "PYTHONUNBUFFERED": "1",
            "RUNPOD_POD_ID": worker.worker_id,
            **self.mode_env(worker),
        }
        # The emulator's API key is for its public API only; workers never see it.
        env.pop("RUNPOD_API_KEY", None)
        env.pop("RUNPOD_AI_API_KEY", None)
        env.pop("VOICEPOD_LOCAL_API_KEY", None)  # LocalServer hands the key to serve-local this way
        return env

    async def start(self) -> None:
        for worker in self.workers.values():
            self._tasks.append(asyncio.create_task(self._supervise(worker)))

    async def _spawn(self, worker: WorkerProcess) -> None:
        worker.ready = False
        worker.started_at = time.monotonic()
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(worker.handler),
            env=self._env(worker),
            cwd=str(package_root(worker.handler)),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )

    async def _relay_output(self, worker: WorkerProcess) -> None:
        assert worker.process and worker.process.stdout
        async for line in worker.process.stdout:
            self.log(f"[{worker.worker_id}] {line.decode(errors='replace').rstrip()}")

    async def _supervise(self, worker: WorkerProcess) -> None:
        while not self._stopping:
            await self._spawn(worker)
            assert worker.process
            relay = asyncio.create_task(self._relay_output(worker))
            returncode = await worker.process.wait()
            await relay
            was_ready = worker.ready
            worker.ready = False
            self.on_exit(worker, returncode)
            if self._stopping:
                return
            worker.early_deaths = 0 if was_ready else worker.early_deaths + 1
            if worker.early_deaths >= RESTART_LIMIT:
                self.log(f"worker {worker.worker_id} exited {RESTART_LIMIT} times before taking jobs; giving up")
                return
            self.log(f"worker {worker.worker_id} exited with code {returncode}; restarting")
            await asyncio.sleep(0.5 * worker.early_deaths)

    async def stop(self, grace_s: float = 5.0) -> None:
        self._stopping = True
        running = [w.process for w in self.workers.values() if w.process and w.process.returncode is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), grace_s)
        except TimeoutError:
            for process in running:
                if process.returncode is None:
                    process.kill()
        await asyncio.gather(*self._tasks, return_exceptions=True)
