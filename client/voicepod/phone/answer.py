"""The call's answer to one caller turn: the agent's reply streamed into a playback as it is made, kept in the
turn's record, an apology spoken when a stage fails, and taken back when a speculative turn is dropped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from ..agent import Audio, Done, Reply, ReplyText, SentenceEnd, Transcript, VoiceAgent
from ..errors import VoicepodError
from .line import Line
from .playback import LineClosed, Playback, speak
from .records import CallRecord, EndOfTurn, TurnRecord, turn_latency
from .turn_judge import Judgement

log = logging.getLogger("voicepod.phone")


class Answer:
    """One turn's answer. ``agent``: the call's; ``line``: its input format goes to STT; ``playback``: where the
    reply plays (held until :meth:`confirm`); ``record``: the turn's record; ``call``: the call's record (a
    dropped speculation's jobs go there); ``apology``: said when a stage fails; ``end_silence_s``: the silence
    that ends a turn (the caller stopped speaking that long before the turn's end was detected), unless
    :meth:`confirm` says otherwise."""

    def __init__(self, agent: VoiceAgent, line: Line, playback: Playback, record: TurnRecord, call: CallRecord, *,
                 apology: str, end_silence_s: float):
        self.agent, self.line, self.playback, self.record, self.call = agent, line, playback, record, call
        self.apology = apology
        self.end_silence_s = end_silence_s
        self.reply: Reply | None = None
        self.task: asyncio.Task[None] | None = None  # what runs it (set by the call)
        self.detected: float | None = None  # monotonic time the end of the turn was detected
        self.withdrawn = False  # confirmed, then taken back: the caller went on (a continued turn)
        self.judgement: Judgement | None = None  # the smart detector's at the pause it was started at
        # The final transcript (None when there is none: the STT failed or the answer stopped before it).
        self.transcript: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    def confirm(self, by: str, end_silence_s: float | None = None, continued: int = 0) -> None:
        """The turn's end is detected, by ``by`` (see :class:`~voicepod.phone.records.EndOfTurn`): its reply goes
        out (what was held, at once). ``end_silence_s``: the silence the caller had left by then, when not the one
        given at creation; ``continued``: the times this turn was ended early and taken back."""
        self.detected = time.monotonic()
        if end_silence_s is not None:
            self.end_silence_s = end_silence_s
        judgement = self.judgement
        self.record.end_of_turn = EndOfTurn(
            by, round(self.end_silence_s, 3), round(judgement.probability, 3) if judgement else None,
            judgement.text if judgement else None, continued)
        self.playback.release()

    def withdraw(self) -> None:
        """Take the confirmed turn back before any of its reply was heard: nothing more goes out, and it ends as a
        dropped speculation does (history retracted, its jobs cancelled and listed in ``cancelled_speculations``)."""
        self.withdrawn = True
        self.playback.cleared = True
        if self.task is not None:
            self.task.cancel()

    async def run(self, audio: bytes, previous: asyncio.Task[None] | None) -> None:
        """Answer ``audio`` once ``previous`` (the call's turn before, or its greeting) is over."""
        began: float | None = None
        times: dict[str, float] = {}  # monotonic times of the turn's moments
        metrics = None
        try:
            if previous is not None:
                # The agent answers one turn at a time. asyncio.wait, not gather: cancelling this turn (a dropped
                # speculation) must not cancel the one before it, which may still be cancelling its own jobs.
                await asyncio.wait({previous})
            if self.playback.cleared:
                return
            began = time.monotonic()
            self.reply = self.agent.respond(audio, audio_format=self.line.input_format,
                                            sample_rate=self.line.input_rate)
            # Closed here, not when collected: a dropped speculation's jobs are cancelled and its history written
            # before it is taken back out.
            async with contextlib.aclosing(self.reply) as events:
                async for event in events:
                    metrics = await self._follow(event, began, times) or metrics
            # A speculative turn that is over before its end of turn (no reply, or a short one) still waits for
            # it: it may yet be dropped.
            await self.playback.wait_released()
        except LineClosed:
            pass
        except VoicepodError as exc:
            if not self.transcript.done():  # the smart detector waits on it: no transcript is coming
                self.transcript.set_result(None)
            await self._apologize(exc)
        finally:
            self._close(began, times, metrics)

    async def _follow(self, event: Any, began: float, times: dict[str, float]) -> Any:
        """Act on one event of the reply; returns the turn's metrics at its end."""
        record, playback = self.record, self.playback
        if isinstance(event, Transcript) and event.final:
            record.user = event.text
            times["transcript_s"] = began + event.t
            if not self.transcript.done():
                self.transcript.set_result(event.text)
        elif isinstance(event, ReplyText):
            record.reply += event.delta
            times.setdefault("llm_first_token_s", began + event.t)
        elif isinstance(event, Audio) and not playback.cleared:
            await playback.play(event.sentence, event.text, event.data, self._played)
            if playback.first_audio_at is not None:
                times.setdefault("first_audio_s", playback.first_audio_at)
        elif isinstance(event, SentenceEnd) and not playback.cleared:
            # Right after its last audio, not when the next sentence begins: a sentence that played out while
            # the LLM was still writing the next one counts as heard.
            await playback.mark(event.sentence, event.text, self._played)
        elif isinstance(event, Done):
            record.interrupted |= event.interrupted
            return event.metrics
        return None

    def _played(self, sentence: int) -> None:
        if self.reply is not None:
            self.reply.played(sentence)
        self._heard()

    def _heard(self, sentence: int = 0) -> None:  # an on_played callback: the sentence is not needed
        self.record.assistant = self.playback.heard()  # so far; final when the call ends

    async def _apologize(self, exc: VoicepodError) -> None:
        self.record.error = getattr(exc, "code", None) or type(exc).__name__
        log.warning("call %s: turn %d failed (%s): %s", self.call.call_sid, self.playback.number, self.record.error,
                    exc)
        if not self.playback.cleared:
            with contextlib.suppress(LineClosed, VoicepodError):
                await speak(self.playback, self.agent.say(self.apology), self._heard)

    def _close(self, began: float | None, times: dict[str, float], metrics: Any) -> None:
        if not self.transcript.done():
            self.transcript.set_result(None)
        jobs = self.reply.job_ids if self.reply is not None else {}
        if self.playback.released and not self.withdrawn:
            self.record.jobs = jobs
            if began is not None:
                detected = self.detected if self.detected is not None else began
                self.record.latency = turn_latency(detected, began, times, metrics, self.end_silence_s)
        else:  # a speculation that was not the turn
            if self.reply is not None:
                self.reply.retract()
            dropped = {"turn": self.playback.number, "jobs": jobs}
            if self.withdrawn:  # and whether its reply was ready but held while the VAD heard the caller go on
                dropped |= {"continued": True, "held": self.playback.held_ready}
            self.call.cancelled_speculations.append(dropped)


async def greet(agent: VoiceAgent, playback: Playback, greeting: str, call: CallRecord) -> None:
    """Say ``greeting`` on ``playback``; once it has played out it joins the agent's history (a greeting that
    fails is logged: the call goes on without it)."""
    try:
        await speak(playback, agent.say(greeting, remember=True))
    except LineClosed:
        pass
    except VoicepodError as exc:
        log.warning("call %s: greeting failed: %s", call.call_sid, exc)
