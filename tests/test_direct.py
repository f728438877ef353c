"""Load-balancing mode end to end: the real workers (embedded models) serving their own HTTP server
(``serve-local --direct``, ``VOICEPOD_MODE=direct``), called by the voicepod client, raw HTTP, the OpenAI SDK and
a WebSocket; and the same chain mixed with a queue endpoint."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import websockets
from voicepod import AuthError, Endpoint, JobFailed, JobTimedOut
from voicepod.agent import Audio, Done, Transcript, VoiceAgent
from voicepod.local import LocalServer
from voicepod.local.process import free_port
from voicepod.protocol import AudioChunk, CompletionDone, SegmentChunk, SpeechDone, TranscriptDone

from tests.speech import espeak_wav, wer
from tests.sse import parse_events
from tests.test_llm import LONG

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs the espeak-ng binary"),
]

REPO = Path(__file__).resolve().parents[1]
HANDLERS = {name: REPO / "workers" / name / "handler.py" for name in ("stt", "llm", "tts")}
KEY = "direct-key-7c2e"
SLOTS = 2
CAP = 400
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def direct() -> Iterator[LocalServer]:
    env = {"MAX_CONCURRENCY": str(SLOTS), "MAX_TOKENS_CAP": str(CAP)}
    with LocalServer(HANDLERS, direct=True, api_key=KEY, env=env, ready_timeout_s=600) as running:
        yield running


@pytest.fixture(scope="module")
def queue() -> Iterator[LocalServer]:
    with LocalServer({"stt": HANDLERS["stt"]}, api_key=KEY, ready_timeout_s=300) as running:
        yield running


def sentences(n: int) -> str:
    return " ".join(f"Sentence number {i} is here." for i in range(n))


async def post_stream(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> tuple[int, httpx.Headers, Any]:
    """POST /stream without the voicepod client: the status, the headers, and the events (or the error body)."""
    response = await client.post(f"{url}/stream", json=body, headers={"Authorization": f"Bearer {KEY}"})
    if response.status_code != 200:
        return response.status_code, response.headers, response.json()
    return 200, response.headers, [json.loads(e["data"]) for e in parse_events(response.text)]


async def test_stt_streams_on_the_direct_route_what_it_streams_through_the_queue(direct: LocalServer,
                                                                                  queue: LocalServer) -> None:
    audio = {"audio_base64": __import__("base64").b64encode(espeak_wav(QUESTION)).decode(), "beam_size": 1}
    results = []
    for server in (queue, direct):
        async with server.endpoint("stt") as stt:
            job = await stt.run(audio)
            results.append([chunk async for chunk in job.chunks()])
    through_queue, direct_route = results
    assert [c.seq for c in direct_route] == list(range(len(direct_route)))
    assert [type(c) for c in direct_route] == [type(c) for c in through_queue]
    assert [c.text for c in direct_route if isinstance(c, SegmentChunk)] == \
        [c.text for c in through_queue if isinstance(c, SegmentChunk)]
    done, queued_done = direct_route[-1], through_queue[-1]
    assert isinstance(done, TranscriptDone) and done.text == queued_done.text and wer(QUESTION, done.text) < 0.2
    assert set(done.metrics.model_dump()) == set(queued_done.metrics.model_dump())


async def test_a_turn_mixes_a_queue_endpoint_with_direct_ones(direct: LocalServer, queue: LocalServer) -> None:
    async with queue.endpoint("stt") as stt, direct.endpoint("llm") as llm, direct.endpoint("tts") as tts:
        agent = VoiceAgent(stt, llm, tts, llm_options={"max_tokens": 24, "temperature": 0})
        events = [event async for event in agent.respond(espeak_wav(QUESTION))]
    transcript = next(e for e in events if isinstance(e, Transcript) and e.final)
    assert wer(QUESTION, transcript.text) < 0.2
    assert sum(len(e.data) for e in events if isinstance(e, Audio)) > 8000  # spoken, not silence
    done = next(e for e in events if isinstance(e, Done))
    assert "Paris" in done.reply and all(job_id.startswith("direct-") for job_id in done.metrics.llm.job_ids)


async def test_bad_input_is_a_400_with_the_error_chunk_and_the_worker_serves_on(direct: LocalServer) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        status, headers, body = await post_stream(client, direct.url("tts"), {"id": "bad-1", "input": {"text": ""}})
        assert status == 400 and headers["X-Voicepod-Job-Id"] == "bad-1"
        assert body["error"] == {"code": "invalid_input", "message": "text has no words to speak", "field": "text"}
        status, _, body = await post_stream(client, direct.url("tts"), {"nothing": 1})
        assert (status, body["error"]["code"]) == (400, "invalid_input")
        response = await client.post(f"{direct.url('tts')}/stream", content=b"{not json",
                                     headers={"Authorization": f"Bearer {KEY}"})
        assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_json")
    async with direct.endpoint("tts") as tts:
        job = await tts.run({"text": "Hello.", "voice": "nobody"})  # a refused job still returns from run()
        with pytest.raises(JobFailed) as failure:
            async for _ in job.chunks():
                pass
        assert (failure.value.code, failure.value.field) == ("invalid_input", "voice")
        chunks = [chunk async for chunk in (await tts.run({"text": "Still here."})).chunks()]
        assert isinstance(chunks[-1], SpeechDone)


async def test_a_wrong_key_is_refused_everywhere_but_ping(direct: LocalServer) -> None:
    async with Endpoint(direct.url("tts"), api_key="wrong") as tts:
        with pytest.raises(AuthError):
            await tts.run({"text": "Hello."})
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(f"{direct.url('tts')}/ping")).status_code == 200  # RunPod's balancer has no key
        response = await client.post(f"{direct.url('tts')}/stream", json={"input": {"text": "Hi."}})
        assert (response.status_code, response.json()["error"]["code"]) == (401, "unauthorized")


async def test_a_burst_past_max_concurrency_is_refused_clearly_and_no_chunk_is_lost_or_mixed(
        direct: LocalServer) -> None:
    counts = [3, 4, 5, 6, 7, 8]
    async with httpx.AsyncClient(timeout=120) as client:
        answers = await asyncio.gather(*(
            post_stream(client, direct.url("tts"), {"id": f"burst-{n}", "input": {"text": sentences(n)}})
            for n in counts))
    accepted = [(n, headers, events) for n, (status, headers, events) in zip(counts, answers, strict=True)
                if status == 200]
    refused = [(status, body) for status, _, body in answers if status != 200]
    assert len(accepted) == SLOTS and len(refused) == len(counts) - SLOTS
    for status, body in refused:
        assert status == 429 and body["error"]["code"] == "worker_busy"
    for n, headers, events in accepted:
        assert headers["X-Voicepod-Job-Id"] == f"burst-{n}"
        assert [e["seq"] for e in events] == list(range(len(events)))
        assert events[-1]["type"] == "done" and events[-1]["sentences"] == n
        assert sorted({e["sentence"] for e in events[:-1]}) == list(range(n))
    # The client waits a refusal out (backoff), as it does a queue endpoint's 429: every job ends, each its own.
    async with direct.endpoint("tts", max_retries=30) as tts:
        async def speak(n: int) -> list[Any]:
            return [chunk async for chunk in (await tts.run({"text": sentences(n)})).chunks()]
        spoken = await asyncio.gather(*(speak(n) for n in counts))
    for n, chunks in zip(counts, spoken, strict=True):
        assert isinstance(chunks[-1], SpeechDone) and chunks[-1].sentences == n
        assert sorted({c.sentence for c in chunks if isinstance(c, AudioChunk)}) == list(range(n))


async def busy(url: str) -> int:
    async with httpx.AsyncClient(timeout=10) as client:
        return (await client.get(f"{url}/ping")).json()["busy"]


async def test_a_caller_that_hangs_up_frees_its_llm_batch_slot(direct: LocalServer) -> None:
    url = direct.url("llm")
    body = {"input": {"messages": LONG, "max_tokens": CAP, "temperature": 0}}
    async with httpx.AsyncClient(timeout=120) as client:
        async with client.stream("POST", f"{url}/stream", json=body,
                                 headers={"Authorization": f"Bearer {KEY}"}) as response:
            assert response.status_code == 200
            lines = response.aiter_lines()
            while not (await anext(lines)).startswith('data: {"seq": 2'):
                pass
            assert await busy(url) == 1
        # Hung up 3 tokens into a 400-token story. The worker stops the job at once, and its batch row with it.
        deadline = time.monotonic() + 5
        while await busy(url) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert await busy(url) == 0
    async with direct.endpoint("llm") as llm:
        job = await llm.run({"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 20,
                             "temperature": 0})
        done = [chunk async for chunk in job.chunks()][-1]
    assert isinstance(done, CompletionDone)
    assert done.metrics.batch_max == 1  # decoded alone: the story is not being written beside it
    assert "stopped before its end: its caller left" in direct.logs()


async def test_a_submit_block_left_by_an_error_stops_its_direct_job(direct: LocalServer) -> None:
    async with direct.endpoint("tts") as tts:
        assert (await tts.health())["status"] == "ready"
        with pytest.raises(RuntimeError, match="the caller's own"):
            async with tts.submit({"text": sentences(30)}) as job:
                async for _ in job.stream():
                    raise RuntimeError("the caller's own failure")
        assert job.finished and (await job.status())["status"] == "CANCELLED"
    deadline = time.monotonic() + 5
    while await busy(direct.url("tts")) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert await busy(direct.url("tts")) == 0


async def test_the_execution_timeout_ends_a_direct_job(direct: LocalServer) -> None:
    async with direct.endpoint("llm") as llm:
        job = await llm.run({"messages": LONG, "max_tokens": CAP, "temperature": 0},
                            policy={"executionTimeout": 1500})
        with pytest.raises(JobTimedOut):
            async for _ in job.chunks():
                pass
    assert await busy(direct.url("llm")) == 0


async def test_the_openai_routes_answer_directly(direct: LocalServer) -> None:
    async with direct.endpoint("llm") as llm:
        assert llm.openai_base_url == f"{direct.url('llm')}/openai/v1"
        client = openai.AsyncOpenAI(base_url=llm.openai_base_url, api_key=KEY)
        stream = await client.chat.completions.create(
            model="any", messages=[{"role": "user", "content": QUESTION}], max_tokens=20, temperature=0, stream=True)
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
        assert "Paris" in text
        whole = await client.chat.completions.create(model="any", messages=[{"role": "user", "content": QUESTION}],
                                                     max_tokens=20, temperature=0)
        assert whole.choices[0].message.content == text
        assert [m.id async for m in client.models.list()] == ["smollm2-135m-instruct"]
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="any", messages=[{"role": "user", "content": "Hi"}],
                                                 logprobs=True)
        with pytest.raises(openai.AuthenticationError):
            await openai.AsyncOpenAI(base_url=llm.openai_base_url, api_key="wrong").models.list()


async def test_a_websocket_session_speaks_sentence_after_sentence_and_cancels_one(direct: LocalServer) -> None:
    url = direct.url("tts").replace("http://", "ws://") + "/ws"
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        ends: dict[str, dict[str, Any]] = {}
        for i, text in enumerate(["Hello there.", "How are you today?", "Goodbye."]):
            await ws.send(json.dumps({"id": f"s{i}", "input": {"text": text, "format": "mulaw"}}))
            seqs = []
            while f"s{i}" not in ends:
                frame = json.loads(await ws.recv())
                assert frame["job"] == f"s{i}"
                seqs.append(frame["seq"])
                if frame["type"] in ("done", "error"):
                    ends[frame["job"]] = frame
            assert seqs == list(range(len(seqs))) and ends[f"s{i}"]["type"] == "done"
        await ws.send("not json")
        assert json.loads(await ws.recv())["error"]["code"] == "invalid_json"  # and the session goes on
        await ws.send(json.dumps({"id": "long", "input": {"text": sentences(30)}}))
        assert json.loads(await ws.recv())["job"] == "long"
        await ws.send(json.dumps({"cancel": "long"}))
        while (frame := json.loads(await ws.recv()))["type"] != "error":
            assert frame["type"] == "audio"
        assert frame["error"]["code"] == "cancelled"
    deadline = time.monotonic() + 5
    while await busy(direct.url("tts")) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert await busy(direct.url("tts")) == 0


def _listener(pid: int, port: int) -> int:
    """The process under ``pid`` (itself or a descendant) listening on ``port``."""
    import psutil

    for process in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        if any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in process.net_connections()):
            return process.pid
    raise AssertionError(f"nothing listens on {port}")


async def test_a_worker_killed_mid_stream_is_a_typed_error_at_once() -> None:
    with LocalServer({"tts": HANDLERS["tts"]}, direct=True, ready_timeout_s=300) as server:
        assert server.process is not None
        async with server.endpoint("tts") as tts:
            job = await tts.run({"text": sentences(40), "chunk_ms": 100})
            got = []
            with pytest.raises(JobFailed) as failure:
                async for chunk in job.stream():
                    got.append(chunk)
                    if len(got) == 2:
                        worker = _listener(server.process.pid, server.port)
                        killed_at = time.monotonic()
                        os.kill(worker, signal.SIGKILL)
            assert failure.value.code == "worker_died" and time.monotonic() - killed_at < 2
            assert [c["seq"] for c in got] == list(range(len(got)))
            server.wait_ready()  # serve-local starts it again; its next job is served
            chunks = [chunk async for chunk in (await tts.run({"text": "Back again."})).chunks()]
            assert isinstance(chunks[-1], SpeechDone)


def test_ping_says_204_until_the_model_is_loaded(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "llm.log"
    env = {**os.environ, "VOICEPOD_MODE": "direct", "PORT": str(port), "VOICEPOD_DIRECT_HOST": "127.0.0.1",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "client")])}
    seen: list[tuple[int, str]] = []  # each /ping status with the worker's log at that moment
    with open(log, "wb") as out:
        worker = subprocess.Popen([sys.executable, str(HANDLERS["llm"])], env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not seen or seen[-1][0] != 200:
            assert worker.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code
            except httpx.HTTPError:
                time.sleep(0.05)
                continue
            seen.append((status, log.read_text()))
            if status == 204 and len(seen) == 1:
                job = httpx.post(f"http://127.0.0.1:{port}/stream", json={"input": {"prompt": "Hi"}}, timeout=10)
                assert (job.status_code, job.json()["error"]["code"]) == (503, "worker_loading")
            time.sleep(0.05)
        statuses = [status for status, _ in seen]
        assert statuses[0] == 204 and set(statuses) == {204, 200} and statuses.index(200) == len(statuses) - 1
        assert "loaded llm" not in seen[0][1]  # answering 204 before the model had loaded...
        assert "loaded llm" in seen[-1][1] and "warmed up" in seen[-1][1]  # ...and 200 only once loaded and warm
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    assert worker.returncode == 0  # SIGTERM stops it cleanly
