"""One phone call: the caller's audio through the turn detector, each turn through the call's VoiceAgent, the
reply streamed back as it is made, what played told by the line's marks, and barge-in. The line is Twilio's
Media Streams or the browser page (:mod:`voicepod.phone.line`): only the framing differs.

The server hands each frame to :meth:`Call.handle` (the page: :meth:`Call.hear`, :meth:`Call.marked`) and
awaits nothing long: turns (and the greeting) run as a
task of their own, one at a time, so the caller's audio is read (and barge-in heard) while a reply plays.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..agent import Audio, Done, ReplyText, SentenceEnd, Transcript, VoiceAgent
from ..audio import MULAW_RATE
from ..cleanup import run_to_end
from ..endpoint import Job
from ..errors import VoicepodError
from ..protocol import AudioChunk
from . import media
from .line import Line, TwilioLine
from .records import CallRecord, TurnRecord, now_iso
from .speculation import Speculation
from .vad import Pause, Resumed, SpeechStarted, TurnDetector, TurnSettings, Utterance

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
    :mod:`voicepod.phone.speculation`)."""

    greeting: str = DEFAULT_GREETING
    apology: str = APOLOGY
    turn: TurnSettings = field(default_factory=TurnSettings)
    speculate: bool = True


class LineClosed(Exception):
    """Sending to the caller failed: the socket is gone."""


class _Playback:
    """What one turn (or the greeting) sent down the line, and which of its sentences played to the end."""

    def __init__(self, number: int, record: TurnRecord | None):
        self.number = number
        self.record = record  # None for the greeting
        self.sentences: dict[int, str] = {}
        self.from_agent: set[int] = set()  # sentence indexes that are the agent's (not an apology)
        self.marked: set[int] = set()
        self.played: set[int] = set()
        self.cleared = False  # barged in (or hung up): marks that come back now did not play
        self.sent_audio = False
        self.released = asyncio.Event()  # its audio may go out: set at once, or when a speculation is confirmed
        self.detected: float | None = None  # monotonic time the turn's end was detected

    @property
    def playing(self) -> bool:
        return not self.cleared and bool(self.marked - self.played)

    def heard(self) -> str:
        return " ".join(self.sentences[i] for i in sorted(self.played))


class Call:
    """One call's session.

    ``agent``: this call's own :class:`VoiceAgent` (the line's output format, ``confirm_playback``). ``send``:
    sends one frame down the line. ``detector``: the turn detector (a new one with ``settings.turn`` by default).
    ``line``: what carries the call (Twilio's Media Streams by default).
    """

    def __init__(self, agent: VoiceAgent, send: Callable[[str | bytes], Awaitable[None]],
                 settings: CallSettings | None = None, detector: TurnDetector | None = None,
                 line: Line | None = None):
        self.agent = agent
        self.settings = settings or CallSettings()
        self.line = line or TwilioLine()
        self.detector = detector or TurnDetector(self.settings.turn, encoding=self.line.input_format,
                                                 sample_rate=self.line.input_rate)
        self.record = CallRecord()
        self.started = False
        self.stopped = False  # Twilio said stop
        self._send_text = send
        self._send_lock = asyncio.Lock()
        self._line_closed = False
        self._ended = False
        self._playbacks: list[_Playback] = []
        self._greeting: _Playback | None = None
        self._greeting_remembered = False
        self._current: _Playback | None = None  # what the line plays (or will): the greeting or the latest turn
        self._task: asyncio.Task[None] | None = None  # the greeting or the turn in progress
        self._tasks: set[asyncio.Task[None]] = set()
        self._speculation: Speculation | None = None

    @property
    def replying(self) -> bool:
        """Whether a reply (or the greeting) is being made or is still playing (its marks not all back)."""
        return self._busy() or (self._current is not None and self._current.playing)

    @property
    def stream_sid(self) -> str:
        return self.record.stream_sid or ""

    # --- frames from the caller ------------------------------------------------------------------------------

    async def handle(self, message: media.Message) -> None:
        """Act on one message. Raises :class:`~voicepod.phone.media.ProtocolError` for one that breaks the
        protocol here (``media`` before ``start``, a second ``start``, audio that is not mu-law 8 kHz mono)."""
        if isinstance(message, media.Start):
            self._start(message.start)
        elif isinstance(message, media.Media):
            if not self.started:
                raise media.ProtocolError("out_of_order", "media before start")
            if message.media.track == "inbound":
                await self.hear(message.media.audio())
        elif isinstance(message, media.Mark):
            self.marked(message.mark.name)
        elif isinstance(message, media.Dtmf):
            if len(self.record.dtmf) < 1000:
                self.record.dtmf.append(message.dtmf.digit[:1])
        elif isinstance(message, media.Stop):
            self.stopped = True

    def _start(self, info: media.StartInfo) -> None:
        if self.started:
            raise media.ProtocolError("out_of_order", "a second start")
        fmt = info.media_format
        if (fmt.encoding, fmt.sample_rate, fmt.channels) != (media.ENCODING, MULAW_RATE, 1):
            raise media.ProtocolError("invalid_message", f"unsupported audio {fmt.encoding} {fmt.sample_rate} Hz "
                                      f"x{fmt.channels}: expected {media.ENCODING} {MULAW_RATE} Hz mono")
        self.begin(info.call_sid, info.stream_sid, info.custom_parameters)

    def begin(self, call_sid: str, stream_sid: str, custom_parameters: dict[str, str] | None = None) -> None:
        """The call starts (the greeting begins). ``call_sid``/``stream_sid`` name it in its record."""
        self.started = True
        self.record.call_sid, self.record.stream_sid = call_sid, stream_sid
        self.record.custom_parameters = dict(list((custom_parameters or {}).items())[:20])
        log.info("call %s: started (stream %s)", call_sid, stream_sid)
        if self.settings.greeting:
            self._greeting = self._current = _Playback(0, None)
            self._greeting.released.set()
            self._task = self._spawn(self._greet(self._greeting))

    async def hear(self, audio: bytes) -> None:
        """The caller's audio (in the line's input format, any length), as it arrives."""
        for event in self.detector.feed(audio):
            if isinstance(event, SpeechStarted):
                await self._barge_in()
            elif isinstance(event, Pause) and self.settings.speculate:
                self._speculate(event)
            elif isinstance(event, Resumed):
                self._drop_speculation()
            elif isinstance(event, Utterance):
                self._begin_turn(event)

    def marked(self, name: str) -> None:
        """The caller's side played everything sent before the mark ``name``."""
        number, _, index = name.partition(":")
        if not (number.isdigit() and index.isdigit()):
            return  # not one of ours
        playback = self._current
        if playback is None or playback.number != int(number) or playback.cleared:
            return  # an old turn's, or returned by a clear: it did not play
        index_ = int(index)
        if index_ in playback.marked:
            playback.played.add(index_)
            if index_ in playback.from_agent:
                self.agent.played(index_)
            if playback.record is not None:
                playback.record.assistant = playback.heard()  # so far; final when the call ends

    # --- turns -------------------------------------------------------------------------------------------

    def _spawn(self, work: Any) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._log_failure)
        return task

    def _log_failure(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("call %s: %r", self.record.call_sid, task.exception(), exc_info=task.exception())

    def _busy(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _barge_in(self) -> None:
        playback = self._current
        if playback is None or playback.cleared or not (self._busy() or playback.playing):
            return
        playback.cleared = True
        if playback.record is not None:
            playback.record.interrupted = True
        log.info("call %s: barge-in", self.record.call_sid)
        if playback.sent_audio:
            with contextlib.suppress(LineClosed):
                await self._send(self.line.clear(self.stream_sid))
        # Stops the turn in progress (its jobs are cancelled), or takes what did not play out of the history.
        await self.agent.interrupt()

    def _begin_turn(self, utterance: Utterance) -> None:
        speculation, self._speculation = self._speculation, None
        if speculation is not None and speculation.matches(utterance):
            playback = speculation.playback  # the caller said nothing more: the speculative turn is the turn
            assert playback.record is not None
            playback.record.speculated = True
            log.info("call %s: turn %d speculated at the pause", self.record.call_sid, playback.number)
        else:
            if speculation is not None:
                self._cancel(speculation)
            playback = _Playback(len(self.record.turns) + 1, TurnRecord(cut=utterance.cut))
            self._task = self._spawn(self._turn(playback, utterance.audio, self._task))
        assert playback.record is not None
        self.record.turns.append(playback.record)
        self._playbacks.append(playback)
        self._current = playback
        playback.detected = time.monotonic()
        playback.released.set()

    def _speculate(self, pause: Pause) -> None:
        """Start the turn on the audio so far, its reply held (see :mod:`voicepod.phone.speculation`)."""
        self._drop_speculation()
        playback = _Playback(len(self.record.turns) + 1, TurnRecord())
        previous = self._task
        self._task = self._spawn(self._turn(playback, pause.audio, previous))
        self._speculation = Speculation(pause.audio, playback, self._task)

    def _drop_speculation(self) -> None:
        if self._speculation is not None:
            self._cancel(self._speculation)
            self._speculation = None

    def _cancel(self, speculation: Speculation) -> None:
        # The next turn waits for this task (it is still self._task), so the cancels reach the endpoints and the
        # history is put back before it starts.
        log.info("call %s: the caller spoke again: speculative turn cancelled", self.record.call_sid)
        speculation.task.cancel()

    async def _turn(self, playback: _Playback, audio: bytes, previous: asyncio.Task[None] | None) -> None:
        record = playback.record
        assert record is not None
        began: float | None = None
        times: dict[str, float] = {}  # monotonic times of the turn's moments
        metrics = None
        try:
            if previous is not None:
                # The agent runs one turn at a time. asyncio.wait, not gather: cancelling this turn (a dropped
                # speculation) must not cancel the one before it, which may still be cancelling its own jobs.
                await asyncio.wait({previous})
            if playback.cleared:
                return
            self._remember_greeting()
            began = time.monotonic()
            respond = self.agent.respond(audio, audio_format=self.line.input_format,
                                         sample_rate=self.line.input_rate)
            # Closed here, not when collected: a cancelled (speculative) turn's jobs are cancelled and its history
            # written before it is taken back out.
            async with contextlib.aclosing(respond) as events:
                async for event in events:
                    if isinstance(event, Transcript) and event.final:
                        record.user = event.text
                        times["transcript_s"] = began + event.t
                    elif isinstance(event, ReplyText):
                        record.reply += event.delta
                        times.setdefault("llm_first_token_s", began + event.t)
                    elif isinstance(event, Audio) and not playback.cleared:
                        await playback.released.wait()  # a speculative turn: until the end of the turn confirms it
                        if event.sentence not in playback.from_agent:
                            playback.sentences[event.sentence] = event.text
                            playback.from_agent.add(event.sentence)
                        times.setdefault("first_audio_s", time.monotonic())
                        await self._play(playback, event.data)
                    elif isinstance(event, SentenceEnd) and not playback.cleared:
                        # Right after its last audio, not when the next sentence begins: a sentence that played
                        # out while the LLM was still writing the next one counts as heard.
                        await self._mark(playback, event.sentence)
                    elif isinstance(event, Done):
                        record.interrupted |= event.interrupted
                        metrics = event.metrics
            # A speculative turn that is over before its end of turn (no reply, or a short one) still waits for it:
            # it may yet be cancelled.
            await playback.released.wait()
        except LineClosed:
            pass
        except VoicepodError as exc:
            record.error = getattr(exc, "code", None) or type(exc).__name__
            log.warning("call %s: turn %d failed (%s): %s", self.record.call_sid, playback.number, record.error, exc)
            if not playback.cleared:
                with contextlib.suppress(LineClosed, VoicepodError):
                    await self._say(playback, self.settings.apology)
        finally:
            jobs = self.agent.last_job_ids() if began is not None else {}
            if playback.released.is_set():
                # Trimmed after a confirmed turn, never by a speculative one: what a retracted speculation cut off
                # could not be put back, and the LLM would see another history than with speculation off.
                del self.agent.history[:-HISTORY_MESSAGES]
                record.jobs = jobs
                if began is not None:
                    record.latency = self._latency(playback, began, times, metrics)
            else:  # a speculation that was not the turn
                if began is not None:
                    self.agent.retract()
                self.record.cancelled_speculations.append({"turn": playback.number, "jobs": jobs})

    def _latency(self, playback: _Playback, began: float, times: dict[str, float], metrics: Any) -> dict[str, Any]:
        """The turn's moments in seconds from the detection of its end (negative: before it, in a speculative
        turn), and the STT job's time."""
        detected = playback.detected if playback.detected is not None else began
        latency: dict[str, Any] = {"end_silence_s": self.settings.turn.end_silence_s,
                                   "started_s": round(began - detected, 3)}
        if metrics is not None:
            moments = {"stt_started_s": metrics.stt.started, "llm_started_s": metrics.llm.started,
                       "llm_done_s": metrics.llm.finished, "first_sentence_s": metrics.tts.started,
                       "tts_first_chunk_s": metrics.tts.first_chunk, "tts_done_s": metrics.tts.finished,
                       "total_s": metrics.total_s}
            for name, t in moments.items():
                latency[name] = round(began + t - detected, 3) if t is not None else None
            if metrics.stt.started is not None and metrics.stt.finished is not None:
                latency["stt_s"] = round(metrics.stt.finished - metrics.stt.started, 3)
        for name, t in times.items():
            latency[name] = round(t - detected, 3)
        if "first_audio_s" in latency:
            # The detector ends a turn after end_silence_s of silence: that is where the caller stopped speaking.
            latency["voice_to_voice_s"] = round(latency["first_audio_s"] + self.settings.turn.end_silence_s, 3)
        return latency

    def _remember_greeting(self) -> None:
        greeting = self._greeting
        if greeting is not None and not self._greeting_remembered and 0 in greeting.played:
            self._greeting_remembered = True
            self.agent.history.insert(0, {"role": "assistant", "content": self.settings.greeting})

    async def _greet(self, playback: _Playback) -> None:
        try:
            await self._say(playback, self.settings.greeting)
        except LineClosed:
            pass
        except VoicepodError as exc:
            log.warning("call %s: greeting failed: %s", self.record.call_sid, exc)

    async def _say(self, playback: _Playback, text: str) -> None:
        """Speak ``text`` (not the agent's reply: the greeting, an apology) with the TTS endpoint."""
        payload: dict[str, Any] = {"text": text, "format": self.line.output_format,
                                   "sample_rate": self.line.output_rate}
        if self.agent.voice:
            payload["voice"] = self.agent.voice
        job: Job = await self.agent.tts.run(payload)
        index = max(playback.sentences, default=-1) + 1
        playback.sentences[index] = text
        try:
            async for chunk in job.chunks():
                if playback.cleared:
                    break
                if isinstance(chunk, AudioChunk):
                    await self._play(playback, base64.b64decode(chunk.audio))
            if not playback.cleared:
                await self._mark(playback, index)
        finally:
            if not job.finished:
                with contextlib.suppress(Exception):
                    await run_to_end(job.cancel())

    # --- frames to the caller --------------------------------------------------------------------------------

    async def _send(self, frame: str | bytes) -> None:
        if self._line_closed:
            raise LineClosed
        try:
            async with self._send_lock:
                await self._send_text(frame)
        except Exception as exc:  # noqa: BLE001 - whatever the socket raised, the line is gone
            self._line_closed = True
            raise LineClosed from exc

    async def _play(self, playback: _Playback, audio: bytes) -> None:
        await playback.released.wait()
        for frame in self.line.media(self.stream_sid, audio):
            if playback.cleared:
                return
            await self._send(frame)
            playback.sent_audio = True

    async def _mark(self, playback: _Playback, index: int) -> None:
        await playback.released.wait()
        playback.marked.add(index)
        await self._send(self.line.mark(self.stream_sid, f"{playback.number}:{index}"))

    # --- the end -----------------------------------------------------------------------------------------

    async def end(self, reason: str) -> CallRecord:
        """End the call: stop the turn in progress (its jobs are cancelled on their endpoints) and return the
        finished record. Safe to call more than once."""
        if self._ended:
            return self.record
        self._ended = True
        playback = self._current
        if playback is not None and playback.record is not None and (self._busy() or playback.playing):
            playback.record.interrupted = True  # hung up before the reply was over
        if playback is not None:
            playback.cleared = True
        for task in list(self._tasks):
            task.cancel()
        # Waits for the cancels to reach the endpoints: no job is left running for a caller who left.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for item in self._playbacks:
            if item.record is not None:
                item.record.assistant = item.heard()
        if self._greeting is not None:
            self.record.greeting = {"text": self.settings.greeting, "played": 0 in self._greeting.played}
        self.record.ended_at = now_iso()
        self.record.end_reason = reason
        log.info("call %s: ended (%s), %d turn(s)", self.record.call_sid, reason, len(self.record.turns))
        return self.record
