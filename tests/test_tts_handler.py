"""The TTS handler in this process, with the real Piper voice, timing each synthesize call: audio streams out
sentence by sentence, and a consumer that stops early stops the synthesis."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from typing import Any

import numpy as np
import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs the espeak-ng binary"),
]

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please call me back tomorrow morning before the meeting starts.",
    "The weather today is sunny with a light breeze from the west.",
    "Our meeting has been moved to the large room on the second floor.",
    "She bought apples, oranges and a loaf of bread at the market.",
    "The train to the city leaves every hour during the day.",
]


class Recording:
    """The worker's real engine, with when each synthesize call started and ended."""

    def __init__(self, engine: Any):
        self._engine = engine
        self.name = engine.name
        self.default_voice = engine.default_voice
        self.voices = engine.voices
        self.calls: list[tuple[str, float, float]] = []
        self._lock = threading.Lock()

    def synthesize(self, text: str, voice: str | None = None, speed: float = 1.0) -> tuple[np.ndarray, int]:
        started = time.monotonic()
        result = self._engine.synthesize(text, voice, speed)
        with self._lock:
            self.calls.append((text, started, time.monotonic()))
        return result


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> Recording:
    from workers.tts import handler

    engine = Recording(handler.ENGINE)
    monkeypatch.setattr(handler, "ENGINE", engine)
    return engine


async def test_first_audio_chunk_arrives_before_the_last_sentence_is_synthesized(recording: Recording) -> None:
    from workers.tts.handler import handler

    text = " ".join(SENTENCES[:4])
    first_audio_at = None
    chunks = []
    async for chunk in handler({"id": "order", "input": {"text": text}}):
        chunks.append(chunk)
        if chunk["type"] == "audio" and first_audio_at is None:
            first_audio_at = time.monotonic()
    assert chunks[-1]["type"] == "done" and chunks[-1]["sentences"] == 4
    assert [c[0] for c in recording.calls] == SENTENCES[:4]
    last_started = recording.calls[-1][1]
    assert first_audio_at is not None and first_audio_at < last_started


async def test_stopping_the_stream_stops_synthesis(recording: Recording) -> None:
    from workers.tts.handler import handler

    stream = handler({"id": "cancel", "input": {"text": " ".join(SENTENCES)}})
    first = await anext(stream)
    assert first["type"] == "audio"
    await stream.aclose()  # what the SDK does when the job is cancelled
    # Long enough for all six sentences to be synthesized (about 2.5 s on 2 cores) had nothing stopped them.
    await asyncio.sleep(3.0)
    assert len(recording.calls) <= 3 < len(SENTENCES)



class CountingSession:
    """A Piper voice's real onnxruntime session, counting the runs in progress at once."""

    def __init__(self, session: Any):
        self._session = session
        self.running = 0
        self.peak = 0
        self._lock = threading.Lock()

    def run(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            return self._session.run(*args, **kwargs)
        finally:
            with self._lock:
                self.running -= 1


async def test_concurrent_jobs_synthesize_at_the_same_time_on_one_voice(
    recording: Recording, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.tts.handler import handler

    voice = recording._engine._voices[recording.default_voice]
    session = CountingSession(voice._session)
    monkeypatch.setattr(voice, "_session", session)

    async def job(index: int) -> list[dict[str, Any]]:
        text = " ".join(SENTENCES[2 * index : 2 * index + 2])
        return [chunk async for chunk in handler({"id": f"job-{index}", "input": {"text": text}})]

    results = await asyncio.gather(*(job(i) for i in range(3)))
    for index, chunks in enumerate(results):
        assert chunks[-1]["type"] == "done" and chunks[-1]["sentences"] == 2
        assert [c["seq"] for c in chunks] == list(range(len(chunks)))
        assert sorted({c["sentence"] for c in chunks[:-1]}) == [0, 1], index
    assert sorted(c[0] for c in recording.calls) == sorted(SENTENCES)
    # The voice took no turns: onnxruntime ran several jobs' sentences at the same time.
    assert session.peak > 1
