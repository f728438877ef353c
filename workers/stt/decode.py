"""A job's audio bytes to what Whisper takes: 16 kHz mono float32 samples, within the worker's caps.

Containers (wav, mp3, ogg/opus, flac, webm, ...) go through faster-whisper's PyAV decoder. Raw telephony audio
(headerless PCM16 or G.711 mu-law, as a Twilio media stream sends it) has no header for PyAV to probe, so the
caller names its format and rate and it is converted with voicepod.audio.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from dataclasses import dataclass

import av
import numpy as np
from faster_whisper.audio import decode_audio
from voicepod.audio import mulaw_decode, pcm16_to_float, resample
from voicepod.protocol import ErrorCode, RawAudioFormat

from workers.common.errors import INPUT_TOO_LARGE, INVALID_INPUT, WorkerError

SAMPLE_RATE = 16000  # what Whisper's feature extractor expects

UNDECODABLE_AUDIO = ErrorCode.UNDECODABLE_AUDIO
EMPTY_AUDIO = ErrorCode.EMPTY_AUDIO



@dataclass(frozen=True)
class AudioLimits:
    """Caps on one job's audio.

    Attributes:
      max_bytes: Largest encoded audio accepted, after base64 decoding or as downloaded.
      max_seconds: Longest audio accepted, in seconds.
    """

    max_bytes: int = 100 * 1024 * 1024
    max_seconds: float = 3600.0

    @classmethod
    def from_env(cls) -> AudioLimits:
        """Read ``MAX_AUDIO_BYTES`` and ``MAX_AUDIO_SECONDS``, keeping the defaults for those unset."""
        default = cls()
        return cls(
            max_bytes=int(os.environ.get("MAX_AUDIO_BYTES", default.max_bytes)),
            max_seconds=float(os.environ.get("MAX_AUDIO_SECONDS", default.max_seconds)),
        )


def decode_base64(text: str, limits: AudioLimits, field: str = "audio_base64") -> bytes:
    """Decode standard base64 (whitespace allowed), refusing it before decoding when it is over the cap."""
    if len(text) * 3 // 4 > limits.max_bytes + 3:
        raise WorkerError(INPUT_TOO_LARGE, f"audio is over the {limits.max_bytes}-byte limit", field)
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WorkerError(INVALID_INPUT, f"{field} is not valid base64: {exc}", field) from None
    if len(data) > limits.max_bytes:
        raise WorkerError(INPUT_TOO_LARGE, f"audio is over the {limits.max_bytes}-byte limit", field)
    return data


def decode_audio_bytes(
    data: bytes,
    limits: AudioLimits,
    audio_format: RawAudioFormat | None = None,
    sample_rate: int | None = None,
    field: str = "audio_base64",
) -> np.ndarray:
    """Decode one job's audio to 16 kHz mono float32.

    Args:
      data: The audio bytes: a container file, or raw samples when ``audio_format`` is given.
      limits: The caps to enforce.
      audio_format: ``pcm16`` (little-endian signed 16-bit) or ``mulaw`` (G.711) for raw audio; ``None`` to
        let PyAV detect the container.
      sample_rate: The rate of raw audio, in Hz (required with ``audio_format``).
      field: The input field the bytes came from, named in errors.
    """
    if not data:
        raise WorkerError(EMPTY_AUDIO, "the audio is empty", field)
    if audio_format is None:
        samples = _decode_container(data, limits, field)
    else:
        if sample_rate is None:
            raise WorkerError(INVALID_INPUT, "sample_rate is required with audio_format", "sample_rate")
        samples = _decode_raw(data, audio_format, sample_rate, limits, field)
    if samples.size == 0:
        raise WorkerError(EMPTY_AUDIO, "the audio has no samples", field)
    _check_length(samples.size / SAMPLE_RATE, limits, field)
    return samples


def _check_length(seconds: float, limits: AudioLimits, field: str) -> None:
    if seconds > limits.max_seconds:
        raise WorkerError(
            INPUT_TOO_LARGE, f"audio is {seconds:.1f} s long, over the {limits.max_seconds:g} s limit", field
        )


def _decode_raw(
    data: bytes, audio_format: RawAudioFormat, sample_rate: int, limits: AudioLimits, field: str
) -> np.ndarray:
    bytes_per_sample = 2 if audio_format == "pcm16" else 1
    _check_length(len(data) / bytes_per_sample / sample_rate, limits, field)
    if audio_format == "pcm16":
        if len(data) % 2:
            raise WorkerError(UNDECODABLE_AUDIO, "pcm16 audio has an odd number of bytes", field)
        samples = pcm16_to_float(data)
    else:
        samples = mulaw_decode(data)
    return resample(samples, sample_rate, SAMPLE_RATE)


def _decode_container(data: bytes, limits: AudioLimits, field: str) -> np.ndarray:
    # A small compressed file can declare hours of audio: refuse it from its header before decoding it all.
    # The decoded length is checked again afterwards, since a header may lie or say nothing.
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise WorkerError(UNDECODABLE_AUDIO, "the file has no audio stream", field)
            if container.duration is not None:
                _check_length(container.duration / av.time_base, limits, field)
        return decode_audio(io.BytesIO(data), sampling_rate=SAMPLE_RATE)
    except WorkerError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever PyAV makes of the caller's bytes, they are the fault
        raise WorkerError(UNDECODABLE_AUDIO, f"cannot decode the audio: {type(exc).__name__}: {exc}", field) from None
