"""Barge-in that tells a backchannel from an interruption (the smart detector's): what the call does while the
caller speaks over a reply.

Two signals, the one that comes first deciding: how long the caller has spoken (the turn detector's VAD, at once)
and what they said (an STT job on the overlapping audio, :func:`voicepod.phone.backchannel.classify_interjection`,
a few hundred milliseconds later on a CPU). An :class:`Overlap` follows one stretch of the caller's speech over a
reply:

- It starts when the detector's ``SpeechStarted`` comes (0.25 s of speech) while a reply is being made or plays, and
  submits an STT job on the speech so far. Nothing is cut yet: "uh-huh", "okay", "right" last 0.2-0.6 s.
- At ``cut_s`` of speech the reply is cut (:meth:`~voicepod.phone.playback.Playback.pause`: the line drops what it
  holds, the reply's jobs go on), unless the words have come back as a backchannel. Words that ask to stop
  ("wait", "stop", "no", "sorry"...) cut it as soon as they come back, however short the speech.
- At ``backchannel_max_s`` of speech it is an interruption whatever the words: the reply stops for good (its jobs
  cancelled, only what played kept in the history) and the speech is the caller's next turn.
- When the caller pauses, the whole stretch is transcribed and classified: an interruption stops the reply for good
  and the speech goes on as the caller's turn (the call starts it then); a backchannel, or no words at all (a
  cough), is no turn: the utterance is forgotten, and a reply that was cut resumes from the start of the sentence
  it was cut in (:meth:`~voicepod.phone.playback.Playback.resume`: which part of it the caller heard is unknown).

The thresholds' defaults are measured on the caller utterance set in the Piper voice (docs/turn-taking.md).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..agent import VoiceAgent
from ..errors import VoicepodError
from ..protocol import TranscriptDone
from .backchannel import Interjection, classify_interjection
from .line import Line
from .playback import LineClosed, Playback
from .tasks import TaskSet

log = logging.getLogger("voicepod.phone")

# Speech over a reply that cuts it when the words have not come back yet. Measured on the caller utterance set in the
# Piper voice (benchmarks/phone_turns.py, docs/turn-taking.md): no length tells both apart by 0.5 s. At 0.45 s, 80% of
# backchannels ("uh-huh", "okay", "I see"; 0.3-0.6 s of VAD speech) leave the reply uncut and interruptions are cut
# about 0.62 s after they start; at 0.3 s, 96% of interruptions are cut within 0.5 s but 23% of backchannels are left
# uncut. The longer one is kept because where STT is fast (a GPU: tens of milliseconds) the words of an interruption
# come back before it and cut sooner, while a shorter one would cut backchannels before their words could save them.
DEFAULT_CUT_S = 0.45
# Speech over a reply that makes it an interruption whatever its words: longer than every backchannel measured (0.58 s)
# with margin.
DEFAULT_BACKCHANNEL_MAX_S = 0.8
# Words that came back early (from the first 0.25 s of speech) cut only when the classifier is this sure: a word that
# asks to stop. Whisper makes a word of almost anything that short; a backchannel must not be cut for it.
EARLY_CUT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class BargeInSettings:
    """``cut_s``: seconds of the caller's speech over a reply that cut it (unless their words are a backchannel).
    ``backchannel_max_s``: seconds of speech that stop it for good whatever the words."""

    cut_s: float = DEFAULT_CUT_S
    backchannel_max_s: float = DEFAULT_BACKCHANNEL_MAX_S


def should_cut(speech_s: float, heard: Interjection | None, settings: BargeInSettings) -> bool:
    """Whether ``speech_s`` seconds of speech over a reply cut it, given what the words said so far (``heard``;
    None: no transcript yet)."""
    if heard is not None and heard.backchannel:
        return speech_s >= settings.backchannel_max_s
    return speech_s >= settings.cut_s


async def transcribe(agent: VoiceAgent, line: Line, audio: bytes, jobs: list[str]) -> str:
    """The transcript of ``audio`` (in the line's input format) by the agent's STT endpoint; the job's id is
    appended to ``jobs``."""
    async with agent.stt.submit(agent.stt_input(audio, line.input_format, line.input_rate)) as job:
        jobs.append(job.id)
        async for chunk in job.chunks():
            if isinstance(chunk, TranscriptDone):
                return chunk.text.strip()
    return ""


Verdict = Callable[[bool, bytes | None], Awaitable[None]]


class Overlap:
    """One stretch of the caller's speech over a reply. ``agent``, ``line``: for the STT jobs; ``playback``: the
    reply's (or the greeting's); ``stop``: stops the reply for good (the call's barge-in); ``verdict``: called once,
    with whether it was a backchannel and, for an interruption, the audio of the pause the caller is in, where the
    call should start their turn (None: they are talking); ``record``: what the call record's ``interjections``
    entry starts with (this fills in the rest)."""

    def __init__(self, agent: VoiceAgent, line: Line, playback: Playback, settings: BargeInSettings,
                 stop: Callable[[], Awaitable[None]], verdict: Verdict, record: dict[str, Any]):
        self.agent, self.line, self.playback, self.settings = agent, line, playback, settings
        self._stop, self._verdict = stop, verdict
        self.record = record | {"turn": playback.number, "speech_s": 0.0, "text": None, "verdict": None,
                                "reason": None, "cut": False, "resumed": False, "jobs": []}
        self.heard: Interjection | None = None
        self.decided = False
        self.paused_audio: bytes | None = None  # the pause the caller made, while the words are awaited
        self.ended: object | None = None  # the caller's turn confirmed before the words came back (the call's)
        self._tasks = TaskSet(lambda: f"barge-in over turn {playback.number}")

    def start(self, audio: bytes) -> None:
        """The caller's speech so far (``SpeechStarted``): transcribe it, for words that ask to stop."""
        self._tasks.spawn(self._words(audio, final=False), "early")

    async def step(self, speech_s: float) -> None:
        """After each window the detector scored: ``speech_s``, the caller's speech so far."""
        if self.decided:
            return
        self.record["speech_s"] = max(self.record["speech_s"], round(speech_s, 3))  # 0 once the utterance ended
        if speech_s >= self.settings.backchannel_max_s:
            await self._interruption(f"spoke {speech_s:.2f} s")
        elif not self.record["cut"] and should_cut(speech_s, self.heard, self.settings):
            await self._cut()

    def paused(self, audio: bytes) -> None:
        """The caller paused (the detector's ``Pause``; ``audio``: the utterance so far): classify all of it."""
        self.paused_audio = audio
        self._tasks.spawn(self._words(audio, final=True), "final")

    def resumed(self) -> None:
        """The caller spoke again after the pause: their words so far are not the whole of it."""
        if self.decided:  # its verdict may be on its way (a clear, cancels over HTTP): it must reach the call
            return
        self.paused_audio = None
        self._tasks.cancel("final")

    async def interrupt(self, reason: str) -> None:
        """Decide now: an interruption (the caller's turn ended without a pause to wait for words at)."""
        if not self.decided:
            await self._interruption(reason)

    async def close(self) -> None:
        """Stop its STT jobs (the call ends, or the overlap was decided)."""
        await self._tasks.close()

    async def _words(self, audio: bytes, final: bool) -> None:
        try:
            text = await transcribe(self.agent, self.line, audio, self.record["jobs"])
        except VoicepodError as exc:
            log.warning("barge-in: the STT job failed (%s): taken as an interruption", exc)
            text = None
        if self.decided:
            return
        # No transcript (the job failed): no reason to cut early; at the pause, the safe side is an interruption.
        heard = classify_interjection(text) if text is not None else Interjection(False, 0.0, "no transcript")
        self.record["text"] = text
        if not heard.backchannel and (final or heard.confidence >= EARLY_CUT_CONFIDENCE):
            await self._interruption(heard.reason)
        elif heard.backchannel:
            self.heard = heard
            if final:
                await self._backchannel(heard.reason)

    async def _cut(self) -> None:
        self.record["cut"] = True
        await self.playback.pause()

    async def _interruption(self, reason: str) -> None:
        self.decided = True
        self.record.update(verdict="interruption", reason=reason, cut=True)
        await self._stop()
        # The call starts the turn at the pause the caller is in (if they are: the words may come back while they
        # talk, or after their pause), as it would have without the words to wait for.
        await self._verdict(False, self.paused_audio)
        await self.close()

    async def _backchannel(self, reason: str) -> None:
        self.decided = True
        self.record.update(verdict="backchannel", reason=reason)
        if self.record["cut"]:
            with contextlib.suppress(LineClosed):
                await self.playback.resume()
            self.record["resumed"] = True
        await self._verdict(True, None)
        await self.close()
