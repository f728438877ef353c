"""Real speech for tests: known sentences spoken by the ``espeak-ng`` binary (Debian package ``espeak-ng``).

Shared by the STT, TTS and chain tests. Synthetic speech is clear enough for Whisper tiny.en to transcribe
nearly word for word, so a test can assert a low word error rate against the text it spoke.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from voicepod.audio import read_wav, resample, write_wav

ESPEAK_RATE = 22050  # espeak-ng always synthesises at this rate


def espeak_available() -> bool:
    """Whether the ``espeak-ng`` binary is on PATH (tests that need it can skip without it)."""
    return shutil.which("espeak-ng") is not None


def espeak_wav(
    text: str,
    path: str | Path | None = None,
    voice: str = "en-us",
    rate: int = 160,
    sample_rate: int | None = 16000,
) -> bytes:
    """Speak ``text`` with espeak-ng and return a mono 16-bit PCM WAV file's bytes.

    Args:
      text: What to say. Sentence punctuation gives natural pauses between sentences.
      path: Also write the WAV here, when given.
      voice: An espeak-ng voice name (``espeak-ng --voices`` lists them).
      rate: Speaking rate in words per minute (espeak-ng's default is 175).
      sample_rate: Resample to this rate (soxr); ``None`` keeps espeak-ng's native 22050 Hz.
    """
    with tempfile.TemporaryDirectory() as tmp:
        # -w writes a WAV with a correct header; --stdout leaves the length fields unset when piped.
        out = Path(tmp) / "speech.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(out), "--", text],
            check=True,
            capture_output=True,
            timeout=60,
        )
        data = out.read_bytes()
    if sample_rate is not None and sample_rate != ESPEAK_RATE:
        samples, native = read_wav(data)
        data = write_wav(resample(samples, native, sample_rate), sample_rate)
    if path is not None:
        Path(path).write_bytes(data)
    return data
