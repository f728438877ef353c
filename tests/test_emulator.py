"""The local endpoint emulator and the endpoint client, together, over real SDK worker processes."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from voicepod import AuthError, JobCancelled, JobFailed, JobTimedOut, NotFoundError
from voicepod.local import LocalServer

from .conftest import TEST_HANDLERS
from .sse import parse_events

KEY = "test-key-5f1d"
COUNTING = TEST_HANDLERS / "counting.py"


@pytest.fixture(scope="module")
def server():
    # "pair" has two workers (concurrency), "solo" one (cancel and crash tests see the same worker again).
    with LocalServer(
        {"pair": COUNTING, "solo": COUNTING},
        workers={"pair": 2},
        api_key=KEY,
        ready_timeout_s=120,
        extra_args=["--execution-timeout", "30"],
    ) as srv:
        yield srv


async def collect(job):
    chunks, arrivals = [], []
    async for chunk in job.stream():
        chunks.append(chunk)
        arrivals.append(time.monotonic())
    return chunks, arrivals


async def test_chunks_arrive_while_the_handler_still_runs(server):
    async with server.endpoint("solo") as ep:
        job = await ep.run({"count": 6, "delay": 0.4})
        seen = []
        async for chunk in job.stream():
            if not seen:
                first_status = (await job.status())["status"]
            seen.append((chunk, time.monotonic()))
        assert first_status == "IN_PROGRESS"
        assert [c["seq"] for c, _ in seen] == list(range(6))
        assert seen[-1][1] - seen[0][1] > 1.5  # delivered one by one, not all at the end


async def test_status_and_run_sync_return_the_aggregate(server):
    async with server.endpoint("solo") as ep:
        job = await ep.run({"count": 4, "delay": 0.01})
        streamed, _ = await collect(job)
        status = await job.status()
        assert status["status"] == "COMPLETED"
        assert status["output"] == streamed
        assert status["executionTime"] >= 0 and status["delayTime"] >= 0
        result = await ep.run_sync({"count": 3, "delay": 0.01})
        assert [c["value"] for c in result["output"]] == [0, 1, 2]


async def test_cancel_stops_a_running_job_and_frees_the_worker(server):
    async with server.endpoint("solo") as ep:
        job = await ep.run({"count": 200, "delay": 0.1})
        got = []
        with pytest.raises(JobCancelled):
            async for chunk in job.stream():
                got.append(chunk)
                if len(got) == 2:
                    assert (await job.cancel())["status"] == "CANCELLED"
        assert (await job.status())["status"] == "CANCELLED"
        # The one worker is free again long before the 20 s the cancelled job would have taken.
        started = time.monotonic()
        result = await ep.run_sync({"count": 2, "delay": 0.01})
        assert result["status"] == "COMPLETED"
        assert time.monotonic() - started < 8


async def test_api_key_is_enforced(server):
    async with server.endpoint("solo", api_key="wrong", max_retries=0) as ep:
        with pytest.raises(AuthError):
            await ep.run({"count": 1})
    async with server.endpoint("solo", api_key="", max_retries=0) as ep:
        with pytest.raises(AuthError):
            await ep.health()
    response = httpx.get(f"{server.base_url}/solo/health")
    assert response.status_code == 401
    assert KEY not in server.logs()


async def test_unknown_endpoint_and_job_are_not_found(server):
    async with server.endpoint("nope", max_retries=0) as ep:
        with pytest.raises(NotFoundError):
            await ep.run({"count": 1})
    async with server.endpoint("solo", max_retries=0) as ep:
        with pytest.raises(NotFoundError):
            await ep.job("no-such-job").status()


async def test_structured_error_chunk_fails_the_job_with_its_code(server):
    async with server.endpoint("solo") as ep:
        job = await ep.run({"count": 5, "delay": 0.01, "error_at": 2})
        with pytest.raises(JobFailed) as failure:
            await collect(job)
        assert failure.value.code == "test_error"
        assert failure.value.message == "error at 2"
        assert (await job.status())["status"] == "FAILED"


async def test_handler_exception_fails_the_job_and_the_worker_keeps_serving(server):
    async with server.endpoint("solo") as ep:
        job = await ep.run({"count": 5, "delay": 0.01, "fail_at": 1})
        with pytest.raises(JobFailed) as failure:
            await collect(job)
        assert failure.value.code == "handler_exception"
        assert "boom at 1" in failure.value.message
        assert (await ep.run_sync({"count": 2, "delay": 0}))["status"] == "COMPLETED"


async def test_killed_worker_fails_its_job_and_comes_back(server):
    async with server.endpoint("solo") as ep:
        job = await ep.run({"count": 5, "delay": 0.05, "exit_at": 2})
        with pytest.raises(JobFailed) as failure:
            chunks, _ = await collect(job)
        assert failure.value.code == "worker_died"
        old_pid = (await job.status())["status"] == "FAILED"
        assert old_pid
        result = await ep.run_sync({"count": 1, "delay": 0})
        assert result["status"] == "COMPLETED"
        health = await ep.health()
        assert health["workers"]["ready"] == 1


async def test_two_workers_run_two_jobs_at_once(server):
    async with server.endpoint("pair") as ep:
        jobs = [await ep.run({"count": 4, "delay": 0.5}) for _ in range(2)]
        started = time.monotonic()
        results = await asyncio.gather(*(collect(job) for job in jobs))
        elapsed = time.monotonic() - started
        pids = {chunks[0]["pid"] for chunks, _ in results}
        assert len(pids) == 2
        assert elapsed < 3.5  # one after the other would take over 4 s
        assert [c["seq"] for c in results[0][0]] == [0, 1, 2, 3]


async def test_execution_timeout_policy_times_the_job_out(server):
    async with server.endpoint("solo") as ep:
        job = await ep.run({"hang": True}, policy={"executionTimeout": 1500})
        with pytest.raises(JobTimedOut):
            await collect(job)
        assert (await job.status())["status"] == "TIMED_OUT"
        assert (await ep.run_sync({"count": 1, "delay": 0}))["status"] == "COMPLETED"


def test_one_worker_with_concurrency_takes_jobs_in_batches():
    async def run_three(server):
        async with server.endpoint("multi") as ep:
            jobs = [await ep.run({"count": 4, "delay": 0.5}) for _ in range(3)]
            started = time.monotonic()
            results = await asyncio.wait_for(asyncio.gather(*(collect(job) for job in jobs)), 60)
            return results, time.monotonic() - started

    with LocalServer({"multi": COUNTING}, env={"COUNTING_CONCURRENCY": "3"}, ready_timeout_s=120) as server:
        results, elapsed = asyncio.run(run_three(server))
    assert len({chunks[0]["pid"] for chunks, _ in results}) == 1  # one worker process...
    assert elapsed < 4.5  # ...ran the three 2 s jobs side by side, not one after another (6 s)
    assert all([c["seq"] for c in chunks] == [0, 1, 2, 3] for chunks, _ in results)


async def test_run_sync_gives_up_after_its_timeout_and_cancels_the_job(server):
    async with server.endpoint("solo") as ep:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await ep.run_sync({"count": 100, "delay": 0.2}, timeout=1.5)
        assert time.monotonic() - started < 5
        # The worker was freed by the cancel: a short job runs at once (not after the 18 s the first had left).
        assert (await ep.run_sync({"count": 1, "delay": 0}, timeout=5))["status"] == "COMPLETED"


# --- RunPod's OpenAI-compatible route: how its answers and failures reach an HTTP caller ----------------------


async def openai_post(server: LocalServer, body: dict, key: str = KEY) -> tuple[int, str, str]:
    """POST ``body`` to the "solo" endpoint's chat completions route; return status, content type and body text."""
    url = f"{server.base_url}/solo/openai/v1/chat/completions"
    async with httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {key}"}) as http:
        async with http.stream("POST", url, json=body) as response:
            text = "".join([part async for part in response.aiter_text()])
            return response.status_code, response.headers["content-type"], text


async def test_openai_route_streams_events_then_a_mid_stream_failure(server):
    status, kind, text = await openai_post(server, {"stream": True, "sse": True, "count": 4, "error_at": 2})
    assert (status, kind.split(";")[0]) == (200, "text/event-stream")
    events = parse_events(text)
    assert [e["id"] for e in events[:2]] == ["0", "1"]
    assert [json.loads(e["data"])["value"] for e in events[:2]] == [0, 1]
    assert json.loads(events[2]["data"])["error"]["code"] == "test_error"  # what OpenAI SDKs raise on
    assert len(events) == 3


async def test_openai_route_refused_before_any_output_is_an_http_error(server):
    status, kind, text = await openai_post(server, {"stream": True, "sse": True, "error_at": 0})
    assert (status, kind.split(";")[0]) == (500, "application/json")
    error = json.loads(text)["error"]
    assert (error["code"], error["type"], error["message"]) == ("test_error", "server_error", "error at 0")
    status, _, text = await openai_post(server, {"count": 1, "delay": 0})  # not streamed: the one output object
    assert status == 200 and json.loads(text)["value"] == 0


async def test_openai_route_needs_the_key(server):
    status, _, _ = await openai_post(server, {"count": 1}, key="wrong")
    assert status == 401


@pytest.mark.parametrize("stream", [True, False])
async def test_leaving_an_openai_request_before_any_output_cancels_its_job(server, stream):
    with pytest.raises(TimeoutError):  # the job hangs: no output, no answer, until the caller gives up
        await asyncio.wait_for(openai_post(server, {"stream": stream, "hang": True}), 1.5)
    async with server.endpoint("solo") as ep:
        deadline = time.monotonic() + 5
        while (await ep.health())["jobs"]["inProgress"]:
            assert time.monotonic() < deadline, "the job still runs after its caller left"
            await asyncio.sleep(0.2)
        # Its worker is free again: a short job runs at once, not after the hanging one's 30 s timeout.
        assert (await ep.run_sync({"count": 1, "delay": 0}, timeout=10))["status"] == "COMPLETED"


async def test_openai_route_refuses_a_body_that_is_not_json(server):
    url = f"{server.base_url}/solo/openai/v1/chat/completions"
    async with httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {KEY}"}) as http:
        response = await http.post(url, content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["type"]) == ("invalid_json", "invalid_request_error")
