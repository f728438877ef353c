"""voicepod's Pipecat services in real Pipecat pipelines (Pipecat 1.14, Silero VAD), against the real STT, LLM
and TTS workers under one serve-local (with an API key, so the key travels as it would to RunPod)."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest

pytest.importorskip("pipecat", reason="needs the extra voicepod[pipecat]")

import uvicorn  # noqa: E402
import websockets  # noqa: E402
from pipecat.audio.vad.silero import SileroVADAnalyzer  # noqa: E402
from pipecat.frames.frames import (  # noqa: E402
    EndFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
    MetricsFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSTextFrame,
)
from pipecat.metrics.metrics import LLMUsageMetricsData  # noqa: E402
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.processors.aggregators.llm_context import LLMContext  # noqa: E402
from pipecat.processors.aggregators.llm_response_universal import (  # noqa: E402
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.audio.vad_processor import VADProcessor  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.utils.errors import ErrorCategory  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402
from voicepod import Endpoint, Job, registry  # noqa: E402
from voicepod.aggregator import SentenceAggregator  # noqa: E402
from voicepod.audio import mulaw_decode, mulaw_encode, pcm16_to_float, read_wav, resample  # noqa: E402
from voicepod.local import LocalServer  # noqa: E402
from voicepod.local.process import free_port  # noqa: E402
from voicepod.pipecat import (  # noqa: E402
    ReplyCutFrame,
    RunPodLLMService,
    RunPodSTTService,
    RunPodTTSService,
    SentenceTextAggregator,
)
from voicepod.sentences import ends_sentence  # noqa: E402

from .conftest import REPO  # noqa: E402
from .speech import espeak_wav, load_whisper, wer  # noqa: E402

pytestmark = pytest.mark.slow

KEY = "pipecat-test-key"
QUESTION = "What is the capital of France?"
# Long enough that the worker is still speaking when its first chunks have arrived.
LONG_TEXT = " ".join(f"This is sentence number {n} of a long reply that keeps the voice busy." for n in range(1, 13))
IN_RATE = 16000  # Silero VAD takes 8 or 16 kHz


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    handlers = registry.handlers(REPO)
    with LocalServer(handlers, api_key=KEY, ready_timeout_s=300) as running:
        yield running


@pytest.fixture(scope="module")
def whisper() -> Any:
    return load_whisper()


class Recorder(FrameProcessor):
    """Passes every frame on and keeps it, with its arrival time, per direction."""

    def __init__(self, on_frame: Callable[[Frame], Awaitable[None]] | None = None):
        super().__init__()
        self.down: list[tuple[float, Frame]] = []
        self.up: list[tuple[float, Frame]] = []
        self.on_frame = on_frame

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        (self.down if direction == FrameDirection.DOWNSTREAM else self.up).append((time.monotonic(), frame))
        if self.on_frame is not None:
            await self.on_frame(frame)
        await self.push_frame(frame, direction)

    def frames(self, kind: type, up: bool = False) -> list[Any]:
        return [frame for _, frame in (self.up if up else self.down) if isinstance(frame, kind)]

    async def wait_for(self, kind: type, up: bool = False, timeout: float = 120.0) -> Any:
        deadline = time.monotonic() + timeout
        while not self.frames(kind, up):
            assert time.monotonic() < deadline, f"no {kind.__name__} after {timeout:g} s"
            await asyncio.sleep(0.02)
        return self.frames(kind, up)[0]


async def run_pipeline(
    processors: list[FrameProcessor],
    drive: Callable[[PipelineWorker, Recorder, Recorder], Awaitable[None]],
    *,
    after: list[FrameProcessor] | None = None,
    out_rate: int = 24000,
    timeout: float = 240.0,
) -> tuple[Recorder, Recorder]:
    """Run ``head -> processors -> tail -> after`` until ``drive`` (which queues frames and waits on the
    recorders) returns, then end it with an EndFrame; return the head (upstream frames: errors) and tail."""
    head, tail = Recorder(), Recorder()
    params = PipelineParams(audio_in_sample_rate=IN_RATE, audio_out_sample_rate=out_rate, enable_metrics=True,
                            enable_usage_metrics=True)
    pipeline = Pipeline([head, *processors, tail, *(after or [])])
    worker = PipelineWorker(pipeline, params=params, cancel_on_idle_timeout=False)
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(worker: PipelineWorker, frame: Frame) -> None:
        started.set()

    async def go() -> None:
        await asyncio.wait_for(started.wait(), 30)
        await drive(worker, head, tail)
        await worker.queue_frame(EndFrame())

    runner = WorkerRunner()
    await runner.add_workers(worker)
    await asyncio.wait_for(asyncio.gather(runner.run(), go()), timeout)
    return head, tail


def audio_frames(text: str, silence_s: float = 1.5) -> list[InputAudioRawFrame]:
    """``text`` spoken by espeak-ng, then silence (so the VAD hears the end), as 20 ms input frames."""
    samples, rate = read_wav(espeak_wav(text, sample_rate=IN_RATE))
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes() + bytes(int(IN_RATE * silence_s) * 2)
    step = IN_RATE // 50 * 2
    return [InputAudioRawFrame(pcm[i:i + step], IN_RATE, 1) for i in range(0, len(pcm), step)]


async def speak_into(worker: PipelineWorker, frames: list[InputAudioRawFrame]) -> None:
    for frame in frames:
        await worker.queue_frame(frame)
        await asyncio.sleep(0.002)  # a stream, not one burst: the VAD and the STT's buffer see it arrive


def heard(whisper: Any, frames: list[TTSAudioRawFrame]) -> str:
    samples = pcm16_to_float(b"".join(f.audio for f in frames))
    segments, _ = whisper.transcribe(resample(samples, frames[0].sample_rate, 16000))
    return " ".join(s.text for s in segments)


def job_recorder(service: RunPodSTTService | RunPodTTSService) -> list[Job]:
    jobs: list[Job] = []

    @service.event_handler("on_job_started")
    async def _job(service: Any, job: Job) -> None:
        jobs.append(job)

    return jobs


# --- STT ------------------------------------------------------------------------------------------------


async def test_stt_turns_a_vad_segment_into_a_transcription_frame(server: LocalServer) -> None:
    stt = RunPodSTTService(endpoint=server.endpoint("stt"), language="en")
    jobs = job_recorder(stt)

    frames = audio_frames(QUESTION)
    speech_s = sum(len(f.audio) for f in frames) / 2 / IN_RATE - 1.5

    async def drive(worker: PipelineWorker, head: Recorder, tail: Recorder) -> None:
        await speak_into(worker, frames)
        await tail.wait_for(TranscriptionFrame)

    head, tail = await run_pipeline([VADProcessor(vad_analyzer=SileroVADAnalyzer()), stt], drive)
    [transcript] = tail.frames(TranscriptionFrame)
    assert wer(QUESTION, transcript.text) < 0.15, transcript.text
    assert transcript.language == "en" and transcript.finalized
    assert len(jobs) == 1 and not head.frames(ErrorFrame, up=True)
    # The segment went as raw PCM16 with the pipeline's rate: the worker measured the speech (plus the VAD's
    # stop delay and the trailing silence) from that rate; at any other rate it would be off by a factor.
    duration = (await jobs[0].status())["output"][-1]["duration"]
    assert speech_s < duration < speech_s + 2.0


# --- TTS ------------------------------------------------------------------------------------------------


async def test_tts_streams_audio_frames_at_the_pipeline_rate_before_its_job_is_done(
    server: LocalServer, whisper: Any
) -> None:
    tts = RunPodTTSService(endpoint=server.endpoint("tts"))
    jobs = job_recorder(tts)
    status_at_first_audio: list[str] = []

    async def on_first_audio(frame: Frame) -> None:
        if isinstance(frame, TTSAudioRawFrame) and not status_at_first_audio:
            status_at_first_audio.append((await jobs[0].status())["status"])

    async def drive(worker: PipelineWorker, head: Recorder, tail: Recorder) -> None:
        tail.on_frame = on_first_audio
        await worker.queue_frame(TTSSpeakFrame(LONG_TEXT))
        await tail.wait_for(TTSAudioRawFrame)
        while not jobs[0].finished:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # the last frames on their way from the service to the tail

    head, tail = await run_pipeline([tts], drive, out_rate=16000)
    audio = tail.frames(TTSAudioRawFrame)
    assert len(audio) > 10 and {f.sample_rate for f in audio} == {16000}
    # The first audio reached the pipeline's end while the worker was still speaking the rest.
    assert status_at_first_audio == ["IN_PROGRESS"]
    # The worker made 16 kHz itself (asked for it), rather than the client resampling its voice's own rate.
    output = (await jobs[0].status())["output"]
    assert {c["sample_rate"] for c in output if c["type"] == "audio"} == {16000}
    assert wer(LONG_TEXT, heard(whisper, audio)) < 0.25


async def test_tts_at_a_rate_the_worker_does_not_speak_is_resampled_from_the_voices_own(
    server: LocalServer, whisper: Any
) -> None:
    tts = RunPodTTSService(endpoint=server.endpoint("tts"))
    jobs = job_recorder(tts)
    text = "Hello there, how are you today?"

    async def drive(worker: PipelineWorker, head: Recorder, tail: Recorder) -> None:
        await worker.queue_frame(TTSSpeakFrame(text))
        await tail.wait_for(TTSAudioRawFrame)
        while not jobs[0].finished:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)

    head, tail = await run_pipeline([tts], drive, out_rate=12000)
    audio = tail.frames(TTSAudioRawFrame)
    assert audio and {f.sample_rate for f in audio} == {12000}
    output = (await jobs[0].status())["output"]
    native = {c["sample_rate"] for c in output if c["type"] == "audio"}
    assert len(native) == 1 and native != {12000}
    # The length survived the resampling: as many seconds at 12 kHz as the worker made at its own rate.
    made_s = sum(len(base64.b64decode(c["audio"])) for c in output if c["type"] == "audio") / 2 / native.pop()
    assert abs(sum(len(f.audio) for f in audio) / 2 / 12000 - made_s) < 0.05
    assert wer(text, heard(whisper, audio)) < 0.3


async def test_interruption_during_tts_cancels_the_endpoint_job(server: LocalServer) -> None:
    tts = RunPodTTSService(endpoint=server.endpoint("tts"))
    jobs = job_recorder(tts)
    final: list[str] = []

    async def drive(worker: PipelineWorker, head: Recorder, tail: Recorder) -> None:
        await worker.queue_frame(TTSSpeakFrame(LONG_TEXT))
        await tail.wait_for(TTSAudioRawFrame)
        assert (await jobs[0].status())["status"] == "IN_PROGRESS"
        await worker.queue_frame(InterruptionFrame())
        deadline = time.monotonic() + 30
        while (status := (await jobs[0].status())["status"]) == "IN_PROGRESS" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        final.append(status)

    await run_pipeline([tts], drive)
    assert final == ["CANCELLED"]


# --- LLM ------------------------------------------------------------------------------------------------


async def test_llm_through_openai_llm_service_streams_text_frames_and_reports_usage(server: LocalServer) -> None:
    llm = RunPodLLMService(endpoint=server.endpoint("llm"),
                           settings=RunPodLLMService.Settings(temperature=0, max_tokens=24))
    context = LLMContext(messages=[{"role": "user", "content": QUESTION}])

    async def drive(worker: PipelineWorker, head: Recorder, tail: Recorder) -> None:
        await worker.queue_frame(LLMContextFrame(context))
        await tail.wait_for(LLMFullResponseEndFrame)

    head, tail = await run_pipeline([llm], drive)
    assert not head.frames(ErrorFrame, up=True), head.frames(ErrorFrame, up=True)
    texts = tail.frames(LLMTextFrame)
    assert len(texts) >= 2 and "".join(f.text for f in texts).strip()
    usage = [d.value for m in tail.frames(MetricsFrame) for d in m.data if isinstance(d, LLMUsageMetricsData)]
    assert usage and usage[0].prompt_tokens > 0 and 0 < usage[0].completion_tokens <= 24


async def test_the_openai_route_refuses_tool_use_by_name(server: LocalServer) -> None:
    from openai import AsyncOpenAI, BadRequestError

    endpoint = server.endpoint("llm")
    async with AsyncOpenAI(base_url=endpoint.openai_base_url, api_key=KEY, max_retries=0) as client:
        tool = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
        with pytest.raises(BadRequestError) as refused:
            await client.chat.completions.create(model="any", messages=[{"role": "user", "content": "Hi"}],
                                                 tools=[tool], stream=True)
        assert refused.value.param == "openai_input.tools" and "tool calling is not supported" in str(refused.value)


# --- the reply cap and the sentences spoken ----------------------------------------------------------------

LIST_REPLY = "Here are three books:\n1. The Hobbit by J.R.R. Tolkien\n2. Dune by Frank Herbert\n3. The Immac"


async def test_the_tts_service_cuts_sentences_as_voice_agent_does_and_drops_a_cut_off_tail() -> None:
    aggregator = SentenceTextAggregator()
    pieces = [a.text for delta in LIST_REPLY.split(" ") for a in [x async for x in aggregator.aggregate(delta + " ")]]
    expected = SentenceAggregator()
    assert pieces == [p for delta in LIST_REPLY.split(" ") for p in expected.feed(delta + " ")]
    assert pieces == ["Here are three books:", "1. The Hobbit by J.R.R. Tolkien", "2. Dune by Frank Herbert"]
    aggregator.cut_off = True  # what a ReplyCutFrame does
    assert await aggregator.flush() is None
    # A new reply: not cut off, its last words are spoken whether or not they end a sentence.
    assert [a.text async for a in aggregator.aggregate("Sure thing")] == []
    assert (await aggregator.flush()).text == "Sure thing"


@pytest.mark.parametrize("allowance", [0, 20])
async def test_a_reply_cut_at_its_cap_is_spoken_to_its_last_finished_sentence(server: LocalServer,
                                                                               allowance: int) -> None:
    llm = RunPodLLMService(endpoint=server.endpoint("llm"), finish_sentence_within=allowance,
                           settings=RunPodLLMService.Settings(temperature=0, max_tokens=40))
    tts = RunPodTTSService(endpoint=server.endpoint("tts"))
    written = Recorder()
    context = LLMContext(messages=[{"role": "user", "content": "Write a very long story about a dragon and a knight."}])
    aggregators = LLMContextAggregatorPair(context)

    async def drive(worker: PipelineWorker, head: Recorder, tail: Recorder) -> None:
        await worker.queue_frame(LLMContextFrame(context))
        await tail.wait_for(LLMFullResponseEndFrame, timeout=180)
        await asyncio.sleep(1)

    head, tail = await run_pipeline([llm, written, tts], drive, after=[aggregators.assistant()], timeout=300)
    assert not head.frames(ErrorFrame, up=True), head.frames(ErrorFrame, up=True)
    reply = "".join(f.text for f in written.frames(LLMTextFrame))
    usage = [d.value for m in written.frames(MetricsFrame) for d in m.data if isinstance(d, LLMUsageMetricsData)]
    spoken = " ".join(f.text for f in tail.frames(TTSTextFrame))
    remembered = [m["content"] for m in context.get_messages() if m.get("role") == "assistant"]
    # The story runs on past any cap: the worker cut it ("length"), after the allowance when there was one.
    assert written.frames(ReplyCutFrame) and usage and 40 <= usage[0].completion_tokens <= 40 + allowance
    assert spoken.split() == reply.split()[: len(spoken.split())], (spoken, reply)  # what was written, in order
    assert spoken.strip() and ends_sentence(spoken), (spoken, reply)
    if not ends_sentence(reply):
        assert len(spoken.split()) < len(reply.split())  # the unfinished sentence was not spoken
    assert remembered and remembered[-1].split() == spoken.split()  # and the history holds what was said


# --- the whole bot --------------------------------------------------------------------------------------


async def test_bot_loop_question_audio_in_reply_audio_out(server: LocalServer, whisper: Any) -> None:
    stt = RunPodSTTService(endpoint=server.endpoint("stt"), language="en")
    llm = RunPodLLMService(endpoint=server.endpoint("llm"),
                           settings=RunPodLLMService.Settings(temperature=0, max_tokens=30))
    tts = RunPodTTSService(endpoint=server.endpoint("tts"))
    context = LLMContext(messages=[{"role": "system", "content": "Answer in one short sentence."}])
    aggregators = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer()))

    async def drive(worker: PipelineWorker, head: Recorder, tail: Recorder) -> None:
        await speak_into(worker, audio_frames(QUESTION))
        await tail.wait_for(TTSAudioRawFrame, timeout=180)
        await tail.wait_for(LLMFullResponseEndFrame, timeout=180)
        await asyncio.sleep(3)  # the last sentences' audio

    head, tail = await run_pipeline([stt, aggregators.user(), llm, tts], drive, after=[aggregators.assistant()],
                                    out_rate=8000, timeout=300)
    assert not head.frames(ErrorFrame, up=True), head.frames(ErrorFrame, up=True)
    user = [m for m in context.get_messages() if m.get("role") == "user"]
    assert user and wer(QUESTION, user[0]["content"]) < 0.15, user
    audio = tail.frames(TTSAudioRawFrame)
    assert audio and {f.sample_rate for f in audio} == {8000}
    spoken = " ".join(f.text for f in tail.frames(TTSTextFrame))
    assert spoken.strip() and heard(whisper, audio).strip()


# --- failures -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["bad_key", "endpoint_down"])
async def test_a_failing_stt_endpoint_gives_an_error_frame_and_the_pipeline_keeps_running(
    server: LocalServer, failure: str
) -> None:
    if failure == "bad_key":
        broken = server.endpoint("stt", api_key="wrong-key", max_retries=0)
        category = ErrorCategory.AUTHENTICATION
    else:
        broken = Endpoint("stt", base_url=f"http://127.0.0.1:{free_port()}/v2", api_key=KEY, max_retries=0)
        category = ErrorCategory.CONNECTIVITY
    stt = RunPodSTTService(endpoint=broken)
    tts = RunPodTTSService(endpoint=server.endpoint("tts"))

    async def drive(worker: PipelineWorker, head: Recorder, tail: Recorder) -> None:
        await speak_into(worker, audio_frames("Hello there."))
        await head.wait_for(ErrorFrame, up=True, timeout=60)
        # Still running: the next frame goes through the failed service and gets spoken.
        await worker.queue_frame(TTSSpeakFrame("Still here."))
        await tail.wait_for(TTSAudioRawFrame, timeout=60)

    head, tail = await run_pipeline([VADProcessor(vad_analyzer=SileroVADAnalyzer()), stt, tts], drive)
    [error] = head.frames(ErrorFrame, up=True)
    assert error.category == category and "RunPod STT on endpoint 'stt'" in error.error
    assert "wrong-key" not in error.error and not tail.frames(TranscriptionFrame)
    assert tail.frames(TTSAudioRawFrame)


async def test_a_tts_endpoint_with_a_bad_key_gives_an_error_frame_and_the_pipeline_ends_normally(
    server: LocalServer,
) -> None:
    tts = RunPodTTSService(endpoint=server.endpoint("tts", api_key="wrong-key", max_retries=0))

    async def drive(worker: PipelineWorker, head: Recorder, tail: Recorder) -> None:
        await worker.queue_frame(TTSSpeakFrame("Hello."))
        await head.wait_for(ErrorFrame, up=True, timeout=60)

    head, tail = await run_pipeline([tts], drive)
    [error] = head.frames(ErrorFrame, up=True)
    assert error.category == ErrorCategory.AUTHENTICATION and not tail.frames(TTSAudioRawFrame)
    assert tail.frames(EndFrame), "the EndFrame went through: the pipeline ended on its own, not cancelled"


# --- the example phone bot, called the way Twilio calls it ---------------------------------------------


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("pipecat_phone_bot", REPO / "examples" / "pipecat_phone_bot.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def twilio_media(sid: str, mulaw: bytes, n: int) -> str:
    return json.dumps({"event": "media", "streamSid": sid, "sequenceNumber": str(n + 2),
                       "media": {"track": "inbound", "chunk": str(n + 1), "timestamp": str(n * 20),
                                 "payload": base64.b64encode(mulaw).decode()}})


async def test_example_phone_bot_answers_a_twilio_media_stream(
    server: LocalServer, whisper: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", server.base_url)
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "VOICEPOD_STT_ENDPOINT", "VOICEPOD_LLM_ENDPOINT",
                 "VOICEPOD_TTS_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    bot = load_example()

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bot.app), base_url="http://bot.example") as web:
        twiml = (await web.post("/twiml")).text
    assert '<Stream url="wss://bot.example/ws" />' in twiml

    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(bot.app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(uv.serve())
    while not uv.started:
        await asyncio.sleep(0.05)
    sid = "MZ00000000000000000000000000000000"
    heard_back: list[tuple[float, bytes]] = []

    async def quiet_for(seconds: float, timeout: float) -> None:
        """Wait for the bot's audio to start, then to pause for ``seconds``."""
        start, deadline = len(heard_back), time.monotonic() + timeout
        while len(heard_back) == start or time.monotonic() - heard_back[-1][0] < seconds:
            assert time.monotonic() < deadline, "the bot did not speak"
            await asyncio.sleep(0.05)

    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as call:
            await call.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            await call.send(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": sid, "start": {
                "streamSid": sid, "callSid": "CA0", "accountSid": "AC0", "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))

            async def listen() -> None:
                async for message in call:
                    event = json.loads(message)
                    if event.get("event") == "media":
                        heard_back.append((time.monotonic(), base64.b64decode(event["media"]["payload"])))

            listening = asyncio.create_task(listen())
            await quiet_for(1.5, timeout=120)  # the greeting
            greeting = len(heard_back)
            samples, rate = read_wav(espeak_wav(QUESTION, sample_rate=8000))
            mulaw = mulaw_encode(np.concatenate([samples, np.zeros(int(rate * 1.5), dtype=samples.dtype)]))
            for n, i in enumerate(range(0, len(mulaw), 160)):  # 20 ms frames, in real time, as Twilio sends
                await call.send(twilio_media(sid, mulaw[i:i + 160], n))
                await asyncio.sleep(0.02)
            await quiet_for(2.0, timeout=180)  # the reply
            listening.cancel()
    finally:
        uv.should_exit = True
        await serving

    def words(chunks: list[tuple[float, bytes]]) -> str:
        samples = mulaw_decode(b"".join(c for _, c in chunks))
        return " ".join(s.text for s in whisper.transcribe(resample(samples, 8000, 16000))[0])

    assert wer(bot.GREETING, words(heard_back[:greeting])) < 0.3
    assert words(heard_back[greeting:]).strip(), "no reply speech"


async def test_example_phone_bot_takes_only_twilios_signed_requests_when_a_token_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from voicepod.phone.signatures import sign
    from websockets.exceptions import InvalidStatus

    token = "0123456789abcdef0123456789abcdef"
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", token)
    bot = load_example()
    form = {"CallSid": "CA1", "From": "+15550100"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bot.app), base_url="http://bot.example") as web:
        assert (await web.post("/twiml", data=form)).status_code == 403
        forged = sign("not-the-token-not-the-token-0000", "https://bot.example/twiml", form)
        assert (await web.post("/twiml", data=form, headers={"X-Twilio-Signature": forged})).status_code == 403
        signed = sign(token, "https://bot.example/twiml", form)
        answer = await web.post("/twiml", data=form, headers={"X-Twilio-Signature": signed})
    assert answer.status_code == 200 and '<Stream url="wss://bot.example/ws" />' in answer.text

    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(bot.app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(uv.serve())
    try:
        while not uv.started:
            await asyncio.sleep(0.05)
        with pytest.raises(InvalidStatus) as refused:  # an unsigned upgrade: refused before any audio
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws"):
                pass
        assert refused.value.response.status_code == 403
        signature = sign(token, f"wss://127.0.0.1:{port}/ws")
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws",
                                      additional_headers={"X-Twilio-Signature": signature}) as socket:
            await socket.send(json.dumps({"event": "connected"}))  # accepted: the call may begin
    finally:
        uv.should_exit = True
        await serving
