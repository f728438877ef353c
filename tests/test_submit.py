"""``async with endpoint.submit(...) as job``: the block owns its job, which is cancelled on the endpoint when the
block is left by an error or a cancel (against an API double: httpx's MockTransport)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from voicepod import Endpoint, JobFailed


class Api:
    """A queue endpoint double: ``/run`` (held until ``accept`` is set), ``/stream`` (one chunk, then the job
    runs on; or the chunk and ``done`` with the job COMPLETED when ``complete``), ``/cancel``."""

    def __init__(self, *, complete: bool = False):
        self.accept = asyncio.Event()
        self.accept.set()
        self.run_started = asyncio.Event()
        self.complete = complete
        self.cancelled: list[str] = []
        self.streamed = False

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/run"):
            self.run_started.set()
            await self.accept.wait()
            return httpx.Response(200, json={"id": "j1", "status": "IN_QUEUE"})
        if "/cancel/" in path:
            self.cancelled.append(path.rsplit("/", 1)[1])
            return httpx.Response(200, json={"id": "j1", "status": "CANCELLED"})
        chunk = {"seq": 0, "type": "segment", "id": 0, "start": 0.0, "end": 1.0, "text": "hi"}
        if self.complete:
            done = {"seq": 1, "type": "done", "kind": "transcript", "text": "hi", "language": "en",
                    "language_probability": 1.0, "duration": 1.0, "metrics": {}}
            return httpx.Response(200, json={"status": "COMPLETED", "stream": [{"output": chunk},
                                                                               {"output": done}]})
        # As RunPod's /stream: each chunk once; then nothing new while the job runs on.
        stream, self.streamed = ([] if self.streamed else [{"output": chunk}]), True
        return httpx.Response(200, json={"status": "IN_PROGRESS", "stream": stream})


def endpoint(api: Api) -> Endpoint:
    client = httpx.AsyncClient(transport=httpx.MockTransport(api))
    return Endpoint("ep", api_key="k", base_url="http://api.test/v2", http_client=client, max_retries=0)


async def test_an_error_in_the_block_cancels_the_unfinished_job():
    api = Api()
    with pytest.raises(RuntimeError, match="the caller's own"):
        async with endpoint(api).submit({}) as job:
            async for _ in job.chunks():
                raise RuntimeError("the caller's own error")
    assert api.cancelled == ["j1"] and job.finished


async def test_a_cancelled_task_cancels_its_job_before_it_ends():
    api = Api()
    read = asyncio.Event()

    async def turn() -> None:
        async with endpoint(api).submit({}) as job:
            async for _ in job.chunks():
                read.set()

    task = asyncio.create_task(turn())
    await read.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert api.cancelled == ["j1"]  # already sent when the task is over: not left to a callback


async def test_a_cancel_while_run_is_in_flight_cancels_the_job_once_accepted():
    api = Api()
    api.accept.clear()

    async def turn() -> None:
        async with endpoint(api).submit({}):
            pass

    task = asyncio.create_task(turn())
    await api.run_started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert api.cancelled == []
    api.accept.set()  # the endpoint accepts the job after all
    for _ in range(100):
        if api.cancelled:
            break
        await asyncio.sleep(0.01)
    assert api.cancelled == ["j1"]


async def test_a_finished_job_or_a_normal_exit_cancels_nothing():
    api = Api(complete=True)
    async with endpoint(api).submit({}) as job:
        chunks = [chunk async for chunk in job.chunks()]
    assert [chunk.type for chunk in chunks] == ["segment", "done"] and job.finished
    with pytest.raises(KeyError):
        async with endpoint(api).submit({}) as job:
            async for _ in job.chunks():
                pass
            raise KeyError("after the job finished")
    assert api.cancelled == []


async def test_a_cancel_that_fails_does_not_hide_the_error_that_left_the_block():
    def refuse_cancel(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/run"):
            return httpx.Response(200, json={"id": "j9", "status": "IN_QUEUE"})
        if "/cancel/" in request.url.path:
            return httpx.Response(503, json={"error": "down"})
        return httpx.Response(200, json={"status": "FAILED", "error": '{"code": "internal_error", "message": "x"}'})

    client = httpx.AsyncClient(transport=httpx.MockTransport(refuse_cancel))
    ep = Endpoint("ep", api_key="k", base_url="http://api.test/v2", http_client=client, max_retries=0)
    with pytest.raises(ValueError, match="mine"):
        async with ep.submit({}):
            raise ValueError("mine")
    with pytest.raises(JobFailed):  # a job that failed is finished: nothing to cancel, its error stands
        async with ep.submit({}) as job:
            async for _ in job.chunks():
                pass
