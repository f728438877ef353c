"""voicepod's Pipecat services on load-balancing endpoints: the same services, each given an ``Endpoint(URL)`` of a
worker in direct mode (``serve-local --direct``), in real Pipecat pipelines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

pytest.importorskip("pipecat", reason="needs the extra voicepod[pipecat]")

from pipecat.audio.vad.silero import SileroVADAnalyzer  # noqa: E402
from pipecat.frames.frames import (  # noqa: E402
    ErrorFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
)
from pipecat.pipeline.worker import PipelineWorker  # noqa: E402
from pipecat.processors.aggregators.llm_context import LLMContext  # noqa: E402
from pipecat.processors.aggregators.llm_response_universal import (  # noqa: E402
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from voicepod import registry  # noqa: E402
from voicepod.local import LocalServer  # noqa: E402
from voicepod.pipecat import RunPodLLMService, RunPodSTTService, RunPodTTSService  # noqa: E402

from .conftest import REPO  # noqa: E402
from .speech import wer  # noqa: E402
from .test_pipecat import (  # noqa: E402
    KEY,
    LONG_TEXT,
    QUESTION,
    Recorder,
    audio_frames,
    heard,
    job_recorder,
    run_pipeline,
    speak_into,
)
from .test_pipecat import whisper as whisper  # noqa: E402, F401 - its module fixture

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def direct() -> Iterator[LocalServer]:
    with LocalServer(registry.handlers(REPO), direct=True, api_key=KEY, ready_timeout_s=600) as running:
        yield running


async def test_bot_loop_on_direct_endpoints(direct: LocalServer, whisper: Any) -> None:
    stt = RunPodSTTService(endpoint=direct.endpoint("stt"), language="en")
    llm = RunPodLLMService(endpoint=direct.endpoint("llm"),
                           settings=RunPodLLMService.Settings(temperature=0, max_tokens=30))
    tts = RunPodTTSService(endpoint=direct.endpoint("tts"))
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
    assert "Paris" in next(m["content"] for m in context.get_messages() if m.get("role") == "assistant")
    audio = tail.frames(TTSAudioRawFrame)
    assert audio and {f.sample_rate for f in audio} == {8000} and heard(whisper, audio).strip()


async def test_an_interruption_closes_the_direct_tts_job(direct: LocalServer) -> None:
    tts = RunPodTTSService(endpoint=direct.endpoint("tts"))
    jobs = job_recorder(tts)
    busy_after: list[int] = []

    async def drive(worker: PipelineWorker, head: Recorder, tail: Recorder) -> None:
        await worker.queue_frame(TTSSpeakFrame(LONG_TEXT))
        await tail.wait_for(TTSAudioRawFrame)
        await worker.queue_frame(InterruptionFrame())
        deadline = time.monotonic() + 10
        async with httpx.AsyncClient(timeout=5) as client:
            while (busy := (await client.get(f"{direct.url('tts')}/ping")).json()["busy"]) and \
                    time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        busy_after.append(busy)

    await run_pipeline([tts], drive)
    assert busy_after == [0] and (await jobs[0].status())["status"] == "CANCELLED"
