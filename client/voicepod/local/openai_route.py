"""RunPod's OpenAI-compatible route, ``/v2/{endpoint}/openai/v1/...``, as the emulator serves it.

RunPod turns such a request into a job whose input is ``{"openai_route": "/v1/<path>", "openai_input": <body>}``
and answers with what the worker produced: a request with ``"stream": true`` gets the worker's streamed text as
server-sent events, written as it arrives; any other gets the job's one output object. RunPod's gateway is not
open source; this follows the contract RunPod's own vLLM worker is written to (its default ``RAW_OPENAI_OUTPUT``:
stream SSE text, answer anything else with one object). Errors come back in OpenAI's shape, so OpenAI SDKs raise
their own typed exceptions.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..protocol import ErrorDetail, parse_job_error
from .jobs import CANCELLED, COMPLETED, TIMED_OUT, LocalJob

if TYPE_CHECKING:
    from .server import Emulator

HOLD_S = 1.0  # how long one wait for the job's next output lasts before the loop looks again
CALLER_ERRORS = {"invalid_input", "input_too_large"}  # worker error codes that are the request's fault: HTTP 400


def openai_error(status: int, message: str, code: str, param: str | None = None) -> web.Response:
    """An error response in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status)


def _job_failure(job: LocalJob) -> tuple[int, ErrorDetail]:
    if job.status == TIMED_OUT:
        return 504, parse_job_error(job.error)
    if job.status == CANCELLED:
        return 409, ErrorDetail(code="cancelled", message="the job was cancelled")
    detail = parse_job_error(job.error)
    return (400 if detail.code in CALLER_ERRORS else 500), detail


def _failure_response(job: LocalJob) -> web.Response:
    status, detail = _job_failure(job)
    return openai_error(status, detail.message, detail.code, detail.field)


def _event(output: Any) -> bytes:
    # The worker streams ready-made SSE text; anything else is wrapped as one event so nothing is dropped.
    return (output if isinstance(output, str) else f"data: {json.dumps(output)}\n\n").encode()


async def _stream(emulator: Emulator, job: LocalJob, request: web.Request) -> web.StreamResponse:
    # Hold the answer until the first output or the job's end, so a request the worker refuses at once gets an
    # HTTP error status rather than a 200 stream holding one error event.
    while not job.stream and not job.terminal:
        await job.wait_change(HOLD_S)
    if job.terminal and job.status != COMPLETED and not job.stream:
        return _failure_response(job)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    try:
        while True:
            ended = job.terminal  # read first: outputs the worker posted before it ended are taken below
            for output in job.take_new_stream():
                await response.write(_event(output))
            if ended:
                break
            await job.wait_change(HOLD_S)
        if job.status != COMPLETED:
            _, detail = _job_failure(job)
            error = {"message": detail.message, "type": "server_error", "param": detail.field, "code": detail.code}
            await response.write(f"data: {json.dumps({'error': error})}\n\n".encode())
        await response.write_eof()
    except ConnectionResetError:
        pass  # the caller hung up: the job is cancelled below
    finally:
        if not job.terminal:
            # Left before the job ended (hung up, or the server is shutting down): nobody will read the rest, so
            # stop the worker from writing it.
            emulator.log(f"job {job.id}: the caller left its OpenAI stream; cancelling the job")
            emulator.cancel_job(job)
    return response


async def handle(emulator: Emulator, request: web.Request) -> web.StreamResponse:
    """Serve ``/v2/{ep}/openai/v1/{path}`` (POST with an OpenAI request body, or GET as for ``/models``)."""
    endpoint = emulator.endpoint_for(request)
    job_input: dict[str, Any] = {"openai_route": "/v1/" + request.match_info["path"]}
    body: Any = None
    if request.method == "POST":
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return openai_error(400, "body is not valid JSON", "invalid_json")
        job_input["openai_input"] = body
    job = emulator.enqueue(endpoint, job_input)
    if isinstance(body, dict) and body.get("stream") is True:
        return await _stream(emulator, job, request)
    while not job.terminal:
        await job.wait_change(HOLD_S)
    if job.status != COMPLETED:
        return _failure_response(job)
    output = job.output
    # A streaming handler's result is the list of everything it yielded; a one-object answer is that object.
    if isinstance(output, list) and len(output) == 1:
        output = output[0]
    return web.json_response(output)
