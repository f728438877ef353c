"""TTS worker: text in, speech out, streamed sentence by sentence as base64 audio chunks.

Input (all but ``text`` optional)::

    {"text": "Hello there. How are you?", "voice": "en_US-joe-medium", "speed": 1.0,
     "format": "pcm16" | "wav" | "mulaw", "sample_rate": 16000, "chunk_ms": 200, "normalize": true}

The text is cut into sentences (list items and headings are pieces of their own) and, unless ``normalize`` is
false, each is rewritten for the ear first (``workers/tts/speech_text.py``: markdown, emoji, numbers, prices,
times, dates, addresses), here in the worker so that every client gets it: the queue and direct routes,
Pipecat, plain API calls.

Output: ``{"type": "audio", "sentence": i, "format", "sample_rate", "audio": base64}`` chunks of at most
``chunk_ms`` each, a sentence's audio leaving as soon as it is synthesized, then
``{"type": "done", "kind": "speech", "duration", "sentences", "metrics": {"time_to_first_audio", "rtf", ...}}``.
See ``workers/tts/encode.py`` for how the formats concatenate and ``workers/tts/engine.py`` for the
environment that picks the engine and voice.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from voicepod.protocol import AudioChunk, SpeechDone, SpeechMetrics, SpeechRequest
from voicepod.sentences import is_speakable, split_sentences

from workers.common.capacity import max_concurrency
from workers.common.errors import INPUT_TOO_LARGE, INVALID_INPUT, WorkerError
from workers.common.models import configure_logging, cuda_available, timed_load
from workers.common.sdk import start_worker
from workers.common.stream import report_load, serve_job
from workers.common.threads import iterate_in_thread
from workers.tts.encode import ChunkEncoder
from workers.tts.engine import load_engine
from workers.tts.speech_text import speech_text

configure_logging()
ENGINE, _load_s = timed_load("speech engine", load_engine)
report_load(_load_s)

MAX_TEXT_CHARS = int(os.environ.get("MAX_TEXT_CHARS", "5000"))
# Per-sentence jobs of one reply arrive together, and several calls speak at once: jobs synthesize in parallel
# threads on the one loaded voice (the engines take no lock).
CONCURRENCY = max_concurrency(cpu=4, gpu=8, on_gpu=cuda_available())


def _check(request: SpeechRequest) -> list[str]:
    if len(request.text) > MAX_TEXT_CHARS:
        raise WorkerError(
            INPUT_TOO_LARGE, f"text is {len(request.text)} characters, over the cap of {MAX_TEXT_CHARS}", "text"
        )
    written = [s for s in split_sentences(request.text) if is_speakable(s)]
    if not written:
        raise WorkerError(INVALID_INPUT, "text has no words to speak", "text")
    if not request.normalize:
        sentences = written
    else:
        # Cut first, on the text as written (markdown's lines say where items end), then rewrite each piece. A piece
        # with nothing to say once rewritten (a footnote mark, emoji) is left out: a reply's piece is not an error.
        sentences = [said for said in map(speech_text, written) if is_speakable(said)]
    if request.voice is not None and request.voice not in ENGINE.voices:
        raise WorkerError(INVALID_INPUT, f"unknown voice {request.voice!r}; voices: {list(ENGINE.voices)}", "voice")
    if request.format == "mulaw" and request.sample_rate not in (None, 8000):
        raise WorkerError(INVALID_INPUT, "mulaw is 8000 Hz only", "sample_rate")
    return sentences


async def work(request: SpeechRequest) -> AsyncIterator[AudioChunk | SpeechDone]:
    started = time.perf_counter()  # the first audio waits for the text's cutting and rewriting too
    sentences = _check(request)
    text_s = time.perf_counter() - started
    encoder = ChunkEncoder(request.format, request.sample_rate, request.chunk_ms)
    synthesis_s = 0.0

    def produce(stop: threading.Event) -> Iterator[tuple[int, list[bytes], int, int]]:
        nonlocal synthesis_s
        for index, sentence in enumerate(sentences):
            if stop.is_set():  # cancelled: don't synthesize what nobody will hear
                return
            begun = time.perf_counter()
            samples, engine_rate = ENGINE.synthesize(sentence, request.voice, request.speed)
            chunks, count = encoder.encode(samples, engine_rate)
            synthesis_s += time.perf_counter() - begun
            yield index, chunks, count, encoder.output_rate(engine_rate)

    first_audio_s: float | None = None
    duration = 0.0
    async for index, chunks, count, rate in iterate_in_thread(produce):
        duration += count / rate
        for data in chunks:
            if first_audio_s is None:
                first_audio_s = time.perf_counter() - started
            yield AudioChunk(sentence=index, format=request.format, sample_rate=rate,
                             audio=base64.b64encode(data).decode("ascii"))
    yield SpeechDone(
        duration=round(duration, 4),
        sentences=len(sentences),
        metrics=SpeechMetrics(
            time_to_first_audio=round(first_audio_s, 4) if first_audio_s is not None else None,
            synthesis_s=round(synthesis_s, 4),
            text_s=round(text_s, 5),
            rtf=round(synthesis_s / duration, 4) if duration else None,
            engine=ENGINE.name,
        ),
    )


async def handler(job: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    async for chunk in serve_job(job, SpeechRequest, work):
        yield chunk


if __name__ == "__main__":
    # A short sentence, resampled into a WAV as callers ask for it: onnxruntime's first run of the voice and the
    # resampler's first call are slow.
    start_worker(handler, concurrency=CONCURRENCY, warm_up={"text": "Hello.", "format": "wav", "sample_rate": 16000})
