"""``/openai/v1/{path}`` (and ``/v1/{path}``): the LLM's OpenAI-compatible routes, served by the worker itself.

The request becomes the job input RunPod's queue endpoints build for their ``/openai/v1`` route,
``{"openai_route": "/v1/<path>", "openai_input": <body>}``, so the LLM handler answers both the same way: a
streamed chat completion as server-sent-event text, passed on as it comes; anything else as its one object. A
failure is an error in OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``), with 400 for the
caller's mistakes, so OpenAI SDKs raise their own typed exceptions; after the stream has begun it is the last
event. Leaving early stops the job, as on ``/stream``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web
from voicepod.protocol import ErrorCode

from .jobs import STATE, Busy, as_error, error_chunk, http_status
from .replies import json_body
from .stream_route import SSE_HEADERS


def error_body(error: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """An error chunk as OpenAI's error object, with its HTTP status."""
    status = http_status(error)
    detail = error["error"]
    return status, {"error": {"message": detail.get("message", ""), "type": "invalid_request_error" if status < 500
                              else "server_error", "param": detail.get("field"), "code": detail.get("code")}}


def openai_error(error: dict[str, Any]) -> web.Response:
    status, body = error_body(error)
    return web.json_response(body, status=status)


async def openai(request: web.Request) -> web.StreamResponse:
    job_input: dict[str, Any] = {"openai_route": "/v1/" + request.match_info["path"]}
    body: Any = None
    if request.method == "POST":
        try:
            body = await json_body(request)
        except web.HTTPException as refusal:
            return openai_error(json.loads(refusal.text or "{}"))
        job_input["openai_input"] = body
    streamed = isinstance(body, dict) and body.get("stream") is True
    try:
        async with request.app[STATE].job(f"openai-{uuid.uuid4().hex}", job_input) as outputs:
            first = await anext(outputs, None)
            if first is None:
                return openai_refusal(ErrorCode.INTERNAL, "the handler ended without an answer")
            if (error := as_error(first)) is not None:
                return openai_error(error)
            if not streamed:
                rest = [output async for output in outputs]
                return web.json_response(first if not rest else [first, *rest])
            response = web.StreamResponse(headers=SSE_HEADERS)
            await response.prepare(request)
            async for output in _prepend(first, outputs):
                if (error := as_error(output)) is not None:
                    output = f"data: {json.dumps(error_body(error)[1])}\n\n"
                await response.write(output.encode() if isinstance(output, str) else
                                     f"data: {json.dumps(output)}\n\n".encode())
            await response.write_eof()
            return response
    except Busy as busy:
        return openai_error(busy.chunk)
    except ConnectionResetError:
        return web.Response(status=499)


async def _prepend(first: Any, rest: Any) -> Any:
    yield first
    async for item in rest:
        yield item


def openai_refusal(code: str, message: str) -> web.Response:
    """A refusal of the server's own (a wrong key, a model still loading) in OpenAI's shape."""
    return openai_error(error_chunk(code, message))
