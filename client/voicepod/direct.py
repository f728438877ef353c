"""Jobs on a load-balancing endpoint (RunPod's direct route): the chunks stream back on the request that started
the job, with no queue, no ``/run`` and no polling.

:class:`~voicepod.endpoint.Endpoint` hands a job here when it was given an ``http(s)://`` URL instead of an id;
:class:`DirectJob` keeps :class:`~voicepod.endpoint.Job`'s API (``id``, ``stream()``, ``chunks()``, ``cancel()``,
``finished``, ``status()``), so the agent, the phone server and the Pipecat services take either kind. The worker
side is ``workers/common/direct`` (``POST /stream``: server-sent events, one per chunk).

- Cancelling closes the connection: the worker stops the job when it sees it go.
- A job the worker refuses at once (bad input) still returns from ``run()``, and ``stream()`` raises its
  :class:`JobFailed`, as a queue endpoint's failed job does. A full worker (429 ``worker_busy``) and one still
  loading (503) are tried again with backoff, as a queue endpoint's refusals are.
- A connection that breaks mid-stream (the worker died, or the network between) raises :class:`JobFailed` with
  ``code`` ``worker_died`` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx

from .endpoint import Job
from .errors import JobCancelled, JobFailed, JobTimedOut, ProtocolError, StreamIncomplete, TransportError
from .protocol import ErrorCode, ErrorDetail, JobStatus, parse_job_error
from .transport import api_error, reason

if TYPE_CHECKING:
    from .endpoint import Endpoint

JOB_ID_HEADER = "X-Voicepod-Job-Id"
_END = object()


async def start_job(endpoint: Endpoint, job_input: dict[str, Any], policy: dict[str, Any] | None) -> DirectJob:
    """``POST /stream`` the job and return it once the worker has answered (with its first chunk, or a refusal)."""
    job_id = f"direct-{uuid.uuid4().hex}"
    body: dict[str, Any] = {"id": job_id, "input": job_input, **({"policy": policy} if policy else {})}
    response = await endpoint._transport.stream("POST", "stream", json=body)
    if response.status_code < 400:
        return DirectJob(endpoint, response.headers.get(JOB_ID_HEADER, job_id), response)
    try:
        await response.aread()
    finally:
        await response.aclose()
    failure = _job_error(response)
    if failure is None:  # not a worker's answer: the balancer's own ("no workers available"), a proxy's
        raise api_error(response, "POST", f"{endpoint._transport.base_url}/stream")
    return DirectJob(endpoint, response.headers.get(JOB_ID_HEADER, job_id), None, failure)


def _job_error(response: httpx.Response) -> ErrorDetail | None:
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict) and isinstance(body.get("error"), dict) and "code" in body["error"]:
        return parse_job_error(body["error"])
    return None


async def _events(response: httpx.Response) -> AsyncIterator[Any]:
    """The ``data`` of each server-sent event of ``response``, parsed as JSON."""
    data: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line and data:
            yield json.loads("\n".join(data))
            data = []
    if data:
        yield json.loads("\n".join(data))


class DirectJob(Job):
    """A job whose chunks come back on its own request to a load-balancing endpoint.

    Its chunks are read off the connection as they arrive (by a task of its own, so that :meth:`cancel` can close
    the connection whatever the reader is waiting for) and :meth:`stream` yields them in ``seq`` order. ``failure``
    is the error of a job the worker refused before its first chunk.
    """

    def __init__(self, endpoint: Endpoint, job_id: str, response: httpx.Response | None,
                 failure: ErrorDetail | None = None):
        super().__init__(endpoint, job_id)
        self._response = response
        self._state = JobStatus.FAILED if failure else JobStatus.IN_PROGRESS
        self._failure = failure
        self._outputs: list[Any] = []
        self._arrived: asyncio.Queue[Any] = asyncio.Queue()
        self._reader = asyncio.ensure_future(self._read()) if response is not None else None
        self.finished = failure is not None

    async def _read(self) -> None:
        assert self._response is not None
        try:
            async for output in _events(self._response):
                self._arrived.put_nowait(output)
            self._arrived.put_nowait(_END)
        except httpx.ReadTimeout as exc:
            self._arrived.put_nowait(TransportError("POST", str(self._response.url), f"no chunk in {reason(exc)}"))
        except (httpx.TransportError, ValueError) as exc:
            self._arrived.put_nowait(exc)
        finally:
            await self._response.aclose()

    async def stream(self) -> AsyncIterator[Any]:
        """Yield the job's chunks as they arrive, in ``seq`` order, each once; raise :class:`JobFailed`,
        :class:`JobCancelled` or :class:`JobTimedOut` when it ends that way (after every chunk before it)."""
        if self._failure is not None:  # refused before its first chunk
            self._fail(self._failure)
        expected = 0
        while True:
            if self._state == JobStatus.CANCELLED:
                raise JobCancelled(self.id, "cancelled", self.endpoint.endpoint_id)
            output = await self._arrived.get()
            if output is _END:
                self._end_without_done(expected)
            if isinstance(output, BaseException):
                self._broken(output, expected)
            seq = output.get("seq") if isinstance(output, dict) else None
            if isinstance(seq, int):
                if seq != expected:
                    raise StreamIncomplete(self.id, f"chunk {seq} came where {expected} was due")
                expected += 1
            self._outputs.append(output)
            if isinstance(output, dict) and output.get("type") == "error":
                self._fail(parse_job_error(output.get("error")))
            yield output
            if isinstance(output, dict) and output.get("type") == "done":
                self._state, self.finished = JobStatus.COMPLETED, True
                return

    def _fail(self, detail: ErrorDetail) -> None:
        self._state, self._failure, self.finished = JobStatus.FAILED, detail, True
        if detail.code == ErrorCode.TIMED_OUT:
            self._state = JobStatus.TIMED_OUT
            raise JobTimedOut(self.id, detail.message, self.endpoint.endpoint_id)
        raise JobFailed(self.id, detail, self.endpoint.endpoint_id)

    def _broken(self, error: BaseException, expected: int) -> None:
        if self._state == JobStatus.CANCELLED:
            raise JobCancelled(self.id, "cancelled", self.endpoint.endpoint_id)
        if isinstance(error, TransportError):
            self.finished = True
            raise error
        if isinstance(error, ValueError):
            self.finished = True
            raise ProtocolError(f"job {self.id}: an event is not JSON: {error}")
        self._fail(ErrorDetail(code=ErrorCode.WORKER_DIED, message=(
            f"the connection to the worker broke after {expected} chunk(s) ({reason(error)}): the worker died, "
            "or the network between")))

    def _end_without_done(self, expected: int) -> None:
        self.finished = True
        if self._state == JobStatus.CANCELLED:
            raise JobCancelled(self.id, "cancelled", self.endpoint.endpoint_id)
        self._state = JobStatus.FAILED
        raise StreamIncomplete(self.id, f"the stream ended after {expected} chunk(s) without a done chunk")

    async def cancel(self) -> dict[str, Any]:
        """Close the job's connection, which stops it on the worker; harmless on a finished job."""
        if not self.finished:
            self._state = JobStatus.CANCELLED
        self.finished = True
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._arrived.put_nowait(_END)
        return {"id": self.id, "status": self._state}

    async def status(self) -> dict[str, Any]:
        """What this client has seen of the job (a load-balancing endpoint keeps no job records to ask): its
        state, and once completed the chunks as ``output``, in the shape of a queue endpoint's ``/status``."""
        reply: dict[str, Any] = {"id": self.id, "status": self._state}
        if self._state == JobStatus.COMPLETED:
            reply["output"] = list(self._outputs)
        elif self._failure is not None:
            reply["error"] = self._failure.model_dump_json(exclude_none=True)
        self.last_status = reply
        return reply
