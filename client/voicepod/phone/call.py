"""One call: the caller's events in, through turn-taking, each turn answered by the call's VoiceAgent, the reply
played down the line, barge-in, and the call's record.

A :class:`Call` wires its owners: :class:`~voicepod.phone.turn_taking.TurnTaking` (when a turn begins, is
confirmed or dropped, when the caller barges in), an :class:`~voicepod.phone.answer.Answer` per turn (the reply
into its playback and record), the :class:`~voicepod.phone.playback.Player` (what goes down the line and what
played). It sees caller events (:mod:`voicepod.phone.line`), never a line's frames, and awaits nothing long:
answers (and the greeting) run as tasks, one at a time, so the caller is heard (and barge-in too) while a reply
plays.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from ..agent import VoiceAgent
from .answer import Answer, greet
from .barge_in import BargeInSettings, Overlap
from .end_of_turn import EndOfTurnSettings
from .line import CallerAudio, CallerEvent, CallStarted, Digit, Line, Played, Skipped
from .playback import Playback, Player
from .records import CallRecord, TurnRecord, now_iso
from .tasks import TaskSet
from .turn_judge import TurnJudge
from .turn_model import TurnModel
from .turn_taking import (
    MAX_SILENCE,
    MAX_UTTERANCE,
    BargeIn,
    Begin,
    Confirm,
    Continue,
    Drop,
    Speculate,
    TurnAction,
    TurnTaking,
)
from .vad import TurnDetector, TurnSettings

log = logging.getLogger("voicepod.phone")

DEFAULT_GREETING = "Hello! How can I help?"
APOLOGY = "Sorry, something went wrong on my side. Could you say that again?"
# The history a call's agent keeps: the latest messages only, so a long call stays within the LLM's context (and
# its memory bounded). 24 messages are 12 exchanges, more than a phone call usually needs to look back.
HISTORY_MESSAGES = 24
TURN_DETECTORS = ("smart", "silence")
# The smart detector's longest wait, when the turn model keeps saying "not done": above the 0.7 s pause of the
# unfinished utterances measured (docs/turn-taking.md) with room for the VAD's lag; every "not done" at a turn's
# real end costs all of it, so no longer.
DEFAULT_MAX_SILENCE_S = 1.0


@dataclass
class CallSettings:
    """``greeting``: said when the call starts ("" for none). ``apology``: said when a stage of a turn fails.
    ``turn``: the turn detector's settings. ``speculate``: start each turn at the caller's first short pause
    (``turn.pause_s``), its reply held until the end of the turn confirms it (see
    :mod:`voicepod.phone.turn_taking`); always on with the smart detector. ``turn_detector``: ``smart`` (the turn
    model and the transcript decide at each pause, ``max_silence_s`` the longest wait; barge-in tells a backchannel
    from an interruption, ``barge_in``) or ``silence`` (the turn ends after ``turn.end_silence_s`` of silence and any
    ``turn.min_speech_s`` of speech over a reply cuts it). ``end_of_turn``: the smart detector's thresholds."""

    greeting: str = DEFAULT_GREETING
    apology: str = APOLOGY
    turn: TurnSettings = field(default_factory=TurnSettings)
    speculate: bool = True
    turn_detector: str = "smart"
    max_silence_s: float = DEFAULT_MAX_SILENCE_S
    end_of_turn: EndOfTurnSettings = field(default_factory=EndOfTurnSettings)
    barge_in: BargeInSettings = field(default_factory=BargeInSettings)

    @property
    def smart(self) -> bool:
        return self.turn_detector == "smart"

    def detector_settings(self) -> TurnSettings:
        """What the turn detector runs with: the smart detector's silence is its longest wait."""
        return replace(self.turn, end_silence_s=self.max_silence_s) if self.smart else self.turn


class Call:
    """One call's session. ``agent``: this call's own :class:`VoiceAgent` (in the line's output format, with
    ``confirm_playback``); ``line``: its serializer; ``send``: sends one frame down the line; ``detector``: the
    turn detector (a new one with ``settings.detector_settings()`` by default); ``turn_model``: the server's
    :class:`~voicepod.phone.turn_model.TurnModel`, which the smart detector needs."""

    def __init__(self, agent: VoiceAgent, line: Line, send: Callable[[str | bytes], Awaitable[None]],
                 settings: CallSettings | None = None, detector: TurnDetector | None = None,
                 turn_model: TurnModel | None = None):
        self.agent = agent
        self.line = line
        self.settings = settings or CallSettings()
        if self.settings.turn_detector not in TURN_DETECTORS:
            raise ValueError(f"turn_detector must be one of {TURN_DETECTORS}, not {self.settings.turn_detector!r}")
        if self.settings.smart and turn_model is None:
            raise ValueError("the smart turn detector needs the server's TurnModel")
        detector = detector or TurnDetector(self.settings.detector_settings(), encoding=line.input_format,
                                            sample_rate=line.input_rate)
        self.turns = TurnTaking(detector, self.settings.speculate, smart=self.settings.smart)
        self.judge = TurnJudge(turn_model, self.settings.end_of_turn) if turn_model is not None else None
        self.player = Player(line, send)
        self.record = CallRecord()
        self.started = False
        self._answers: list[Answer] = []  # the confirmed ones, in order
        self._speculation: Answer | None = None
        self._judging: asyncio.Task[None] | None = None  # the smart detector's decision on the speculation
        self._overlap: Overlap | None = None  # the caller speaking over a reply (smart detector)
        self._greeting: Playback | None = None
        self._last: asyncio.Task[None] | None = None  # the greeting's or the latest answer's: the next waits for it
        self._tasks = TaskSet(lambda: f"call {self.record.call_sid}")
        self._ended = False

    @property
    def replying(self) -> bool:
        """Whether a reply (or the greeting) is being made or is still playing (its marks not all back)."""
        current = self.player.current
        return self._busy() or (current is not None and current.playing)

    async def on(self, event: CallerEvent) -> None:
        """Act on one event from the caller's side."""
        if isinstance(event, CallerAudio):
            await self.hear(event.audio)
        elif isinstance(event, Played):
            self.player.marked(event.name)
        elif isinstance(event, CallStarted):
            self.begin(event)
        elif isinstance(event, Digit) and len(self.record.dtmf) < 1000:
            self.record.dtmf.append(event.digit)
        elif isinstance(event, Skipped):
            self.record.ignored_frames += 1
            if self.record.ignored_frames <= 5:
                log.warning("call %s: frame ignored: %s", self.record.call_sid or "(not started)", event.message)

    def begin(self, started: CallStarted) -> None:
        """The call starts (the greeting begins)."""
        self.started = True
        self.record.call_sid, self.record.stream_sid = started.call_sid, started.stream_sid
        self.record.custom_parameters = started.custom_parameters
        log.info("call %s: started (stream %s)", started.call_sid, started.stream_sid)
        if self.settings.greeting:
            self._greeting = self.player.current = self.player.playback(0)
            self._greeting.release()
            self._last = self._tasks.spawn(greet(self.agent, self._greeting, self.settings.greeting, self.record))

    async def hear(self, audio: bytes) -> None:
        """The caller's audio (in the line's input format, any length), as it arrives."""
        if self.turns.continuable and self._answers[-1].playback.sent_audio:
            self.turns.settle()  # the early-ended turn's reply is being heard: it stands
        for action in self.turns.feed(audio):
            await self._act(action)
        if self._overlap is not None:
            await self._overlap.step(self.turns.detector.speech_s)
        if self._answers:
            # While the VAD hears the caller after a turn ended early, its reply waits: they may be going on.
            self._answers[-1].playback.hold(self.turns.continuable and self.turns.detector.hearing)

    async def _act(self, action: TurnAction) -> None:
        if isinstance(action, BargeIn):
            await self._talking()
        elif isinstance(action, Continue):
            self._continue()
        elif isinstance(action, Speculate):
            if self._overlap is not None:
                self._overlap.paused(action.audio)  # over a reply, the words decide first whether it is a turn
            else:
                self._speculate(action.audio)
        elif isinstance(action, Drop):
            if self._overlap is not None:
                self._overlap.resumed()
            self._drop()
        elif isinstance(action, Confirm) and self._overlap is not None:
            self._overlap.ended = action  # the utterance ended before its words came back: they decide first
        elif isinstance(action, Begin) and self._overlap is not None:
            overlap = self._overlap
            await overlap.interrupt("its turn ended")  # its verdict ends the overlap, unless one is on its way
            if self._overlap is overlap:
                self._overlap = None  # the turn begins now, not when that verdict comes
            await self._act(action)
        elif isinstance(action, Confirm):
            if (answer := self._speculation) is not None:
                self._speculation = None
                answer.record.speculated = True
                self._confirm(answer, action.by, action.continued)
        elif isinstance(action, Begin):
            self._confirm(self._answer(action.audio, TurnRecord(cut=action.cut)), action.by, action.continued)

    def _speculate(self, audio: bytes) -> None:
        self._speculation = answer = self._answer(audio, TurnRecord())
        if self.judge is not None:
            self._judging = self._tasks.spawn(self._judge(answer, audio))

    async def _judge(self, answer: Answer, audio: bytes) -> None:
        """The smart detector at a pause: end the turn now if the model, then the transcript, say the caller is
        done. (Each step is recorded as it comes: the silence may end the turn first.)"""
        assert self.judge is not None
        steps = self.judge.steps(audio, self.line.input_format, self.line.input_rate, answer.transcript)
        async for judgement in steps:
            answer.judgement = judgement
        if answer.judgement is not None and answer.judgement.done and self._speculation is answer:
            waited = self.turns.detector.silence_s
            for action in self.turns.end_now():
                if isinstance(action, Confirm):
                    self._speculation = None
                    answer.record.speculated = True
                    self._confirm(answer, action.by, action.continued, waited)

    def _drop(self) -> None:
        if self._judging is not None:
            self._judging.cancel()
            self._judging = None
        if self._speculation is not None:
            # The next answer waits for this one's task, so its cancels reach the endpoints and the history is
            # put back before the next begins.
            log.info("call %s: the caller spoke again: speculative turn cancelled", self.record.call_sid)
            if self._speculation.task is not None:
                self._speculation.task.cancel()
            self._speculation = None

    def _continue(self) -> None:
        """The turn ended early was not over: take it back; the caller's new speech is the rest of it."""
        if not self._answers:
            return
        answer = self._answers.pop()
        self.record.turns = [turn for turn in self.record.turns if turn is not answer.record]
        log.info("call %s: the caller went on: turn %d taken back", self.record.call_sid, answer.playback.number)
        answer.withdraw()

    async def _talking(self) -> None:
        """The caller started talking: over a reply, a barge-in (silence detector) or an overlap to judge."""
        playback = self._live_playback()
        if playback is None:
            return
        if not self.settings.smart:
            await self._barge_in()
        elif self._overlap is None:
            self._overlap = Overlap(self.agent, self.line, playback, self.settings.barge_in, self._barge_in,
                                    self._overlap_verdict, {})
            self.record.interjections.append(self._overlap.record)
            self._overlap.start(self.turns.detector.audio_so_far())

    async def _overlap_verdict(self, backchannel: bool, pause: bytes | None) -> None:
        overlap, self._overlap = self._overlap, None
        if overlap is None:  # the caller's turn began without waiting for this verdict
            return
        log.info("call %s: %s over turn %d's reply: %s", self.record.call_sid,
                 "backchannel" if backchannel else "interruption", overlap.playback.number, overlap.record["reason"])
        if backchannel:
            # No turn: forget the utterance (the detector's, unless it has ended already and another begun).
            for action in self.turns.dismiss(close=overlap.ended is None):
                await self._act(action)
            return
        if pause is not None:
            self._speculate(pause)  # the pause the words were awaited at: the turn starts there
        if isinstance(overlap.ended, Confirm):
            await self._act(overlap.ended)

    def _answer(self, audio: bytes, record: TurnRecord) -> Answer:
        playback = self.player.playback(len(self.record.turns) + 1)
        answer = Answer(self.agent, self.line, playback, record, self.record, apology=self.settings.apology,
                        end_silence_s=self.settings.turn.end_silence_s)
        answer.task = self._last = self._tasks.spawn(answer.run(audio, self._last))
        return answer

    def _confirm(self, answer: Answer, by: str, continued: int, waited: float | None = None) -> None:
        """``answer`` is the caller's turn, ended by ``by`` after ``waited`` seconds of silence (by default the
        detector's silence that ``by`` stands for)."""
        if waited is None:
            waited = 0.0 if by == MAX_UTTERANCE else self.turns.detector.settings.end_silence_s
        if by == MAX_SILENCE or continued:
            log.info("call %s: turn %d ended by %s (continued %d)", self.record.call_sid, answer.playback.number,
                     by, continued)
        self.record.turns.append(answer.record)
        self._answers.append(answer)
        self.player.current = answer.playback
        answer.confirm(by, round(waited, 3), continued)

    async def _barge_in(self) -> None:
        playback = self._live_playback()
        if playback is None:
            return
        answer = self._answers[-1] if self._answers and self._answers[-1].playback is playback else None
        if answer is not None:
            answer.record.interrupted = True
        log.info("call %s: barge-in", self.record.call_sid)
        await self.player.clear()
        if answer is not None and answer.reply is not None:
            # Stops the reply in progress (its jobs are cancelled), or takes what did not play out of the history.
            await answer.reply.interrupt()

    def _live_playback(self) -> Playback | None:
        """The line's playback while a reply (or the greeting) is being made or plays; None when none is."""
        playback = self.player.current
        if playback is None or playback.cleared or not (self._busy() or playback.playing):
            return None
        return playback

    def _busy(self) -> bool:
        return self._last is not None and not self._last.done()

    async def end(self, reason: str) -> CallRecord:
        """End the call: stop the turn in progress (its jobs are cancelled on their endpoints) and return the
        finished record. Safe to call more than once."""
        if self._ended:
            return self.record
        self._ended = True
        playback = self.player.current
        if self._answers and self._answers[-1].playback is playback and self.replying:
            self._answers[-1].record.interrupted = True  # hung up before the reply was over
        if playback is not None:
            playback.cleared = True
        if self._overlap is not None:
            await self._overlap.close()
        await self._tasks.close()  # the cancels reach the endpoints: no job is left running for a caller who left
        for answer in self._answers:
            answer.record.assistant = answer.playback.heard()
        if self._greeting is not None:
            self.record.greeting = {"text": self.settings.greeting, "played": bool(self._greeting.played)}
        self.record.ended_at = now_iso()
        self.record.end_reason = reason
        log.info("call %s: ended (%s), %d turn(s)", self.record.call_sid, reason, len(self.record.turns))
        return self.record
