"""``GET /ws``: a WebSocket session that runs job after job on one connection.

Worth it where one caller sends many small jobs in a row, a reply spoken sentence by sentence: one connection, so
one TLS handshake and one trip through RunPod's balancer for the session, and every job on the same worker.

- The caller sends text frames ``{"id": "s1", "input": {...}, "policy": {...}}`` (start a job; ids are the
  caller's, unique in the session) and ``{"cancel": "s1"}`` (stop one).
- The worker sends every chunk of every job as one text frame, the chunk with ``"job": its id`` added. Jobs of a
  session may run at once, each in a slot of ``MAX_CONCURRENCY``, their frames interleaved, each job's in ``seq``
  order. A job ends at its ``done`` or ``error`` chunk: a cancelled one with a ``cancelled`` error, one refused for
  want of a slot with ``worker_busy`` (nothing ran: send it again).
- A frame that is none of these is answered with an error frame without ``job``, and the session goes on.
  Closing the connection stops the session's jobs.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import WSMsgType, web
from voicepod.protocol import ErrorCode

from .jobs import STATE, Busy, Chunk, WorkerState, as_error, error_chunk
from .replies import MAX_BODY_BYTES
from .stream_route import parse_job


class _Session:
    """One connection's jobs, by id, and the one lock its frames are sent under."""

    def __init__(self, ws: web.WebSocketResponse, state: WorkerState):
        self.ws, self.state = ws, state
        self.jobs: dict[str, asyncio.Task[None]] = {}
        self._sending = asyncio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        async with self._sending:
            if not self.ws.closed:
                await self.ws.send_str(json.dumps(message, ensure_ascii=False))

    async def receive(self, text: str) -> None:
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):
            await self.send(error_chunk(ErrorCode.INVALID_JSON, "a frame is not valid JSON"))
            return
        if isinstance(message, dict) and set(message) == {"cancel"}:
            if (task := self.jobs.get(str(message["cancel"]))) is not None:
                task.cancel()
            return
        try:
            job_id, job_input, timeout_s = parse_job(message)
        except web.HTTPException as refusal:
            await self.send(json.loads(refusal.text or "{}"))
            return
        if not isinstance(message.get("id"), str) or job_id in self.jobs:
            await self.send(error_chunk(ErrorCode.INVALID_INPUT, "each job needs an id of its own", field="id"))
            return
        self.jobs[job_id] = asyncio.ensure_future(self._run(job_id, job_input, timeout_s))

    async def _run(self, job_id: str, job_input: Any, timeout_s: float | None) -> None:
        seq = 0
        try:
            async with self.state.job(job_id, job_input, timeout_s) as chunks:
                async for chunk in chunks:
                    await self.send(_framed(job_id, chunk))
                    seq += 1
        except Busy as busy:
            await self.send({"job": job_id, **busy.chunk})
        except asyncio.CancelledError:
            # Stopped by a cancel frame (its job is closed above): say so. Not when the session itself is ending.
            if not self.ws.closed:
                await self.send({"job": job_id, **error_chunk(ErrorCode.CANCELLED, "cancelled", seq)})
        finally:
            self.jobs.pop(job_id, None)

    async def close(self) -> None:
        for task in self.jobs.values():
            task.cancel()
        await asyncio.gather(*self.jobs.values(), return_exceptions=True)


def _framed(job_id: str, chunk: Chunk) -> dict[str, Any]:
    chunk = as_error(chunk) or chunk
    return {"job": job_id, **chunk} if isinstance(chunk, dict) else {"job": job_id, "data": chunk}


async def session(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=MAX_BODY_BYTES, heartbeat=30.0)
    await ws.prepare(request)
    running = _Session(ws, request.app[STATE])
    try:
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await running.receive(message.data)
            elif message.type == WSMsgType.BINARY:
                await running.send(error_chunk(ErrorCode.INVALID_JSON, "frames are JSON text, not binary"))
    finally:
        await running.close()
    return ws
