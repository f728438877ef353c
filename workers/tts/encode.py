"""Turn synthesized sentences into the byte chunks a job streams, in the format the caller asked for.

Formats (every chunk holds whole samples, so any chunk boundary is a sample boundary):
    pcm16: raw little-endian signed 16-bit mono PCM.
    wav: the same PCM, with a 44-byte WAV header at the start of the first chunk only. Its RIFF and data
        sizes are 0xFFFFFFFF, the streaming convention for "length unknown" that ffmpeg, browsers,
        libsndfile and Python's ``wave`` read to the end of the data. Concatenating every chunk's bytes
        in order therefore gives one playable WAV stream; ``voicepod.audio.read_wav`` reads it.
    mulaw: G.711 mu-law at 8 kHz, one byte per sample, no header (what Twilio media streams carry).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import get_args

import numpy as np
from voicepod.audio import MULAW_RATE, float_to_pcm16, mulaw_encode, resample
from voicepod.protocol import AudioFormat

FORMATS: tuple[str, ...] = get_args(AudioFormat)
_UNKNOWN_SIZE = 0xFFFFFFFF


def streaming_wav_header(sample_rate: int) -> bytes:
    """A mono 16-bit PCM WAV header whose sizes say "unknown length".

    Written by hand because the standard ``wave`` module only writes the sizes of frames it was given.
    """
    byte_rate = sample_rate * 2
    return (
        b"RIFF" + struct.pack("<I", _UNKNOWN_SIZE) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, byte_rate, 2, 16)
        + b"data" + struct.pack("<I", _UNKNOWN_SIZE)
    )


@dataclass
class ChunkEncoder:
    """Encodes one job's sentences, in order, into chunks of at most ``chunk_ms`` of audio.

    Args:
        format: One of :data:`FORMATS`.
        sample_rate: Output rate; ``None`` keeps the engine's own rate (mulaw is always 8000).
        chunk_ms: Longest audio a chunk holds, in milliseconds.
    """

    format: str
    sample_rate: int | None
    chunk_ms: int
    _header_sent: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")
        if self.format == "mulaw":
            self.sample_rate = MULAW_RATE

    def output_rate(self, engine_rate: int) -> int:
        return self.sample_rate or engine_rate

    def encode(self, samples: np.ndarray, engine_rate: int) -> tuple[list[bytes], int]:
        """Resample and encode one sentence; returns (chunks, number of output samples)."""
        rate = self.output_rate(engine_rate)
        audio = resample(samples, engine_rate, rate)
        step = max(1, rate * self.chunk_ms // 1000)
        chunks = []
        for start in range(0, len(audio), step):
            piece = audio[start : start + step]
            data = mulaw_encode(piece) if self.format == "mulaw" else float_to_pcm16(piece)
            if self.format == "wav" and not self._header_sent:
                data = streaming_wav_header(rate) + data
                self._header_sent = True
            chunks.append(data)
        return chunks, len(audio)
