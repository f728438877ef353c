"""One job through the handler in load-balancing mode, within the worker's ``MAX_CONCURRENCY`` slots.

Every route (``/stream``, ``/ws``, ``/openai/v1``) runs its jobs through :meth:`WorkerState.job`: it takes a slot or
refuses at once (:class:`Busy`; there is no queue to wait in, as RunPod's balancer has none), and however the
route leaves it (the last chunk sent, the caller gone, the task cancelled), it closes the handler's generator, so
the model work it started stops (the LLM's batch row, the TTS thread), and frees the slot.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from voicepod.protocol import ErrorCode, ErrorDetail

log = logging.getLogger("voicepod.worker")

Chunk = dict[str, Any] | str
Handler = Callable[[dict[str, Any]], AsyncIterator[Chunk]]

# Error codes that are the caller's doing: HTTP 400, as a queue endpoint's job would fail with them.
CALLER_ERRORS = frozenset({
    ErrorCode.INVALID_INPUT, ErrorCode.INPUT_TOO_LARGE, ErrorCode.INVALID_JSON, ErrorCode.UNDECODABLE_AUDIO,
    ErrorCode.EMPTY_AUDIO, ErrorCode.URL_FORBIDDEN, ErrorCode.FETCH_FAILED,
})
_STATUS = {ErrorCode.WORKER_BUSY: 429, ErrorCode.WORKER_LOADING: 503, ErrorCode.UNAUTHORIZED: 401,
           ErrorCode.NOT_FOUND: 404, ErrorCode.TIMED_OUT: 504}


def error_chunk(code: str, message: str, seq: int = 0, field: str | None = None) -> dict[str, Any]:
    """An ``error`` chunk with its detail as an object: ``{"seq", "type": "error", "error": {"code", ...}}``."""
    return {"seq": seq, "type": "error",
            "error": ErrorDetail(code=code, message=message, field=field).model_dump(exclude_none=True)}


def as_error(chunk: Chunk | None) -> dict[str, Any] | None:
    """``chunk`` with its detail as an object if it is an error chunk (workers yield the detail as JSON text, the
    form the runpod SDK needs), else None."""
    if not isinstance(chunk, dict) or "error" not in chunk:
        return None
    detail = chunk["error"]
    if isinstance(detail, str):
        try:
            detail = json.loads(detail)
        except ValueError:
            detail = {"code": ErrorCode.HANDLER_EXCEPTION, "message": detail}
    return {**chunk, "error": detail}


def http_status(error: dict[str, Any]) -> int:
    """The HTTP status of a job that fails with ``error`` (an :func:`as_error` chunk) before its first chunk."""
    code = error["error"].get("code") if isinstance(error.get("error"), dict) else None
    if code in CALLER_ERRORS:
        return 400
    return _STATUS.get(code, 500)


class Busy(Exception):
    """Every slot is taken: the job is refused with :attr:`chunk` (``worker_busy``, HTTP 429)."""

    def __init__(self, slots: int):
        super().__init__(f"all {slots} job slots of this worker are busy (MAX_CONCURRENCY={slots}): try again")
        self.chunk = error_chunk(ErrorCode.WORKER_BUSY, str(self))


@dataclass
class WorkerState:
    """What the routes share: the ``handler`` once the worker is ready (None while its model loads), how many jobs
    it runs at once (``slots``) and how many it runs now (``busy``)."""

    handler: Handler | None = None
    slots: int = 1
    busy: int = 0

    @property
    def ready(self) -> bool:
        return self.handler is not None

    @asynccontextmanager
    async def job(self, job_id: str, job_input: Any, timeout_s: float | None = None
                  ) -> AsyncIterator[AsyncIterator[Chunk]]:
        """The handler's chunks for one job, inside a slot; raises :class:`Busy` when none is free. ``timeout_s``
        ends the job with a ``timed_out`` error chunk after that many seconds (RunPod's ``executionTimeout``)."""
        assert self.handler is not None, "routes refuse jobs until the worker is ready"
        if self.busy >= self.slots:
            raise Busy(self.slots)
        self.busy += 1
        chunks = self.handler({"id": job_id, "input": job_input})
        bounded = _bounded(chunks, timeout_s)
        finished = False
        try:
            yield bounded
            finished = True
        finally:
            # Also when the route's task is cancelled (the caller hung up): the generator's own `finally` stops the
            # model work, and the slot is free for the next job only once it has.
            try:
                await bounded.aclose()
                await chunks.aclose()
            finally:
                self.busy -= 1
                if not finished:
                    log.info("job %s stopped before its end: its caller left or cancelled it", job_id)


async def _bounded(chunks: AsyncIterator[Chunk], timeout_s: float | None) -> AsyncIterator[Chunk]:
    """``chunks``, ended with a ``timed_out`` error chunk once ``timeout_s`` seconds have passed (None: never)."""
    if timeout_s is None:
        async for chunk in chunks:
            yield chunk
        return
    deadline = asyncio.get_running_loop().time() + timeout_s
    seq = 0
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except TimeoutError:
            yield error_chunk(ErrorCode.TIMED_OUT, f"execution timeout of {timeout_s:g} s exceeded", seq)
            return
        if isinstance(chunk, dict) and isinstance(chunk.get("seq"), int):
            seq = chunk["seq"] + 1
        yield chunk


STATE = web.AppKey("state", WorkerState)  # the app's one WorkerState, which every route reads
