"""The STT worker end to end: real espeak-ng speech, real Whisper tiny.en weights, through the local endpoint
emulator (the runpod SDK's own worker loop) and the voicepod client."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from voicepod import Endpoint, JobFailed
from voicepod.audio import float_to_pcm16, mulaw_encode, read_wav, resample, write_wav
from voicepod.local import LocalServer
from voicepod.protocol import SegmentChunk, TranscriptDone

from tests.speech import espeak_available, espeak_wav, wer
from tests.stt_util import Route, serve_routes
from tests.worker_memory import run_beyond_slots

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not espeak_available(), reason="needs the espeak-ng binary (Debian package espeak-ng)"),
]

HANDLER = Path(__file__).resolve().parents[1] / "workers" / "stt" / "handler.py"
MAX_BYTES = 3_000_000
MAX_SECONDS = 60

SHORT = (
    "The quick brown fox jumps over the lazy dog. "
    "Please call me back tomorrow morning. "
    "The weather today is sunny with a light breeze from the west."
)
# Two of Whisper's 30-second windows: segments of the first are decoded, and streamed, before the second.
LONG = " ".join(
    [
        SHORT,
        "Our meeting has been moved to the large room on the second floor.",
        "She bought apples, oranges and a loaf of bread at the market.",
        "The train to the city leaves every hour during the day.",
        "He forgot his umbrella at home and got wet in the rain.",
        "We will need more time to finish the project before the end of the month.",
        "Turn left at the next corner and the library is on your right.",
        "The children played in the garden until the sun went down.",
        "A cup of hot tea is the best way to start a cold winter morning.",
        "The doctor said that I should drink more water and sleep longer.",
    ]
)
HELLO = "Hello world."


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def short_wav() -> bytes:
    return espeak_wav(SHORT)


@pytest.fixture(scope="module")
def hello_wav() -> bytes:
    return espeak_wav(HELLO)


def _server(**env: str) -> LocalServer:
    return LocalServer(
        endpoints={"stt": HANDLER},
        env={"MAX_AUDIO_BYTES": str(MAX_BYTES), "MAX_AUDIO_SECONDS": str(MAX_SECONDS), **env},
        ready_timeout_s=180,
    )


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    """The production default: URLs to private and loopback hosts are refused."""
    with _server() as running:
        yield running


@pytest.fixture(scope="module")
def private_server() -> Iterator[LocalServer]:
    """A worker allowed to fetch from this machine's test HTTP server."""
    with _server(ALLOW_PRIVATE_URLS="1") as running:
        yield running


@pytest.fixture
async def stt(server: LocalServer) -> Any:
    async with server.endpoint("stt") as endpoint:
        yield endpoint


async def transcribe(endpoint: Endpoint, job_input: dict[str, Any]) -> tuple[list[SegmentChunk], TranscriptDone]:
    job = await endpoint.run(job_input)
    segments: list[SegmentChunk] = []
    async for chunk in job.chunks():
        if isinstance(chunk, SegmentChunk):
            segments.append(chunk)
        else:
            assert isinstance(chunk, TranscriptDone), chunk
            return segments, chunk
    raise AssertionError("the stream ended without a done chunk")


async def test_transcribes_speech_with_low_wer(stt: Endpoint, short_wav: bytes) -> None:
    segments, done = await transcribe(stt, {"audio_base64": b64(short_wav)})
    assert wer(SHORT, done.text) < 0.15, done.text
    assert segments and done.text == " ".join(s.text for s in segments)
    assert [s.seq for s in segments] == list(range(len(segments))) and done.seq == len(segments)
    assert done.language == "en"
    assert done.duration == pytest.approx(len(read_wav(short_wav)[0]) / 16000, abs=0.05)
    assert done.metrics.compute_s > 0 and done.metrics.first_chunk_s is not None


async def test_first_segment_arrives_before_the_job_finishes(stt: Endpoint) -> None:
    wav = espeak_wav(LONG)
    assert len(read_wav(wav)[0]) / 16000 > 35, "the clip must span two 30 s windows"
    job = await stt.run({"audio_base64": b64(wav)})
    chunks: list[Any] = []
    status_at_first: str | None = None
    async for chunk in job.chunks():
        chunks.append(chunk)
        if status_at_first is None:
            # Asked of the endpoint, not inferred from timings: the job's queue wait (a busy SDK worker loop takes
            # its next job up to 1 s late) and the chunk's trip would both skew a comparison of clocks.
            status_at_first = (await job.status())["status"]
    first, done = chunks[0], chunks[-1]
    assert isinstance(first, SegmentChunk) and isinstance(done, TranscriptDone)
    assert wer(LONG, done.text) < 0.15, done.text
    assert status_at_first == "IN_PROGRESS"
    assert done.metrics.first_chunk_s is not None and done.metrics.first_chunk_s < 0.8 * done.metrics.compute_s


async def test_word_timestamps(stt: Endpoint, hello_wav: bytes) -> None:
    segments, done = await transcribe(stt, {"audio_base64": b64(hello_wav), "word_timestamps": True})
    words = [w for s in segments for w in s.words or []]
    assert [w.word.strip(" .").lower() for w in words] == ["hello", "world"], words
    assert all(0 <= w.start <= w.end <= done.duration + 0.1 for w in words)
    assert words[0].end <= words[1].start + 0.01


async def test_without_timestamps_gives_one_segment_per_window(stt: Endpoint, short_wav: bytes) -> None:
    # What VoiceAgent asks for by default: the text, decoded faster, one segment per 30 s window.
    segments, done = await transcribe(stt, {"audio_base64": b64(short_wav), "without_timestamps": True})
    assert wer(SHORT, done.text) < 0.15, done.text
    assert len(segments) == 1 and segments[0].start == 0.0, segments


async def test_every_option_is_accepted_and_transcribes(stt: Endpoint, short_wav: bytes) -> None:
    _, done = await transcribe(
        stt,
        {
            "audio_base64": b64(short_wav),
            "language": "en",
            "task": "transcribe",
            "beam_size": 1,
            "temperature": 0.0,
            "initial_prompt": "A phone message about the weather.",
            "vad_filter": True,
            "hotwords": "breeze",
        },
    )
    assert wer(SHORT, done.text) < 0.15, done.text


# Telephony's 4 kHz bandwidth costs tiny.en accuracy on espeak's voice (the brown fox sentence comes back at
# about 30% WER even as plain 8 kHz PCM), so this clip is a phone call's kind of sentence, which it hears well.
PHONE = (
    "Hello, thank you for calling. I would like to change my appointment to next week. "
    "Please call me back tomorrow morning."
)


async def test_mulaw_8khz_telephony_audio(stt: Endpoint) -> None:
    samples, rate = read_wav(espeak_wav(PHONE, sample_rate=None))
    mulaw = mulaw_encode(resample(samples, rate, 8000))
    _, done = await transcribe(stt, {"audio_base64": b64(mulaw), "audio_format": "mulaw", "sample_rate": 8000})
    assert wer(PHONE, done.text) < 0.15, done.text
    assert done.duration == pytest.approx(len(mulaw) / 8000, abs=0.01)


async def test_raw_pcm16_at_native_rate(stt: Endpoint) -> None:
    samples, rate = read_wav(espeak_wav(HELLO, sample_rate=None))
    pcm = float_to_pcm16(samples)
    _, done = await transcribe(stt, {"audio_base64": b64(pcm), "audio_format": "pcm16", "sample_rate": rate})
    assert wer(HELLO, done.text) == 0, done.text


_SILENCE_TOO_LONG = write_wav(np.zeros((MAX_SECONDS + 5) * 8000, dtype=np.float32), 8000)

BAD_INPUTS: dict[str, tuple[dict[str, Any], str, str | None]] = {
    "invalid_base64": ({"audio_base64": "this is not base64!"}, "invalid_input", "audio_base64"),
    "undecodable_audio": ({"audio_base64": b64(b"not audio at all " * 200)}, "undecodable_audio", "audio_base64"),
    "empty_audio": ({"audio_base64": ""}, "empty_audio", "audio_base64"),
    "empty_wav": ({"audio_base64": b64(write_wav(np.zeros(0), 16000))}, "empty_audio", "audio_base64"),
    "too_long": ({"audio_base64": b64(_SILENCE_TOO_LONG)}, "input_too_large", "audio_base64"),
    "too_many_bytes": ({"audio_base64": b64(b"\0" * (MAX_BYTES + 1))}, "input_too_large", "audio_base64"),
    "too_long_mulaw": (
        {"audio_base64": b64(b"\xff" * (MAX_SECONDS + 5) * 8000), "audio_format": "mulaw"},
        "input_too_large",
        "audio_base64",
    ),
    "unknown_field": ({"audio_base64": "AAAA", "speed": 2}, "invalid_input", "speed"),
    "wrong_type": ({"audio_base64": "AAAA", "beam_size": "5"}, "invalid_input", "beam_size"),
    "bad_task": ({"audio_base64": "AAAA", "task": "summarise"}, "invalid_input", "task"),
    "zero_batch_size": ({"audio_base64": "AAAA", "batch_size": 0}, "invalid_input", "batch_size"),
    "words_without_timestamps": ({"audio_base64": "AAAA", "word_timestamps": True, "without_timestamps": True},
                                 "invalid_input", "without_timestamps"),
    "no_audio": ({"language": "en"}, "invalid_input", "audio_base64"),
    "both_audio_fields": ({"audio_base64": "AAAA", "audio_url": "http://example.com/a.wav"}, "invalid_input",
                          "audio_base64"),
    "pcm16_without_rate": ({"audio_base64": "AAAA", "audio_format": "pcm16"}, "invalid_input", "sample_rate"),
    "non_english_language": ({"audio_base64": "AAAA", "language": "fr"}, "invalid_input", "language"),
    "ftp_url": ({"audio_url": "ftp://example.com/a.wav"}, "url_forbidden", "audio_url"),
    "loopback_url_refused": ({"audio_url": "http://127.0.0.1:9/a.wav"}, "url_forbidden", "audio_url"),
    "metadata_url_refused": ({"audio_url": "http://169.254.169.254/latest/"}, "url_forbidden", "audio_url"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
async def test_bad_input_fails_the_job_and_the_worker_serves_the_next(
    stt: Endpoint, hello_wav: bytes, name: str
) -> None:
    job_input, code, field = BAD_INPUTS[name]
    with pytest.raises(JobFailed) as failed:
        await transcribe(stt, job_input)
    assert (failed.value.code, failed.value.field) == (code, field), failed.value.message
    job = stt.job(failed.value.job_id)
    assert (await job.status())["status"] == "FAILED"
    _, done = await transcribe(stt, {"audio_base64": b64(hello_wav)})
    assert wer(HELLO, done.text) == 0, done.text


@pytest.mark.parametrize("vad_filter", [False, True])
async def test_batch_size_decodes_a_long_file_in_batches(stt: Endpoint, vad_filter: bool) -> None:
    wav = espeak_wav(LONG)
    segments, done = await transcribe(stt, {"audio_base64": b64(wav), "batch_size": 4, "vad_filter": vad_filter})
    assert wer(LONG, done.text) < 0.15, done.text
    assert segments and done.text == " ".join(s.text for s in segments)
    starts = [s.start for s in segments]
    assert starts == sorted(starts) and segments[-1].end > 30


async def test_concurrent_jobs_share_the_worker(stt: Endpoint, short_wav: bytes, hello_wav: bytes) -> None:
    # MAX_CONCURRENCY defaults to 2 on a CPU: the hello job runs beside the long one instead of behind it.
    long = asyncio.ensure_future(transcribe(stt, {"audio_base64": b64(espeak_wav(LONG))}))
    await asyncio.sleep(0.5)
    _, hello = await transcribe(stt, {"audio_base64": b64(hello_wav)})
    assert wer(HELLO, hello.text) == 0, hello.text
    assert not long.done(), "the short job should not have waited for the long one"
    _, done = await long
    assert wer(LONG, done.text) < 0.15, done.text


async def test_memory_follows_max_concurrency_not_the_jobs_submitted(server: LocalServer, stt: Endpoint,
                                                                     short_wav: bytes) -> None:
    # MAX_CONCURRENCY defaults to 2 on a CPU. At 6 (checked 3 times), 6 such jobs peaked 200-280 MiB above 2 (each
    # of CTranslate2's workers keeps its own buffers); at 2, under 10 MiB above.
    job = {"audio_base64": b64(short_wav)}
    results = await run_beyond_slots(server, stt, lambda: transcribe(stt, job), slots=2, slack_mib=48)
    for segments, done in results:
        assert wer(SHORT, done.text) < 0.15, done.text
        assert done.text == " ".join(s.text for s in segments)


async def test_audio_url_fetched_when_private_hosts_are_allowed(private_server: LocalServer, short_wav: bytes) -> None:
    routes = {"/speech.wav": Route(short_wav), "/moved": Route(status=302, location="/speech.wav")}
    with serve_routes(routes) as base:
        async with private_server.endpoint("stt") as stt:
            _, done = await transcribe(stt, {"audio_url": f"{base}/moved"})
            assert wer(SHORT, done.text) < 0.15, done.text

            with pytest.raises(JobFailed) as failed:
                await transcribe(stt, {"audio_url": f"{base}/missing.wav"})
            assert (failed.value.code, failed.value.field) == ("fetch_failed", "audio_url")

            _, done = await transcribe(stt, {"audio_url": f"{base}/speech.wav"})
            assert wer(SHORT, done.text) < 0.15, done.text


async def test_loopback_url_refused_by_default(stt: Endpoint, short_wav: bytes) -> None:
    with serve_routes({"/speech.wav": Route(short_wav)}) as base:
        with pytest.raises(JobFailed) as failed:
            await transcribe(stt, {"audio_url": f"{base}/speech.wav"})
    assert failed.value.code == "url_forbidden" and "ALLOW_PRIVATE_URLS" in failed.value.message


def _encode(samples: np.ndarray, rate: int, container: str, codec: str) -> bytes:
    """Encode speech with PyAV (its wheels carry FFmpeg's mp3 and opus encoders) into a compressed file."""
    import io

    import av

    codec_rate = 48000 if codec == "libopus" else rate
    samples = resample(samples, rate, codec_rate)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as output:
        stream = output.add_stream(codec, rate=codec_rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(
            np.frombuffer(float_to_pcm16(samples), dtype="<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = codec_rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            output.mux(packet)
    return buffer.getvalue()


@pytest.mark.parametrize("container, codec", [("mp3", "libmp3lame"), ("webm", "libopus")])
async def test_compressed_files_transcribe(stt: Endpoint, container: str, codec: str) -> None:
    samples, rate = read_wav(espeak_wav(SHORT, sample_rate=None))
    data = _encode(samples, rate, container, codec)
    _, done = await transcribe(stt, {"audio_base64": b64(data)})
    assert wer(SHORT, done.text) < 0.15, done.text
    assert done.duration == pytest.approx(len(samples) / rate, abs=0.2)
