"""The job stream every handler yields: sequence numbers, metrics and structured errors in one place.

A handler is ``async for chunk in serve_job(job, Request, work): yield chunk``. ``work`` gets the validated
request and yields the chunk models of :mod:`voicepod.protocol` (``SegmentChunk``, ``AudioChunk``...) without
``seq``; its last one is the ``done`` chunk, whose ``metrics`` this wrapper completes with load, compute and
first-chunk seconds. Building the contract's own models means a renamed field fails in the worker's tests, not
in a client. (The LLM's OpenAI passthrough yields OpenAI's objects, plain dicts, which get ``seq`` alone.)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from pydantic import BaseModel
from voicepod.protocol import ErrorChunk, ErrorDetail, _Chunk

from .errors import INTERNAL, OUT_OF_MEMORY, OUTPUT_TOO_LARGE, WorkerError
from .validation import parse_input
from .warm_up import JOB_ID as WARM_UP_JOB_ID

log = logging.getLogger("voicepod.worker")

M = TypeVar("M", bound=BaseModel)

# RunPod refuses a streamed chunk over 1 MB; keep a margin for the envelope it wraps each chunk in.
MAX_CHUNK_BYTES = 1_000_000 - 1024

_pending_load_s: list[float] = []


def report_load(seconds: float) -> None:
    """Record the model load time, billed to the first job this worker process serves (its cold start)."""
    _pending_load_s.append(seconds)


def _take_load() -> float:
    load = sum(_pending_load_s)
    _pending_load_s.clear()
    return load


def _error(seq: int, detail: ErrorDetail) -> dict[str, Any]:
    # The SDK ends the stream at this chunk and fails the job with str(chunk["error"]).
    return ErrorChunk(seq=seq, error=detail).model_dump(exclude_none=True)


def _is_out_of_memory(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


async def serve_job(
    job: dict[str, Any],
    request_model: type[M],
    work: Callable[[M], AsyncIterator[_Chunk | dict[str, Any]]],
) -> AsyncIterator[dict[str, Any]]:
    """Validate ``job["input"]``, run ``work`` and yield numbered chunks, ending in ``done`` or ``error``, as
    the JSON objects RunPod streams."""
    started = time.perf_counter()
    load_s = _take_load() if job.get("id") != WARM_UP_JOB_ID else 0.0  # billed to the first real job
    seq = 0
    first_chunk_s: float | None = None
    try:
        request = parse_input(request_model, job.get("input"))
        async for body in work(request):
            now = time.perf_counter() - started
            if first_chunk_s is None:
                first_chunk_s = now
            chunk = _numbered(body, seq, {"load_s": round(load_s, 4), "compute_s": round(now, 4),
                                          "first_chunk_s": round(first_chunk_s, 4)})
            size = len(json.dumps(chunk, ensure_ascii=False).encode())
            if size > MAX_CHUNK_BYTES:
                raise WorkerError(OUTPUT_TOO_LARGE, f"chunk {seq} is {size} bytes, over RunPod's 1 MB limit")
            yield chunk
            seq += 1
    except WorkerError as exc:
        log.info("job %s failed: %s (%s)", job.get("id"), exc.code, exc.message)
        yield _error(seq, exc.detail())
    except Exception as exc:  # noqa: BLE001 - any failure ends this job, never the worker
        if _is_out_of_memory(exc):
            _free_accelerator_memory()
            detail = ErrorDetail(code=OUT_OF_MEMORY, message=f"out of memory: {exc}")
        else:
            log.exception("job %s: unexpected error", job.get("id"))
            detail = ErrorDetail(code=INTERNAL, message=f"{type(exc).__name__}: {exc}")
        yield _error(seq, detail)


def _numbered(body: _Chunk | dict[str, Any], seq: int, seconds: dict[str, float]) -> dict[str, Any]:
    """``body`` as it goes out: numbered, and a ``done`` chunk's metrics completed with ``seconds``."""
    if isinstance(body, dict):
        return {"seq": seq, **body}
    update: dict[str, Any] = {"seq": seq}
    metrics = getattr(body, "metrics", None)
    if getattr(body, "type", None) == "done" and metrics is not None:
        update["metrics"] = metrics.model_copy(update=seconds)
    return body.model_copy(update=update).model_dump(mode="json", exclude_none=True)


def _free_accelerator_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def worker_config(handler: Callable[..., AsyncIterator[dict[str, Any] | str]], concurrency: int = 1) -> dict[str, Any]:
    """The ``runpod.serverless.start`` config every voicepod worker uses.

    ``concurrency`` is how many jobs one worker process takes at once, through the SDK's
    ``concurrency_modifier`` (:func:`workers.common.capacity.max_concurrency` reads ``MAX_CONCURRENCY``). When
    the next job is taken (the moment a slot frees, at any concurrency) is :mod:`workers.common.job_take`'s
    business, not this number's.
    """
    jobs = max(1, concurrency)
    return {
        "handler": handler,
        # /status and /runsync return every chunk, as a list, once the job is done.
        "return_aggregate_stream": True,
        "concurrency_modifier": lambda _current: jobs,
    }
