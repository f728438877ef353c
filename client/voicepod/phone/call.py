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
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from ..agent import VoiceAgent
from ..errors import VoicepodError
from .answer import Answer
from .line import CallerAudio, CallerEvent, CallStarted, Digit, Line, Played, Skipped
from .playback import LineClosed, Playback, Player, speak
from .records import CallRecord, TurnRecord, now_iso
from .turn_taking import BargeIn, Begin, Confirm, Drop, Speculate, TurnTaking
from .vad import TurnDetector, TurnSettings

log = logging.getLogger("voicepod.phone")

DEFAULT_GREETING = "Hello! How can I help?"
APOLOGY = "Sorry, something went wrong on my side. Could you say that again?"
# The history a call's agent keeps: the latest messages only, so a long call stays within the LLM's context (and
# its memory bounded). 24 messages are 12 exchanges, more than a phone call usually needs to look back.
HISTORY_MESSAGES = 24


@dataclass
class CallSettings:
    """``greeting``: said when the call starts ("" for none). ``apology``: said when a stage of a turn fails.
    ``turn``: the turn detector's settings. ``speculate``: start each turn at the caller's first short pause
    (``turn.pause_s``), its reply held until the end-of-turn silence confirms it (see
    :mod:`voicepod.phone.turn_taking`)."""

    greeting: str = DEFAULT_GREETING
    apology: str = APOLOGY
    turn: TurnSettings = field(default_factory=TurnSettings)
    speculate: bool = True


class Call:
    """One call's session. ``agent``: this call's own :class:`VoiceAgent` (in the line's output format, with
    ``confirm_playback``); ``line``: its serializer; ``send``: sends one frame down the line; ``detector``: the
    turn detector (a new one with ``settings.turn`` by default)."""

    def __init__(self, agent: VoiceAgent, line: Line, send: Callable[[str | bytes], Awaitable[None]],
                 settings: CallSettings | None = None, detector: TurnDetector | None = None):
        self.agent = agent
        self.line = line
        self.settings = settings or CallSettings()
        detector = detector or TurnDetector(self.settings.turn, encoding=line.input_format,
                                            sample_rate=line.input_rate)
        self.turns = TurnTaking(detector, self.settings.speculate)
        self.player = Player(line, send)
        self.record = CallRecord()
        self.started = False
        self._answers: list[Answer] = []  # the confirmed ones, in order
        self._speculation: Answer | None = None
        self._greeting_played = False
        self._last: asyncio.Task[None] | None = None  # the greeting's or the latest answer's: the next waits for it
        self._tasks: set[asyncio.Task[None]] = set()
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
            playback = self.player.current = self.player.playback(0)
            playback.release()
            self._last = self._spawn(self._greet(playback))

    async def hear(self, audio: bytes) -> None:
        """The caller's audio (in the line's input format, any length), as it arrives."""
        for action in self.turns.feed(audio):
            if isinstance(action, BargeIn):
                await self._barge_in()
            elif isinstance(action, Speculate):
                self._speculation = self._answer(action.audio, TurnRecord())
            elif isinstance(action, Drop) and self._speculation is not None:
                # The next answer waits for this one's task, so its cancels reach the endpoints and the history is
                # put back before the next begins.
                log.info("call %s: the caller spoke again: speculative turn cancelled", self.record.call_sid)
                if self._speculation.task is not None:
                    self._speculation.task.cancel()
                self._speculation = None
            elif isinstance(action, Confirm) and self._speculation is not None:
                log.info("call %s: turn %d speculated at the pause", self.record.call_sid,
                         self._speculation.playback.number)
                self._speculation.record.speculated = True
                self._confirm(self._speculation)
                self._speculation = None
            elif isinstance(action, Begin):
                self._confirm(self._answer(action.audio, TurnRecord(cut=action.cut)))

    def _answer(self, audio: bytes, record: TurnRecord) -> Answer:
        playback = self.player.playback(len(self.record.turns) + 1)
        answer = Answer(self.agent, self.line, playback, record, self.record, apology=self.settings.apology,
                        end_silence_s=self.settings.turn.end_silence_s)
        answer.task = self._last = self._spawn(answer.run(audio, self._last))
        return answer

    def _confirm(self, answer: Answer) -> None:
        self.record.turns.append(answer.record)
        self._answers.append(answer)
        self.player.current = answer.playback
        answer.confirm()

    async def _barge_in(self) -> None:
        playback = self.player.current
        if playback is None or playback.cleared or not (self._busy() or playback.playing):
            return
        answer = self._answers[-1] if self._answers and self._answers[-1].playback is playback else None
        if answer is not None:
            answer.record.interrupted = True
        log.info("call %s: barge-in", self.record.call_sid)
        await self.player.clear()
        if answer is not None and answer.reply is not None:
            # Stops the reply in progress (its jobs are cancelled), or takes what did not play out of the history.
            await answer.reply.interrupt()

    async def _greet(self, playback: Playback) -> None:
        def played(sentence: int) -> None:
            self._greeting_played = True

        try:
            await speak(playback, self.agent.say(self.settings.greeting, remember=True), played)
        except LineClosed:
            pass
        except VoicepodError as exc:
            log.warning("call %s: greeting failed: %s", self.record.call_sid, exc)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._log_failure)
        return task

    def _log_failure(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("call %s: %r", self.record.call_sid, task.exception(), exc_info=task.exception())

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
        for task in list(self._tasks):
            task.cancel()
        # Waits for the cancels to reach the endpoints: no job is left running for a caller who left.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for answer in self._answers:
            answer.record.assistant = answer.playback.heard()
        if self.settings.greeting and self.started:
            self.record.greeting = {"text": self.settings.greeting, "played": self._greeting_played}
        self.record.ended_at = now_iso()
        self.record.end_reason = reason
        log.info("call %s: ended (%s), %d turn(s)", self.record.call_sid, reason, len(self.record.turns))
        return self.record
