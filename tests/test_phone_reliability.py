"""What was thrown at the phone server, and what it survived (docs/reliability.md, "Calls"): a short soak of calls
coming and going (every question answered, each caller hearing only its own call's audio, memory flat), workers
killed mid-reply, a flood of junk frames beside a call, a caller that never reads its socket, unsigned requests by
the hundred with a token set, and SIGTERM with live calls.

A real ``voicepod phone`` process over serve-local's three real workers; simulated Twilio callers
(:mod:`benchmarks.phone_traffic`) speak espeak-ng questions in real time, and what each caller heard is checked
byte for byte against its own call's TTS jobs. The figures the docs quote go to
``benchmarks/results/phone_reliability.last.json`` (the run the docs quote is kept as ``phone_reliability.json``),
reported, not asserted where they are timings.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import signal
import socket
import threading
import time
from dataclasses import asdict

import httpx
import pytest
from voicepod.local.process import free_port
from voicepod.phone import twilio
from voicepod.phone.caller import SimulatedCaller
from voicepod.registry import CHAIN
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from benchmarks import machine
from benchmarks.phone_soak import phone_over_workers, soak_calls
from benchmarks.phone_traffic import PLAIN, Clips, check_call, place_call, transcript_matches

from .conftest import REPO
from .phone_util import PhoneServer
from .worker_memory import anonymous_mib, worker_pids

# This run's figures; the docs quote a kept run's, phone_reliability.json, copied from this file after a whole run
# (a partial run, -k, holds only its own tests' figures, and every run's timings differ).
RESULTS = REPO / "benchmarks" / "results" / "phone_reliability.last.json"
FINAL = {"COMPLETED", "CANCELLED", "FAILED"}
figures: dict[str, object] = {}


@pytest.fixture(scope="module", autouse=True)
def write_figures():
    yield
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    measured = {"device": machine(), "date": time.strftime("%Y-%m-%d")}
    RESULTS.write_text(json.dumps(measured | figures, indent=2) + "\n")


@pytest.fixture(scope="module")
def workers(clips):
    with phone_over_workers() as (server, phone):
        # The workers' first jobs and the phone server's first call load what every later one uses.
        asyncio.run(ask(phone, server, clips))
        yield server, phone


@pytest.fixture(scope="module")
def clips():
    return Clips.spoken()


async def endpoints_of(server):
    return {stage: server.endpoint(stage, timeout=60) for stage in CHAIN}


async def ask(phone, server, clips, questions: int = 1, seed: int = 0, greeting: bool = True):
    """One call of ``questions`` plain questions; its outcome and its check against its record."""
    outcome = await place_call(phone.media_url, clips, [PLAIN] * questions, random.Random(seed), greeting=greeting)
    record = await asyncio.to_thread(phone.record, outcome.call_sid, 60)
    endpoints = await endpoints_of(server)
    try:
        return outcome, record, await check_call(endpoints, record, outcome, transcript_matches)
    finally:
        for endpoint in endpoints.values():
            await endpoint.aclose()


async def job_statuses(server, record: dict) -> list[str]:
    statuses = []
    for turn in record["turns"]:
        for stage, ids in turn["jobs"].items():
            async with server.endpoint(stage) as endpoint:
                statuses += [(await endpoint.job(job_id).status())["status"] for job_id in ids]
    return statuses


# --- the check itself ----------------------------------------------------------------------------------------


class _Jobs:
    """Stands in for the TTS endpoint: each job id's audio, as its status output."""

    def __init__(self, audio: dict[str, bytes]):
        self.audio = audio

    def job(self, job_id: str):
        audio = self.audio[job_id]

        class Job:
            async def status(self) -> dict:
                return {"status": "COMPLETED", "output": [
                    {"seq": 0, "type": "audio", "audio": base64.b64encode(audio).decode()}, {"seq": 1, "type": "done"}]}

        return Job()


async def test_the_check_tells_a_callers_own_audio_from_another_calls():
    from benchmarks.phone_traffic import PAUSED, QUESTIONS, Asked, CallOutcome

    own, other, greeting = b"\x01" * 320, b"\x02" * 320, b"\x03" * 80
    record = {"cancelled_speculations": [], "turns": [
        {"user": QUESTIONS[0], "error": None, "interrupted": False, "jobs": {"tts": ["mine"]}}]}
    endpoints = {"tts": _Jobs({"mine": own})}

    async def check(received: bytes, arrivals: list):
        outcome = CallOutcome("CA1", [Asked(QUESTIONS[0], PLAIN, 1.0)], received, arrivals)
        return await check_call(endpoints, record, outcome, transcript_matches)

    heard = await check(greeting + own, [("0:0", 80), ("1:0", 400)])
    assert (heard.answered, heard.crossed_bytes, heard.verified_bytes) == (1, 0, 320)
    cut = await check(greeting + own[:100], [("0:0", 80)])  # hung up mid-sentence: a prefix of its own job
    assert (cut.answered, cut.crossed_bytes) == (1, 0)
    crossed = await check(greeting + other, [("0:0", 80), ("1:0", 400)])
    assert (crossed.answered, crossed.crossed_bytes) == (0, 320) and len(crossed.lost) == 2
    outcome = CallOutcome("CA1", [Asked(QUESTIONS[0], PLAIN, 1.0)], greeting + own, [("0:0", 80), ("1:0", 400)])
    for heard_instead in (QUESTIONS[1], "Good morning to you."):  # another call's question; nobody's
        misheard = {**record, "turns": [{**record["turns"][0], "user": heard_instead}]}
        assert (await check_call(endpoints, misheard, outcome, transcript_matches)).answered == 0
    # Whisper's worst hearing of the paused question in the soak still counts as it.
    assert transcript_matches(" ".join(PAUSED), "What is the capital and friends and what I'm out here many?")


# --- unsigned requests --------------------------------------------------------------------------------------


TOKEN = "0123456789abcdef0123456789abcdef"
UNSIGNED = 200  # of each kind: webhook posts and WebSocket upgrades


@pytest.mark.slow
async def test_unsigned_requests_by_the_hundred_are_refused_and_cost_the_server_nothing():
    nowhere = f"http://127.0.0.1:{free_port()}/v2"  # no call gets far enough to use its endpoints
    with PhoneServer(nowhere, ["--greeting", ""], env={"TWILIO_AUTH_TOKEN": TOKEN}) as srv:
        pid = srv.process.pid
        import psutil

        before = (anonymous_mib(pid), psutil.Process(pid).num_fds())
        limit = asyncio.Semaphore(20)

        async def webhook(client: httpx.AsyncClient, i: int) -> int:
            async with limit:
                return (await client.post(f"{srv.url}/twiml", data={"CallSid": f"CA{i}"})).status_code

        async def upgrade(i: int) -> int:
            async with limit:
                try:
                    async with ws_connect(srv.media_url, open_timeout=30):
                        return 101
                except InvalidStatus as refused:
                    return refused.response.status_code

        async with httpx.AsyncClient(timeout=30) as client:
            codes = await asyncio.gather(*(webhook(client, i) for i in range(UNSIGNED)),
                                         *(upgrade(i) for i in range(UNSIGNED)))
        health = httpx.get(f"{srv.url}/health").json()
        after = (anonymous_mib(pid), psutil.Process(pid).num_fds())
        # A signed call still gets through.
        caller = SimulatedCaller(srv.media_url, auth_token=TOKEN)
        await caller.connect()
        await caller.hang_up()
        assert srv.record(caller.call_sid)["end_reason"] == "stop"
        records = list(srv.transcripts.glob("*.json"))
    figures["unsigned"] = {"requests": len(codes), "refused": codes.count(403), "memory_mib": [before[0], after[0]],
                           "fds": [before[1], after[1]]}
    assert codes == [403] * (2 * UNSIGNED)
    assert health["calls"] == 0 and len(records) == 1  # the signed call's only
    assert after[1] <= before[1] + 2, (before, after)  # every refused socket closed
    assert after[0] - before[0] < 16, (before, after)


# --- many calls, coming and going ---------------------------------------------------------------------------

# Measured for 2 minutes after 1 minute of the same calls: a worker's memory grows over its first minutes of calls
# (the TTS worker's for about two, to where it stays in a 15-minute soak), longer than the first third of a short run.
SOAK_MINUTES = 2.0
WARM_UP_MINUTES = 1.0
SOAK_CALLS = 3


@pytest.mark.slow
async def test_a_short_soak_of_calls_coming_and_going_answers_every_question_to_its_own_call(workers):
    server, phone = workers
    report = await soak_calls(server, phone, SOAK_MINUTES, SOAK_CALLS, every_s=1.0, warm_up_minutes=WARM_UP_MINUTES)
    figures["soak"] = {k: v for k, v in asdict(report).items() if k not in ("t_s", "emulator_mb")}
    assert report.calls >= 2 * SOAK_CALLS and report.broken_calls == 0
    assert report.lost == 0 and report.answered == report.asked, report.lost_detail
    assert report.crossed_bytes == 0 and report.verified_bytes > 0
    assert report.barge_ins >= 1 and report.cancelled_speculations >= 1 and report.dropped_lines >= 1
    assert not any(report.jobs_left_running.values()), report.jobs_left_running
    # Memory flat after warm-up: no process grew more than 10% over the last two thirds of the run.
    assert report.flat, report.growth
    # Every call's tasks went with it, and its sockets (the endpoints' connection pools keep a few to serve-local).
    assert report.idle_after["tasks"] == report.idle_before["tasks"], (report.idle_before, report.idle_after)
    assert report.idle_after["fds"] <= report.idle_before["fds"] + 8, (report.idle_before, report.idle_after)


@pytest.mark.slow
async def test_a_reply_cancelled_while_it_waits_for_audio_leaves_no_task_behind(workers, clips):
    # What a hang-up or a dropped speculation does to a call's turn. The soak found the phone server keeping one
    # task a call this way (with its reply), until the reply's wait was cancelled with it.
    from voicepod.agent import Audio, VoiceAgent
    from voicepod.audio import MULAW_RATE

    from benchmarks.phone_traffic import QUESTIONS

    server, _ = workers
    endpoints = await endpoints_of(server)
    agent = VoiceAgent(*endpoints.values(), system_prompt="Answer in three short sentences.",
                       llm_options={"max_tokens": 48, "temperature": 0})
    before = asyncio.all_tasks()
    heard = asyncio.Event()

    async def listen() -> None:
        async for event in agent.respond(clips.audio[QUESTIONS[0]], audio_format="mulaw", sample_rate=MULAW_RATE):
            if isinstance(event, Audio):
                heard.set()  # and on to the next event: the reply waits for the next sentence's audio

    turn = asyncio.create_task(listen())
    await asyncio.wait_for(heard.wait(), 300)
    turn.cancel()
    await asyncio.gather(turn, return_exceptions=True)
    deadline = time.monotonic() + 10  # the reply's cancels reach the endpoints over HTTP: a loaded machine is slow
    while (left := asyncio.all_tasks() - before - {asyncio.current_task()}) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    for endpoint in endpoints.values():
        await endpoint.aclose()
    assert not left, left


# --- a junk flood beside a call -----------------------------------------------------------------------------

FLOOD_PER_S = 2000
JUNK = ('{"event": "teleport", "streamSid": "x"}', '{"event": "media", "media": {"payload": "@@@ not base64"}}')
FLOOD_SID = "CAflood" + "0" * 25


def flood(url: str, stop: threading.Event, sent: list[int]) -> None:
    """A call that sends nothing but junk frames Twilio never would, about ``FLOOD_PER_S`` a second (fewer if the
    server reads slower: its socket then backs up), in its own thread (the test's event loop keeps the honest
    caller's real-time frames); appends how many it sent."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    count = 0
    try:
        with connect(url) as socket_:
            socket_.send(twilio.twilio_connected())
            socket_.send(twilio.twilio_start("MZflood", FLOOD_SID))
            began = time.monotonic()
            while not stop.is_set():
                socket_.send(JUNK[count % 2])
                count += 1
                if count % 20 == 0:  # on a clock, as a steady sender would
                    time.sleep(max(0.0, began + count / FLOOD_PER_S - time.monotonic()))
            socket_.send(twilio.twilio_stop("MZflood", FLOOD_SID, count + 3))
    except (ConnectionClosed, OSError):
        pass  # the server let it go: its keepalive ping went unanswered behind the junk (see the test)
    finally:
        sent.append(count)


@pytest.mark.slow
async def test_a_call_beside_a_flood_of_junk_frames_is_answered(workers, clips):
    server, phone = workers
    _, _, alone = await ask(phone, server, clips, seed=1)
    before = anonymous_mib(phone.process.pid)
    stop, sent = threading.Event(), []
    flooder = threading.Thread(target=flood, args=(phone.media_url, stop, sent))
    began = time.monotonic()
    flooder.start()
    try:
        await asyncio.sleep(2.0)
        _, _, beside = await ask(phone, server, clips, seed=1)
    finally:
        stop.set()
        await asyncio.to_thread(flooder.join)
    flooding_s = time.monotonic() - began
    after = anonymous_mib(phone.process.pid)
    record = await asyncio.to_thread(phone.record, FLOOD_SID, 60)
    figures["junk_flood"] = {"frames": sent[0], "frames_per_s": round(sent[0] / flooding_s),
                             "ignored": record["ignored_frames"], "end_reason": record["end_reason"],
                             "mouth_to_ear_alone_s": alone.mouth_to_ear_s,
                             "mouth_to_ear_beside_s": beside.mouth_to_ear_s, "phone_mib": [before, after]}
    assert alone.answered == beside.answered == 1 and beside.crossed_bytes == 0, beside.lost
    # Every junk frame the server read was skipped and counted; none closed the call. A flood the server cannot
    # keep up with delays its keepalive pong behind the junk, and the server lets that caller go (uvicorn's ping:
    # 20 s, then 20 s for the pong): then it read fewer than were sent.
    assert record["ignored_frames"] > 1000
    assert record["end_reason"] == "stop" and record["ignored_frames"] == sent[0] or (
        record["end_reason"].startswith("disconnected") and record["ignored_frames"] <= sent[0]), record
    assert after - before < 16, (before, after)


# --- a caller that never reads ------------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_caller_that_never_reads_its_socket_is_let_go_and_grows_the_server_by_nothing(workers, clips):
    from benchmarks.phone_traffic import QUESTIONS

    server, phone = workers
    before = anonymous_mib(phone.process.pid)
    # A small receive buffer and a client that stops reading once one message waits: the server's sends back up.
    sock = socket.create_connection(("127.0.0.1", phone.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    call_sid = "CAslow" + "0" * 26
    began = time.monotonic()
    async with ws_connect(phone.media_url, sock=sock, max_queue=1) as slow:
        await slow.send(twilio.twilio_connected())
        await slow.send(twilio.twilio_start("MZslow", call_sid))
        audio = clips.audio[QUESTIONS[0]] + twilio.SILENCE * 8000  # a question, then a second of silence
        for n, frame in enumerate(twilio.frames(audio)):
            await asyncio.wait_for(slow.send(twilio.twilio_media("MZslow", frame, n + 3, n + 1, 20 * n)), 30)
            await asyncio.sleep(0.02)
        # Meanwhile, another call is answered.
        _, _, other = await ask(phone, server, clips, seed=2)
        peak = anonymous_mib(phone.process.pid)
        record = await asyncio.to_thread(phone.record, call_sid, 180)  # its call ends: the server let it go
        let_go_s = time.monotonic() - began
    figures["slow_reader"] = {"phone_mib": [before, peak], "let_go_after_s": round(let_go_s, 1),
                              "end_reason": record["end_reason"], "turns": len(record["turns"])}
    assert other.answered == 1 and other.crossed_bytes == 0, other.lost
    assert record["end_reason"] == "disconnected" and len(record["turns"]) == 1
    assert peak - before < 16, (before, peak)
    assert set(await job_statuses(server, record)) <= FINAL


# --- workers killed mid-reply -------------------------------------------------------------------------------


async def kill_when_busy(server, stage: str, timeout: float = 120.0) -> int:
    """SIGKILL the ``stage`` worker as soon as its endpoint has a job in progress; returns the killed pid."""
    async with server.endpoint(stage) as endpoint:
        deadline = time.monotonic() + timeout
        while (await endpoint.health())["jobs"]["inProgress"] < 1:
            assert time.monotonic() < deadline, f"no {stage} job in progress within {timeout} s"
            await asyncio.sleep(0.01)
    [pid] = worker_pids(server)[stage]
    import os

    os.kill(pid, signal.SIGKILL)
    return pid


@pytest.mark.slow
async def test_workers_killed_mid_reply_cost_that_turn_an_apology_and_the_call_goes_on(workers, clips):
    from benchmarks.phone_traffic import QUESTIONS, Asked, CallOutcome

    server, phone = workers
    caller = SimulatedCaller(phone.media_url)
    outcome = CallOutcome(caller.call_sid)
    killed = {}
    async with caller:
        await caller.wait_for_audio(0, 300)  # the greeting
        await caller.wait_until_quiet(2.0, 300)
        for question, stage in zip(QUESTIONS[:3], ["tts", "llm", None], strict=True):
            outcome.asked.append(asked := Asked(question, PLAIN))
            await caller.say(clips.audio[question])
            if stage is not None:  # mid-reply: the stage's job runs when its worker dies
                killed[stage] = await kill_when_busy(server, stage)
            asked.mouth_to_ear_s = await caller.wait_for_audio(caller.speech_ended_at, 300)
            await caller.wait_until_quiet(3.0, 300)
    outcome.received, outcome.arrivals = bytes(caller.received), list(caller.arrivals)
    record = await asyncio.to_thread(phone.record, caller.call_sid, 60)
    endpoints = await endpoints_of(server)
    check = await check_call(endpoints, record, outcome, transcript_matches)
    for endpoint in endpoints.values():
        await endpoint.aclose()
    figures["worker_kills"] = {"killed": list(killed), "errors": [t["error"] for t in record["turns"]],
                               "answered_after": check.answered}
    assert [t["error"] for t in record["turns"]] == ["worker_died", "worker_died", None], record["turns"]
    assert all(t["assistant"] for t in record["turns"])  # an apology, an apology, the answer
    assert check.answered == 1 and check.crossed_bytes == 0, check.lost  # the third question, its own audio
    assert set(await job_statuses(server, record)) <= FINAL
    assert all(pid not in worker_pids(server)[stage] for stage, pid in killed.items())  # restarted


# --- SIGTERM with live calls --------------------------------------------------------------------------------


@pytest.mark.slow
async def test_sigterm_with_live_calls_ends_each_writes_its_record_and_leaves_no_job_running(workers, clips):
    from benchmarks.phone_traffic import PHONE_ARGS, QUESTIONS

    server, _ = workers
    with PhoneServer(server.base_url, [*PHONE_ARGS, "--drain", "0"]) as phone:  # no drain: calls end at once
        callers = [SimulatedCaller(phone.media_url) for _ in range(3)]
        for caller in callers:
            await caller.connect()
        for caller in callers:
            await caller.wait_for_audio(0, 300)
        # One caller hears a reply, one is speaking, one listens to nothing.
        await callers[0].say(clips.audio[QUESTIONS[0]])
        await callers[0].wait_for_audio(callers[0].speech_ended_at, 300)
        speaking = asyncio.ensure_future(callers[1].say(clips.audio[QUESTIONS[1]] * 3))
        await asyncio.sleep(1.0)
        began = time.monotonic()
        phone.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(phone.process.wait, 60)
        exit_s = time.monotonic() - began
        await asyncio.gather(speaking, return_exceptions=True)
        records = [phone.record(caller.call_sid, 5) for caller in callers]
        close_codes = [caller.close_code for caller in callers]
        for caller in callers:
            await caller.hang_up()
    statuses = [s for record in records for s in await job_statuses(server, record)]
    figures["sigterm"] = {"calls": len(callers), "exit_s": round(exit_s, 2), "close_codes": close_codes,
                          "end_reasons": [r["end_reason"] for r in records], "job_statuses": statuses}
    # uvicorn ends every call ("service restart"), then re-raises the signal: the process ends as SIGTERM says.
    assert code in (0, -signal.SIGTERM) and close_codes == [1012] * 3
    assert [r["end_reason"] for r in records] == ["disconnected"] * 3
    assert len(records[0]["turns"]) == 1 and records[0]["turns"][0]["interrupted"]
    assert set(statuses) <= FINAL - {"FAILED"}, statuses


@pytest.mark.slow
async def test_sigterm_drains_the_call_in_progress_takes_no_new_one_and_exits_when_it_ends(workers, clips):
    from benchmarks.phone_traffic import PHONE_ARGS, QUESTIONS

    server, _ = workers
    with PhoneServer(server.base_url, [*PHONE_ARGS, "--drain", "120"]) as phone:
        caller = SimulatedCaller(phone.media_url)
        await caller.connect()
        await caller.wait_for_audio(0, 300)  # the greeting
        await caller.say(clips.audio[QUESTIONS[0]])
        await caller.wait_for_audio(caller.speech_ended_at, 300)
        signalled = time.monotonic()
        phone.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        async with httpx.AsyncClient(base_url=phone.url) as http:
            health = await http.get("/health")
            twiml_status = (await http.post("/twiml", data={"From": "+15550001"})).status_code
        with pytest.raises(InvalidStatus):  # a new call is refused at the handshake
            async with ws_connect(phone.media_url, open_timeout=10):
                pass
        # The call in progress goes on: its reply plays to its end, and another question is answered.
        await caller.wait_until_quiet(1.5, 120)
        heard_before = len(caller.received)
        await caller.say(clips.audio[QUESTIONS[1]])
        await caller.wait_for_audio(caller.speech_ended_at, 300)
        await caller.wait_until_quiet(1.5, 120)
        assert phone.process.poll() is None, "the server left while its call went on"
        await caller.hang_up()
        hung_up = time.monotonic()
        code = await asyncio.to_thread(phone.process.wait, 30)
        exited_s = time.monotonic() - hung_up
        record = phone.record(caller.call_sid, 5)
    figures["drain"] = {"health_status": health.status_code, "twiml_status": twiml_status,
                        "turns": len(record["turns"]), "exit_after_hang_up_s": round(exited_s, 2),
                        "drained_s": round(hung_up - signalled, 1)}
    assert health.status_code == 503 and health.json()["status"] == "draining" and health.json()["calls"] == 1
    assert twiml_status == 503
    assert len(caller.received) > heard_before and caller.close_code != 1012
    assert record["end_reason"] == "stop" and len(record["turns"]) == 2 and all(t["assistant"] for t in record["turns"])
    assert code in (0, -signal.SIGTERM) and exited_s < 10
    assert set(await job_statuses(server, record)) <= FINAL - {"FAILED"}  # none left running, none failed
