"""RunPod's OpenAI-compatible route, ``/v2/{endpoint}/openai/v1/...``, as the emulator serves it.

RunPod turns such a request into a job whose input is ``{"openai_route": "/v1/<path>", "openai_input": <body>}``
and answers with what the worker produced: a request with ``"stream": true`` gets the worker's streamed text as
server-sent events, written as it arrives; any other gets the job's one output object. RunPod's gateway is not
open source; this follows the contract RunPod's own vLLM worker is written to (its default ``RAW_OPENAI_OUTPUT``:
stream SSE text, answer anything else with one object). A failed job's error and a wrong key come back in
OpenAI's shape, so OpenAI SDKs raise their own typed exceptions. A caller that leaves before the answer is
complete cancels the job.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..protocol import ErrorCode, ErrorDetail, parse_job_error
from .bookkeeping import JobBook
from .jobs import CANCELLED, COMPLETED, TIMED_OUT, LocalJob

# wait_change wakes on every change of the job; this bound only makes the loops look at the caller's connection
# now and then, which aiohttp does not report (it does not cancel a handler whose caller left).
HOLD_S = 1.0
# Worker error codes that are the request's fault: HTTP 400.
CALLER_ERRORS = {ErrorCode.INVALID_INPUT, ErrorCode.INPUT_TOO_LARGE}
CALLER_LEFT = 499  # nginx's status for a request its caller closed: nobody reads it, but the access log may


def openai_error(status: int, message: str, code: str, param: str | None = None) -> web.Response:
    """An error response in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return web.json_response({"error": _error_body(status, message, code, param)}, status=status)


def _error_body(status: int, message: str, code: str, param: str | None) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"  # OpenAI's own 401 says so too
    return {"message": message, "type": kind, "param": param, "code": code}


def _job_failure(job: LocalJob) -> tuple[int, ErrorDetail]:
    if job.status == TIMED_OUT:
        return 504, parse_job_error(job.error)
    if job.status == CANCELLED:
        return 409, ErrorDetail(code=ErrorCode.CANCELLED, message="the job was cancelled")
    detail = parse_job_error(job.error)
    return (400 if detail.code in CALLER_ERRORS else 500), detail


def _failure_response(job: LocalJob) -> web.Response:
    status, detail = _job_failure(job)
    return openai_error(status, detail.message, detail.code, detail.field)


def _event(output: Any) -> bytes:
    # The worker streams ready-made SSE text; anything else is wrapped as one event so nothing is dropped.
    return (output if isinstance(output, str) else f"data: {json.dumps(output)}\n\n").encode()


def _caller_left(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


async def _wait(job: LocalJob, request: web.Request, ready: Callable[[], bool]) -> bool:
    """Wait until ``ready()`` or the job's end; False if the caller left first."""
    while not ready() and not job.terminal:
        if _caller_left(request):
            return False
        await job.wait_change(HOLD_S)
    return True


async def _stream(book: JobBook, job: LocalJob, request: web.Request, log: Callable[[str], None]
                  ) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    try:
        # Hold the answer until the first output or the job's end, so a request the worker refuses at once gets
        # an HTTP error status rather than a 200 stream holding one error event.
        if not await _wait(job, request, lambda: bool(job.stream)):
            return web.Response(status=CALLER_LEFT)
        if job.terminal and job.status != COMPLETED and not job.stream:
            return _failure_response(job)
        await response.prepare(request)
        while True:
            ended = job.terminal  # read first: outputs the worker posted before it ended are taken below
            for output in job.take_new_stream():
                await response.write(_event(output))
            if ended:
                break
            if not await _wait(job, request, lambda: job.cursor < len(job.stream)):
                return response
        if job.status != COMPLETED:
            status, detail = _job_failure(job)
            error = _error_body(status, detail.message, detail.code, detail.field)
            await response.write(f"data: {json.dumps({'error': error})}\n\n".encode())
        await response.write_eof()
    except ConnectionResetError:
        pass  # the caller hung up: the job is cancelled below
    finally:
        if not job.terminal:  # left before the job ended (hung up, or the server is shutting down)
            _cancel_unread(book, job, log)
    return response


def _cancel_unread(book: JobBook, job: LocalJob, log: Callable[[str], None]) -> None:
    # Nobody will read the rest, so stop the worker from writing it.
    log(f"job {job.id}: the caller left its OpenAI request; cancelling the job")
    book.cancel(job)


async def handle(book: JobBook, endpoint: str, request: web.Request, log: Callable[[str], None]
                 ) -> web.StreamResponse:
    """Serve ``/v2/{endpoint}/openai/v1/{path}`` (POST with an OpenAI request body, or GET as for ``/models``)
    as a job of ``endpoint`` in ``book``; ``log`` takes one line."""
    job_input: dict[str, Any] = {"openai_route": "/v1/" + request.match_info["path"]}
    body: Any = None
    if request.method == "POST":
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return openai_error(400, "body is not valid JSON", ErrorCode.INVALID_JSON)
        job_input["openai_input"] = body
    job = book.enqueue(endpoint, job_input)
    if isinstance(body, dict) and body.get("stream") is True:
        return await _stream(book, job, request, log)
    if not await _wait(job, request, lambda: False):
        _cancel_unread(book, job, log)
        return web.Response(status=CALLER_LEFT)
    if job.status != COMPLETED:
        return _failure_response(job)
    output = job.output
    # A streaming handler's result is the list of everything it yielded; a one-object answer is that object.
    if isinstance(output, list) and len(output) == 1:
        output = output[0]
    return web.json_response(output)
