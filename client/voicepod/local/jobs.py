"""Jobs as RunPod tracks them: states, timings, the stream buffer and its read cursor."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

# The client and the emulator share one set of states, from the contract module.
from ..protocol import TERMINAL, JobStatus

IN_QUEUE = JobStatus.IN_QUEUE
IN_PROGRESS = JobStatus.IN_PROGRESS
COMPLETED = JobStatus.COMPLETED
FAILED = JobStatus.FAILED
CANCELLED = JobStatus.CANCELLED
TIMED_OUT = JobStatus.TIMED_OUT


def emulator_error(code: str, message: str) -> str:
    """A job error raised by the emulator itself, in the shape the client parses (see protocol.parse_job_error)."""
    return json.dumps({"code": code, "message": message})


@dataclass
class LocalJob:
    endpoint: str
    input: Any
    execution_timeout_s: float
    id: str = field(default_factory=lambda: f"{uuid.uuid4()}-local")
    status: str = IN_QUEUE
    created: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    worker_id: str | None = None
    stream: list[Any] = field(default_factory=list)
    cursor: int = 0  # how much of ``stream`` /stream has handed out: RunPod returns only what is new
    output: Any = None
    error: str | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def notify(self) -> None:
        # Wake everyone waiting on this job, then arm the event again for the next change.
        self.changed.set()
        self.changed = asyncio.Event()

    async def wait_change(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self.changed.wait(), timeout)
        except TimeoutError:
            pass

    def start(self, worker_id: str) -> None:
        self.status = IN_PROGRESS
        self.started = time.monotonic()
        self.worker_id = worker_id
        self.notify()

    def finish(self, status: str, *, output: Any = None, error: str | None = None) -> bool:
        """Move to a terminal state; returns False (and changes nothing) if the job had already ended."""
        if self.terminal:
            return False
        self.status = status
        self.finished = time.monotonic()
        self.output = output
        self.error = error
        self.notify()
        return True

    def timings(self) -> dict[str, int]:
        now = time.monotonic()
        delay = ((self.started or now) - self.created) * 1000
        times = {"delayTime": int(delay)}
        if self.started is not None:
            times["executionTime"] = int(((self.finished or now) - self.started) * 1000)
        return times

    def status_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "status": self.status, **self.timings()}
        if self.status == COMPLETED:
            body["output"] = self.output
        if self.error is not None:
            body["error"] = self.error
        if self.worker_id:
            body["workerId"] = self.worker_id
        return body

    def take_new_stream(self) -> list[Any]:
        new = self.stream[self.cursor :]
        self.cursor = len(self.stream)
        return new
