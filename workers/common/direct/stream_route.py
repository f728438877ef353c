"""``POST /stream``: one job, its chunks streamed back as server-sent events while the handler makes them.

The body is ``{"input": {...}, "id": "optional job id", "policy": {"executionTimeout": ms}}``, as a queue
endpoint's ``/run`` takes it. The answer waits for the job's first chunk: a job that fails before it (bad input)
is an HTTP error whose body is its error chunk (400 for the caller's mistakes, 500 for the worker's); otherwise it
is ``200 text/event-stream``, one event per chunk, ``id:`` the chunk's ``seq`` and ``data:`` the chunk as JSON,
the same chunks a queue endpoint's ``/stream`` returns (an error after the first chunk is the last event, its
detail as an object). SSE, not NDJSON, because it is what RunPod's own load-balancing examples stream through the
balancer (its vLLM worker), and every HTTP stack passes it unbuffered. The job's id is in ``X-Voicepod-Job-Id``.

Closing the connection ends the job: aiohttp cancels this route's task (``handler_cancellation``) and
:meth:`~workers.common.direct.jobs.WorkerState.job` closes the handler.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web
from voicepod.protocol import ErrorCode

from .jobs import STATE, Busy, Chunk, as_error, error_chunk
from .replies import json_body, refusal, refused

JOB_ID_HEADER = "X-Voicepod-Job-Id"
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def event(chunk: Chunk) -> bytes:
    """One chunk as a server-sent event (``id`` is its ``seq``; an error chunk's detail goes as an object)."""
    chunk = as_error(chunk) or chunk
    seq = chunk.get("seq") if isinstance(chunk, dict) else None
    head = f"id: {seq}\n" if isinstance(seq, int) else ""
    return f"{head}data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()


def parse_job(body: Any) -> tuple[str, Any, float | None]:
    """The job id (the caller's or a new one), input and execution timeout in seconds of a ``/stream`` body."""
    if not isinstance(body, dict) or "input" not in body:
        raise refused(ErrorCode.INVALID_INPUT, "the body must be an object with an 'input' key", field="input")
    job_id = body.get("id")
    if job_id is not None and (not isinstance(job_id, str) or not 0 < len(job_id) <= 128):
        raise refused(ErrorCode.INVALID_INPUT, "id must be a string of 1 to 128 characters", field="id")
    policy = body.get("policy") if isinstance(body.get("policy"), dict) else {}
    timeout_ms = policy.get("executionTimeout")
    timeout_s = timeout_ms / 1000 if isinstance(timeout_ms, (int, float)) and timeout_ms > 0 else None
    return job_id or f"direct-{uuid.uuid4().hex}", body["input"], timeout_s


async def stream(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    job_id, job_input, timeout_s = parse_job(await json_body(request))
    headers = {JOB_ID_HEADER: job_id}
    try:
        async with state.job(job_id, job_input, timeout_s) as chunks:
            first = await anext(chunks, None)
            if first is None:
                return refusal(error_chunk(ErrorCode.INTERNAL, "the handler ended without a chunk"), headers)
            if (error := as_error(first)) is not None:
                return refusal(error, headers)
            response = web.StreamResponse(headers={**SSE_HEADERS, **headers})
            await response.prepare(request)
            await response.write(event(first))
            async for chunk in chunks:
                await response.write(event(chunk))
            await response.write_eof()
            return response
    except Busy as busy:
        return refusal(busy.chunk, headers)
    except ConnectionResetError:  # the caller left between two chunks: the job is closed above
        return web.Response(status=499)
