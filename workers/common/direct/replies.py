"""What the routes share: reading a JSON body, and refusing a request with a structured error.

Every refusal carries the body a failed job's error chunk carries, ``{"seq": 0, "type": "error", "error": {"code",
"message", "field"}}``, with the status :func:`~workers.common.direct.jobs.http_status` gives its code.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from voicepod.protocol import ErrorCode

from .jobs import error_chunk, http_status

# RunPod's load-balancing endpoints take requests of up to 30 MB (docs: serverless/load-balancing/overview).
MAX_BODY_BYTES = 30 * 1024 * 1024


def refusal(error: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    """An error chunk as the whole answer, with its code's HTTP status."""
    return web.json_response(error, status=http_status(error), headers=headers)


def refused(code: str, message: str, field: str | None = None) -> web.HTTPException:
    """A refusal to raise from inside a route: aiohttp answers with it."""
    error = error_chunk(code, message, field=field)
    kind = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 404: web.HTTPNotFound, 429: web.HTTPTooManyRequests,
            503: web.HTTPServiceUnavailable}.get(http_status(error), web.HTTPInternalServerError)
    return kind(text=json.dumps(error), content_type="application/json")


async def json_body(request: web.Request) -> Any:
    """The request's JSON body; a body that is not JSON (or nested too deep to parse) is a 400 ``invalid_json``."""
    try:
        return await request.json()
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise refused(ErrorCode.INVALID_JSON, "the body is not valid JSON") from None
