"""The endpoint client: submit jobs to a RunPod serverless endpoint and stream their chunks, fast.

The runpod SDK's own client sleeps a full second between stream polls and hangs on a CANCELLED job, both fatal
for a voice turn, hence this one: short adaptive polling, chunks yielded in ``seq`` order exactly once, and
typed errors for every way a job can end. An endpoint given as an ``http(s)://`` URL is a load-balancing endpoint,
whose jobs stream back on their own request (:mod:`voicepod.direct`), under the same API.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import httpx
from pydantic import ValidationError

from .cleanup import run_to_end
from .errors import (
    DeadlineExceeded,
    JobCancelled,
    JobFailed,
    JobTimedOut,
    ProtocolError,
    StreamIncomplete,
    VoicepodError,
)
from .protocol import TERMINAL, Chunk, ErrorChunk, parse_chunk, parse_job_error
from .transport import Transport

DEFAULT_BASE_URL = "https://api.runpod.ai/v2"
# How long leaving a submit block waits for its job's cancel to get through (retries included): an endpoint that
# does not answer must not hold up a barge-in or a hang-up for the transport's whole retry budget.
CANCEL_TIMEOUT_S = 10.0

log = logging.getLogger("voicepod.endpoint")


def is_direct(endpoint: str) -> bool:
    """Whether ``endpoint`` names a load-balancing endpoint (an ``http(s)://`` URL) rather than a queue one (an id)."""
    return endpoint.startswith(("http://", "https://"))


class Endpoint:
    """One RunPod serverless endpoint: a queue endpoint, or a load-balancing one (the direct route).

    ``endpoint_id``: the endpoint's id (with ``serve-local``, the endpoint's NAME), or a load-balancing endpoint's
    URL, ``https://ENDPOINT_ID.api.runpod.ai`` (with ``serve-local --direct``, the URL it prints), whose jobs
    stream back on the request that starts them (:mod:`voicepod.direct`; ``base_url`` and the poll settings do not
    apply, and ``timeout`` is also the longest wait for a job's next chunk).
    ``api_key``: defaults to ``RUNPOD_API_KEY``. ``base_url``: defaults to ``RUNPOD_ENDPOINT_BASE_URL``, else
    RunPod's API. ``timeout``: seconds per HTTP request. ``max_retries``: retries on connection errors, 429 and
    5xx. ``poll_min``/``poll_max``: the stream poll interval, which starts at ``poll_min`` after a poll that
    brought nothing and grows to ``poll_max``.
    """

    def __init__(
        self,
        endpoint_id: str,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 5,
        poll_min: float = 0.02,
        poll_max: float = 0.25,
        http_client: httpx.AsyncClient | None = None,
    ):
        base = base_url or os.environ.get("RUNPOD_ENDPOINT_BASE_URL") or DEFAULT_BASE_URL
        self.direct = is_direct(endpoint_id)
        if self.direct:
            endpoint_id = endpoint_id.rstrip("/")
        self.endpoint_id = endpoint_id
        self.poll_min = poll_min
        self.poll_max = poll_max
        self._request_timeout = timeout
        # Kept (never shown: no repr or error carries it) for clients of the OpenAI route, which use their own HTTP.
        self._api_key = api_key if api_key is not None else os.environ.get("RUNPOD_API_KEY")
        self._transport = Transport(
            endpoint_id if self.direct else f"{base.rstrip('/')}/{endpoint_id}",
            self._api_key,
            timeout=timeout,
            max_retries=max_retries,
            client=http_client,
        )

    def __repr__(self) -> str:
        if self.direct:
            return f"Endpoint({self.endpoint_id!r})"
        return f"Endpoint({self.endpoint_id!r}, base_url={self._transport.base_url!r})"

    @property
    def openai_base_url(self) -> str:
        """The endpoint's OpenAI-compatible route, the ``base_url`` an OpenAI client takes
        (``https://api.runpod.ai/v2/ID/openai/v1``; with serve-local, ``http://127.0.0.1:PORT/v2/NAME/openai/v1``;
        a load-balancing endpoint's ``URL/openai/v1``)."""
        return f"{self._transport.base_url}/openai/v1"

    async def __aenter__(self) -> Endpoint:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def run(self, input: dict[str, Any], *, policy: dict[str, Any] | None = None) -> Job:
        """Submit a job (``POST /run``) and return it at once; ``policy`` is RunPod's (e.g. executionTimeout). On a
        load-balancing endpoint, start it (``POST /stream``) and return it once the worker answers."""
        if self.direct:
            from .direct import start_job

            return await start_job(self, input, policy)
        body: dict[str, Any] = {"input": input}
        if policy:
            body["policy"] = policy
        reply = await self._transport.request("POST", "run", json=body)
        return Job(self, reply["id"])

    def submit(self, input: dict[str, Any], *, policy: dict[str, Any] | None = None) -> Submission:
        """Submit a job for the length of an ``async with`` block, which owns it::

            async with endpoint.submit({"text": "Hello."}) as job:
                async for chunk in job.chunks():
                    ...

        Leaving the block by an error or a cancel while the job is unfinished cancels it on the endpoint, and
        waits for that cancel even if the task is cancelled again meanwhile (:func:`voicepod.cleanup.run_to_end`).
        A cancel that arrives while ``/run`` is in flight cancels the job once the endpoint has accepted it. Either
        way no job runs on, billed, for nobody.
        """
        return Submission(self, input, policy)

    async def run_sync(self, input: dict[str, Any], *, timeout: float = 300.0) -> dict[str, Any]:
        """Run a job to its end (``POST /runsync``, then ``/status`` if it outlasts RunPod's wait) and return
        the final status object, whose ``output`` is the list of all chunks for a streaming worker.

        ``timeout``: seconds to wait in all; past it the job is cancelled and :class:`DeadlineExceeded` raised.
        """
        if self.direct:
            return await self._run_sync_direct(input, timeout)
        deadline = time.monotonic() + timeout
        # RunPod holds /runsync open for up to `wait` ms: ask for less than our own deadline, so the reply (with
        # the job's id, needed to cancel it) always comes back before we give up on it.
        wait_s = max(0.1, min(0.8 * timeout, 90.0))
        reply = await self._transport.request(
            "POST", "runsync", json={"input": input}, params={"wait": int(wait_s * 1000)},
            timeout=wait_s + self._request_timeout,
        )
        job = Job(self, reply["id"])
        while reply.get("status") not in TERMINAL:
            if time.monotonic() > deadline:
                await job.cancel()
                raise DeadlineExceeded(job.id, f"not finished after {timeout:g} s; cancelled", self.endpoint_id)
            await asyncio.sleep(self.poll_max)
            reply = await job.status()
        job._raise_for_status(reply)
        return reply

    async def _run_sync_direct(self, input: dict[str, Any], timeout: float) -> dict[str, Any]:
        job = await self.run(input)
        try:
            async with asyncio.timeout(timeout):
                async for _ in job.stream():
                    pass
        except TimeoutError:
            await job.cancel()
            raise DeadlineExceeded(job.id, f"not finished after {timeout:g} s; cancelled", self.endpoint_id) from None
        return await job.status()

    async def health(self) -> dict[str, Any]:
        """Workers and job counts (``GET /health``). A load-balancing endpoint answers ``GET /ping`` instead:
        ``{"status": "initializing"}`` while a worker loads (204), else the worker's ``status``, ``busy`` and
        ``slots``."""
        if self.direct:
            return await self._transport.request("GET", "ping") or {"status": "initializing"}
        return await self._transport.request("GET", "health")

    def job(self, job_id: str) -> Job:
        """A handle on an existing job, e.g. one submitted by another process (queue endpoints only: a
        load-balancing endpoint's job lives on the request that started it)."""
        if self.direct:
            raise VoicepodError(f"{self.endpoint_id} is a load-balancing endpoint: its jobs cannot be looked up by "
                                "id, only read on the request that started them")
        return Job(self, job_id)


_late_cancels: set[asyncio.Task[Any]] = set()  # held so that the event loop does not drop them unfinished


def _cancel_when_accepted(run: asyncio.Future[Job]) -> None:
    if not run.cancelled() and run.exception() is None:
        task = asyncio.ensure_future(run.result().cancel())
        _late_cancels.add(task)
        task.add_done_callback(_late_cancels.discard)
        task.add_done_callback(_log_failed_cancel)


def _log_failed_cancel(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("a job submitted while its block was being left could not be cancelled: %s", task.exception())


class Submission:
    """The ``async with`` of :meth:`Endpoint.submit`: its job, cancelled on the endpoint when the block is left
    by an exception (a cancel included) before the job finished."""

    def __init__(self, endpoint: Endpoint, input: dict[str, Any], policy: dict[str, Any] | None):
        self._endpoint, self._input, self._policy = endpoint, input, policy
        self.job: Job | None = None

    async def __aenter__(self) -> Job:
        run = asyncio.ensure_future(self._endpoint.run(self._input, policy=self._policy))
        try:
            self.job = await asyncio.shield(run)
        except asyncio.CancelledError:
            # Cancelled while /run was in flight: the endpoint may accept the job after all; cancel it then, or it
            # would run (and bill) to the end for nobody.
            run.add_done_callback(_cancel_when_accepted)
            raise
        return self.job

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        job = self.job
        if exc_type is None or job is None or job.finished:
            return
        try:
            await run_to_end(asyncio.wait_for(job.cancel(), CANCEL_TIMEOUT_S))
        except (VoicepodError, TimeoutError) as error:  # the endpoint is gone or refuses: the exit's cause matters more
            log.warning("job %s could not be cancelled on leaving its block: %r", job.id, error)


class Job:
    """A submitted job: stream its chunks, ask its status, cancel it."""

    def __init__(self, endpoint: Endpoint, job_id: str):
        self.endpoint = endpoint
        self.id = job_id
        self.last_status: dict[str, Any] | None = None
        self.finished = False  # a terminal status was seen (or the job was cancelled by this client)

    def __repr__(self) -> str:
        return f"Job({self.id!r}, endpoint={self.endpoint.endpoint_id!r})"

    async def status(self) -> dict[str, Any]:
        self.last_status = await self.endpoint._transport.request("GET", f"status/{self.id}")
        return self.last_status

    async def cancel(self) -> dict[str, Any]:
        # Cancelling twice is harmless, so a lost reply may be retried.
        reply = await self.endpoint._transport.request("POST", f"cancel/{self.id}", idempotent=True)
        self.finished = True
        return reply

    def _raise_for_status(self, reply: dict[str, Any]) -> None:
        status = reply.get("status")
        if status == "FAILED":
            detail = parse_job_error(reply.get("error", "job failed without an error message"))
            raise JobFailed(self.id, detail, self.endpoint.endpoint_id)
        if status == "CANCELLED":
            raise JobCancelled(self.id, "cancelled", self.endpoint.endpoint_id)
        if status == "TIMED_OUT":
            raise JobTimedOut(self.id, "execution timed out", self.endpoint.endpoint_id)

    async def stream(self) -> AsyncIterator[Any]:
        """Yield the job's streamed outputs as they arrive, in ``seq`` order, each exactly once.

        Raises :class:`JobFailed`, :class:`JobCancelled` or :class:`JobTimedOut` when the job ends that way (after
        yielding every chunk that came before). A chunk lost in transit (RunPod's stream cursor advanced but the
        reply never arrived) is recovered from the job's aggregate output when it completes.
        """
        transport = self.endpoint._transport
        expected = 0
        pending: dict[int, Any] = {}
        last_type: Any = None
        pause = self.endpoint.poll_min
        while True:
            reply = await transport.request("GET", f"stream/{self.id}")
            items = reply.get("stream") or []
            for item in items:
                output = item.get("output") if isinstance(item, dict) else item
                seq = output.get("seq") if isinstance(output, dict) else None
                if not isinstance(seq, int):
                    yield output  # not a voicepod chunk: pass it through in arrival order
                    continue
                if seq >= expected:
                    pending.setdefault(seq, output)
            while expected in pending:
                output = pending.pop(expected)
                last_type = output.get("type")
                yield output
                expected += 1
            status = reply.get("status")
            if status in TERMINAL:
                self.finished = True
                # A lost reply may have carried the last chunks, leaving nothing pending: only a final
                # "done" proves the stream whole; otherwise the aggregate output says what is missing.
                if status == "COMPLETED" and (pending or last_type != "done"):
                    for output in await self._recover(expected):
                        yield output
                        expected += 1
                elif status != "COMPLETED":
                    if "error" not in reply:
                        reply = await self.status()
                    self._raise_for_status(reply)
                return
            if items:
                pause = self.endpoint.poll_min
            else:
                await asyncio.sleep(pause)
                pause = min(pause * 1.5, self.endpoint.poll_max)

    async def _recover(self, expected: int) -> list[Any]:
        reply = await self.status()
        outputs = reply.get("output")
        if not isinstance(outputs, list):
            raise StreamIncomplete(self.id, f"chunks from seq {expected} missing and no aggregate output")
        rest = sorted(
            (o for o in outputs if isinstance(o, dict) and isinstance(o.get("seq"), int) and o["seq"] >= expected),
            key=lambda o: o["seq"],
        )
        if [o["seq"] for o in rest] != list(range(expected, expected + len(rest))):
            raise StreamIncomplete(self.id, f"chunks from seq {expected} missing from the aggregate output too")
        return rest

    async def chunks(self) -> AsyncIterator[Chunk]:
        """Like :meth:`stream`, each output parsed into its typed protocol chunk (an unknown ``type`` from a
        newer worker comes as :class:`~voicepod.protocol.UnknownChunk`; a malformed known one raises
        :class:`ProtocolError`)."""
        async for output in self.stream():
            try:
                chunk = parse_chunk(output)
            except ValidationError as exc:
                raise ProtocolError(f"job {self.id}: a chunk does not fit the protocol: {exc}") from None
            if isinstance(chunk, ErrorChunk):  # only if a worker bypassed the SDK's error handling
                raise JobFailed(self.id, chunk.error, self.endpoint.endpoint_id)
            yield chunk
