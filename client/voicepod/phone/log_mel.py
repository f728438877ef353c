"""Whisper's 80-bin log-mel features, in numpy: what a Whisper encoder (and the Smart Turn model built on one)
reads.

Written here because no well-kept package computes them without a heavy dependency: transformers'
``WhisperFeatureExtractor`` is the reference (and what the tests compare with), but the phone extra must not pull
in transformers, and librosa brings numba and scipy for one filterbank. The steps follow that reference exactly:
a waveform normalised to zero mean and unit variance (Smart Turn's extractor does this; plain Whisper does not),
a centred short-time Fourier transform (400-sample periodic Hann window, hop 160, reflect padding), its power
projected on 80 Slaney-normalised mel filters up to 8 kHz, log10 with a floor, clamped to 8 decades under the
maximum and scaled by ``(x + 4) / 4``.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 80
_LOG_FLOOR = 1e-10
_NORMALISE_EPS = 1e-7


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear (3 mels per 200 Hz) below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    log_step = np.log(6.4) / 27.0
    return np.where(hz < 1000.0, 3.0 * hz / 200.0, 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) / log_step)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    log_step = np.log(6.4) / 27.0
    return np.where(mel < 15.0, 200.0 * mel / 3.0, 1000.0 * np.exp(log_step * (mel - 15.0)))


def mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Triangular filters, shape ``(n_fft // 2 + 1, n_mels)``, evenly spaced in mels from 0 Hz to half of
    ``sample_rate``, each scaled to unit area (Slaney's normalisation)."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2))
    bins = np.linspace(0, sample_rate // 2, n_fft // 2 + 1)[:, None]
    low, centre, high = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins - low) / (centre - low)
    falling = (high - bins) / (high - centre)
    return np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (high - low))


_FILTERS = mel_filters()
_WINDOW = np.hanning(N_FFT + 1)[:-1]  # periodic, as torch.hann_window and the reference use


def log_mel(samples: np.ndarray, normalise: bool = True) -> np.ndarray:
    """Log-mel features of 16 kHz mono audio, shape ``(80, len(samples) // 160)``, float32.

    Args:
        samples: Float samples in [-1, 1] at 16 kHz, already cut or padded to the window the model reads
            (Smart Turn: exactly 8 s).
        normalise: Scale the waveform to zero mean and unit variance first (Smart Turn's features do).
    """
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1 or x.size < N_FFT:
        raise ValueError(f"want mono audio of at least {N_FFT} samples, got shape {x.shape}")
    if normalise:
        x = (x - x.mean()) / np.sqrt(x.var() + _NORMALISE_EPS)
    padded = np.pad(x.astype(np.float64), N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    power = np.abs(np.fft.rfft(frames * _WINDOW, axis=-1)) ** 2  # (frames, bins)
    log = np.log10(np.maximum(power @ _FILTERS, _LOG_FLOOR)).T[:, :-1]  # the reference drops the last frame
    log = np.maximum(log, log.max() - 8.0)
    return ((log + 4.0) / 4.0).astype(np.float32)
