"""Audio helpers used by client and workers alike: WAV, PCM16, G.711 mu-law and resampling.

Arrays are mono float32 in [-1, 1]. mu-law is written here with numpy because the standard library's
``audioop`` is gone from Python 3.13 and the codec is a few lines.
"""

from __future__ import annotations

import io
import wave

import numpy as np

MULAW_RATE = 8000  # G.711 as telephony (and Twilio media streams) carries it
_BIAS = 0x84
_BIAS14 = 0x21
_CLIP14 = 8159
_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] to little-endian signed 16-bit PCM bytes (values outside are clipped)."""
    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    return (clipped * 32767.0).round().astype("<i2").tobytes()


def pcm16_to_float(data: bytes) -> np.ndarray:
    """Little-endian signed 16-bit PCM bytes to float32 samples in [-1, 1]."""
    if len(data) % 2:
        raise ValueError("pcm16 data has an odd number of bytes")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def mulaw_encode(samples: np.ndarray) -> bytes:
    """Float samples to G.711 mu-law bytes (one byte per sample), bit-exact with the ITU reference coder."""
    pcm = (np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767.0).round().astype(np.int32)
    value = pcm >> 2  # G.711 codes 14-bit samples
    mask = np.where(value < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(value), _CLIP14) + _BIAS14
    segment = np.searchsorted(_SEGMENT_ENDS, magnitude)
    code = (segment << 4) | ((magnitude >> (segment + 1)) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)  # beyond the last segment: the largest code
    return (code ^ mask).astype(np.uint8).tobytes()


def mulaw_decode(data: bytes) -> np.ndarray:
    """G.711 mu-law bytes to float32 samples in [-1, 1]."""
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return (np.where(sign, -magnitude, magnitude) / 32768.0).astype(np.float32)


def write_wav(samples: np.ndarray, sample_rate: int) -> bytes:
    """Mono float samples to a 16-bit PCM WAV file's bytes."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(float_to_pcm16(samples))
    return buffer.getvalue()


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """A 16-bit PCM WAV file's bytes to (mono float32 samples, sample rate); channels are averaged."""
    with wave.open(io.BytesIO(data), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"only 16-bit PCM WAV is supported here, got {8 * wav.getsampwidth()}-bit")
        channels = wav.getnchannels()
        rate = wav.getframerate()
        samples = pcm16_to_float(wav.readframes(wav.getnframes()))
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return samples, rate


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample mono float samples with soxr (high quality); returns the input when the rates match."""
    if from_rate == to_rate:
        return np.asarray(samples, dtype=np.float32)
    try:
        import soxr
    except ImportError as exc:  # the thin client does not require soxr; workers do
        # A ModuleNotFoundError naming soxr, so the CLI can say which extra brings it.
        raise ModuleNotFoundError("resampling needs the 'soxr' package: pip install soxr", name="soxr") from exc
    return soxr.resample(np.asarray(samples, dtype=np.float32), from_rate, to_rate, quality="HQ").astype(
        np.float32
    )
