"""Faults between the client and the emulator: dropped replies, 503/429 spells, a stuck worker, a killed one.

Dropped replies and refusals are injected by an httpx transport wrapped around the real one, so the requests
still reach (or, for refusals, never reach) the real emulator and its real SDK worker loop.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from voicepod import JobFailed, JobTimedOut, RateLimitError, ServerError
from voicepod.local import LocalServer

from .conftest import REPO, TEST_HANDLERS

COUNTING = TEST_HANDLERS / "counting.py"
STALLING = TEST_HANDLERS / "stalling.py"


class Faulty(httpx.AsyncBaseTransport):
    """Forwards to a real transport, but refuses the first ``refuse`` requests with ``status`` (they never
    reach the server) and, for each ``/stream/`` reply that ``drop(body)`` picks, lets the server answer and
    then raises ReadError, as if the connection died mid-response."""

    def __init__(self, *, refuse: int = 0, status: int = 503, retry_after: str | None = None, drop=None):
        self.inner = httpx.AsyncHTTPTransport()
        self.refuse, self.status, self.retry_after = refuse, status, retry_after
        self.drop = drop or (lambda body, n: False)
        self.refused = self.dropped = self.polls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.refused < self.refuse:
            self.refused += 1
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return httpx.Response(self.status, json={"error": "busy"}, headers=headers)
        response = await self.inner.handle_async_request(request)
        if "/stream/" not in request.url.path:
            return response
        body = await response.aread()
        await response.aclose()
        self.polls += 1
        if self.drop(body, self.polls):
            self.dropped += 1
            raise httpx.ReadError("connection reset mid-response (injected)", request=request)
        return httpx.Response(response.status_code, headers=response.headers, content=body)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture(scope="module")
def server():
    with LocalServer(
        {"count": COUNTING, "stall": STALLING},
        ready_timeout_s=120,
        extra_args=["--execution-timeout", "60"],
    ) as srv:
        yield srv


def client(server: LocalServer, name: str, transport: Faulty, **kwargs):
    return server.endpoint(name, http_client=httpx.AsyncClient(transport=transport, timeout=30), **kwargs)


async def collect(job) -> list[dict]:
    return [chunk async for chunk in job.stream()]


@pytest.mark.parametrize(
    "pattern, drop",
    [
        ("every other poll", lambda body, n: n % 2 == 0),
        ("every poll that carries chunks, once in three", lambda body, n: b'"seq"' in body and n % 3 == 1),
        ("the poll with the last chunk", lambda body, n: b'"value": 11' in body),
    ],
)
async def test_dropped_poll_replies_lose_and_repeat_nothing(server: LocalServer, pattern: str, drop) -> None:
    faults = Faulty(drop=drop)
    async with client(server, "count", faults) as ep:
        job = await ep.run({"count": 12, "delay": 0.03})
        chunks = await collect(job)
    assert faults.dropped >= 1, pattern
    assert [c["seq"] for c in chunks] == list(range(12)), pattern
    assert [c["value"] for c in chunks] == list(range(12))


@pytest.mark.parametrize("status, retry_after", [(503, None), (429, "0.05")])
async def test_a_spell_of_refusals_is_waited_out(server: LocalServer, status: int, retry_after: str | None) -> None:
    faults = Faulty(refuse=4, status=status, retry_after=retry_after)
    async with client(server, "count", faults) as ep:
        job = await ep.run({"count": 3, "delay": 0})
        chunks = await collect(job)
    assert faults.refused == 4
    assert [c["seq"] for c in chunks] == [0, 1, 2]


async def test_a_502_is_retried_on_polls_but_never_resends_a_run(server: LocalServer) -> None:
    # A 502 may come after the job was accepted: resending the /run could start it twice.
    faults = Faulty(refuse=1, status=502)
    async with client(server, "count", faults) as ep:
        with pytest.raises(ServerError):
            await ep.run({"count": 1})
    assert faults.refused == 1
    async with server.endpoint("count") as clean:
        job = await clean.run({"count": 3, "delay": 0})
    faults = Faulty(refuse=4, status=502)
    async with client(server, "count", faults) as ep:
        chunks = await collect(ep.job(job.id))
    assert faults.refused == 4
    assert [c["seq"] for c in chunks] == [0, 1, 2]


@pytest.mark.parametrize("status, error", [(503, ServerError), (429, RateLimitError)])
async def test_refusals_past_the_retry_budget_raise_not_hang(server: LocalServer, status: int, error) -> None:
    faults = Faulty(refuse=100, status=status, retry_after="0.01")
    async with client(server, "count", faults, max_retries=3) as ep:
        started = time.monotonic()
        with pytest.raises(error):
            await ep.run({"count": 1})
    assert faults.refused == 4  # the first try and three retries
    assert time.monotonic() - started < 5


async def test_a_stuck_worker_is_timed_out_by_the_policy_and_then_serves_again(server: LocalServer) -> None:
    async with server.endpoint("stall") as ep:
        job = await ep.run({"before": 2, "stall_s": 6}, policy={"executionTimeout": 1500})
        started = time.monotonic()
        seen = []
        with pytest.raises(JobTimedOut):
            async for chunk in job.stream():
                seen.append(chunk["seq"])
        assert time.monotonic() - started < 5  # the timeout, not the end of the stall, ended it
        assert seen == [0, 1]
        assert (await job.status())["status"] == "TIMED_OUT"
        # Once the worker's loop runs again it takes the next job; the stale one's late output is dropped.
        result = await ep.run_sync({"before": 1, "stall_s": 0}, timeout=60)
        assert result["status"] == "COMPLETED"
        assert [c["seq"] for c in result["output"]] == [0, 1]


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.mark.slow
async def test_killing_a_real_tts_worker_mid_stream_fails_the_job_and_the_endpoint_recovers() -> None:
    with LocalServer({"tts": REPO / "workers/tts/handler.py"}, ready_timeout_s=300) as srv:
        assert srv.process is not None
        async with srv.endpoint("tts") as ep:
            text = " ".join(f"This is sentence number {i}, spoken slowly." for i in range(40))
            job = await ep.run({"text": text, "chunk_ms": 100})
            got = []
            with pytest.raises(JobFailed) as failure:
                async for chunk in job.stream():
                    got.append(chunk)
                    if len(got) == 2:
                        (worker,) = _children(srv.process.pid)
                        os.kill(worker, signal.SIGKILL)
            assert failure.value.code == "worker_died"
            assert [c["seq"] for c in got] == list(range(len(got)))
            result = await ep.run_sync({"text": "Back again."}, timeout=120)
            assert result["status"] == "COMPLETED"
            assert result["output"][-1]["type"] == "done"
            assert base64.b64decode(result["output"][0]["audio"])
            assert (await ep.health())["workers"]["ready"] == 1
            assert _children(srv.process.pid) != [worker]


async def test_dropped_replies_and_refusals_together_across_concurrent_jobs(server: LocalServer) -> None:
    faults = Faulty(refuse=3, drop=lambda body, n: n % 4 == 0)
    async with client(server, "count", faults) as ep:
        jobs = [await ep.run({"count": 8, "delay": 0.02}) for _ in range(5)]
        results = await asyncio.gather(*(collect(job) for job in jobs))
    assert faults.dropped >= 1 and faults.refused == 3
    for chunks in results:
        assert [c["value"] for c in chunks] == list(range(8))


def test_the_emulator_busy_for_a_while_is_waited_out():
    # serve-local --busy-for: the emulator itself answers 429 and 503 in turn once its worker is ready.
    seen: list[int] = []

    async def record(response: httpx.Response) -> None:
        seen.append(response.status_code)

    async def turn(server: LocalServer) -> list[dict]:
        http = httpx.AsyncClient(timeout=30, event_hooks={"response": [record]})
        async with server.endpoint("count", http_client=http, max_retries=20) as ep:
            job = await ep.run({"count": 3, "delay": 0})
            return await asyncio.wait_for(collect(job), 60)

    with LocalServer({"count": COUNTING}, ready_timeout_s=120, extra_args=["--busy-for", "1.5"]) as server:
        chunks = asyncio.run(turn(server))
    assert {429, 503} <= set(seen)
    assert [c["seq"] for c in chunks] == [0, 1, 2]
