"""What :class:`~voicepod.agent.VoiceAgent` hands back: a :class:`Reply` to the user's audio, a :class:`Speech` of
a fixed text. Each is a handle on its own turn: iterate it for the events, and tell it afterwards what played.

A reply runs its stages overlapped: the transcript's end starts the LLM job; each sentence of the streamed reply
goes to TTS as soon as it is complete, while the LLM keeps writing; audio comes back strictly in sentence order.
Every job runs in an ``async with endpoint.submit(...)`` block, so a barge-in, a closed iterator or a failed stage
cancels the jobs still in flight on their endpoints. The history keeps only what the listener got to hear.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .aggregator import SentenceAggregator
from .cleanup import run_to_end
from .endpoint import Endpoint, Job
from .events import Audio, Done, Event, ReplyText, SentenceEnd, StageTiming, Transcript, TurnMetrics
from .protocol import AudioChunk, CompletionDone, DeltaChunk, SegmentChunk, SpeechDone, TranscriptDone
from .sentences import is_speakable

if TYPE_CHECKING:
    from .agent import VoiceAgent


@dataclass
class _Sentence:
    index: int
    text: str
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    heard: bool = False  # some of its audio reached the listener (with confirm_playback: it played out)


_END = object()


class Reply:
    """One reply to the user's audio, as :meth:`VoiceAgent.respond <voicepod.agent.VoiceAgent.respond>` returns it.

    ``async for event in reply`` runs it (once) and yields its events, ending with
    :class:`~voicepod.events.TurnMetrics` and :class:`~voicepod.events.Done`; closing the iteration early
    (``aclose()``) counts as an interruption. Afterwards the handle still answers for its turn: :meth:`played`
    (a player's word that a sentence played out), :meth:`interrupt` (a barge-in over audio still playing),
    :meth:`retract` (take the turn back out of the history) and :attr:`job_ids`.
    """

    def __init__(self, agent: VoiceAgent, stt_input: dict[str, Any]):
        self.agent = agent
        self.started = time.monotonic()
        self.metrics = TurnMetrics(StageTiming("stt"), StageTiming("llm"), StageTiming("tts"))
        self.sentences: list[_Sentence] = []
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._new_sentence = asyncio.Event()
        self._reply_done = False
        self._tasks: list[asyncio.Task[None]] = []
        self._interrupted = asyncio.Event()
        self._over = False  # its events have ended
        self._asked: dict[str, str] | None = None  # the user entry this turn added to the history
        self._remembered: dict[str, str] | None = None  # the assistant entry it added
        self._iterator = self._run(stt_input)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterator

    async def aclose(self) -> None:
        """Stop the reply (an interruption) and wait until its jobs are cancelled on their endpoints."""
        await self._iterator.aclose()

    @property
    def job_ids(self) -> dict[str, list[str]]:
        """The turn's job ids by stage (``stt``, ``llm``, ``tts``), also when it failed or was cut short."""
        return {stage.name: list(stage.job_ids) for stage in (self.metrics.stt, self.metrics.llm, self.metrics.tts)}

    async def interrupt(self) -> None:
        """Barge-in: stop the reply if it is still running (its jobs are cancelled on their endpoints). With
        ``confirm_playback``, over a reply that has ended but still plays, take the sentences that did not play
        out of the history."""
        self._interrupted.set()
        if self._over and self.agent.confirm_playback:
            self._forget_unplayed()

    def played(self, sentence: int) -> None:
        """With ``confirm_playback``: sentence ``sentence`` (0-based) finished playing."""
        if 0 <= sentence < len(self.sentences):
            self.sentences[sentence].heard = True

    def retract(self) -> None:
        """Take this turn out of the history, as if it had not happened: a turn started before the user had
        surely finished (a speculative turn) that turned out not to be theirs. Call it once the reply has ended."""
        added = [entry for entry in (self._asked, self._remembered) if entry is not None]
        self.agent.history = [item for item in self.agent.history if not any(item is entry for entry in added)]
        self._asked = self._remembered = None

    # --- the run ---------------------------------------------------------------------------------------------

    def _now(self) -> float:
        return time.monotonic() - self.started

    @contextlib.asynccontextmanager
    async def _job(self, endpoint: Endpoint, payload: dict[str, Any], stage: StageTiming) -> AsyncIterator[Job]:
        """A job of ``stage`` that cancels itself when the block is left by an error or a cancel."""
        if stage.started is None:
            stage.started = self._now()
        async with endpoint.submit(payload) as job:
            stage.job_ids.append(job.id)
            yield job

    async def _run(self, stt_input: dict[str, Any]) -> AsyncIterator[Event]:
        transcript = ""
        interrupted = ended = False  # ended: the turn finished or was interrupted (not failed)
        self.agent._replies.add(self)
        try:
            async with contextlib.aclosing(self._transcribe(stt_input)) as transcription:
                async for event in transcription:
                    if isinstance(event, Transcript) and event.final:
                        transcript = event.text
                    yield event
            interrupted = self._interrupted.is_set()  # barge-in while transcribing: start no reply at all
            if transcript.strip() and not interrupted:
                async with contextlib.aclosing(self._speak_reply(transcript)) as reply:
                    async for event in reply:
                        yield event
                interrupted = self._interrupted.is_set()
            ended = True
        except (GeneratorExit, asyncio.CancelledError):
            interrupted = ended = True
            raise
        finally:
            self._over = True
            self.agent._replies.discard(self)
            await self._stop_all()
            if ended:
                self._remember(transcript, interrupted)
        self.metrics.total_s = self._now()
        yield self.metrics
        yield Done(transcript, self._spoken(interrupted), interrupted, list(self.agent.history), self.metrics)

    async def _speak_reply(self, transcript: str) -> AsyncIterator[Event]:
        """The LLM's reply, sentence by sentence through TTS, until it ends or a barge-in stops it."""
        agent = self.agent
        messages = [{"role": "system", "content": agent.system_prompt}] if agent.system_prompt else []
        messages += [*agent.history, {"role": "user", "content": transcript}]
        self._tasks.append(asyncio.create_task(self._guard(self._write(messages))))
        self._tasks.append(asyncio.create_task(self._guard(self._sequence_audio())))
        interrupt = asyncio.ensure_future(self._interrupted.wait())
        getter: asyncio.Future[Any] | None = None
        try:
            while True:
                getter = asyncio.ensure_future(self._events.get())
                await asyncio.wait({getter, interrupt}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    return
                event = getter.result()
                if event is _END:
                    return
                if isinstance(event, BaseException):
                    raise event
                if isinstance(event, Audio):
                    if self.metrics.voice_to_voice_s is None:
                        self.metrics.voice_to_voice_s = self._now()
                    self.sentences[event.sentence].heard |= not agent.confirm_playback
                yield event
        finally:
            # asyncio.wait leaves its futures running when the turn is cancelled while it waits (a hang-up, a
            # dropped speculation): a getter left behind would wait on the queue, holding the reply, for ever.
            interrupt.cancel()
            if getter is not None:
                getter.cancel()

    def _spoken(self, interrupted: bool) -> str:
        return " ".join(s.text for s in self.sentences if s.heard or not interrupted)

    def _remember(self, transcript: str, interrupted: bool) -> None:
        """Add the turn to the history: after a barge-in, only the sentences the listener got to hear."""
        if transcript.strip():
            self._asked = {"role": "user", "content": transcript}
            self.agent.history.append(self._asked)
            if reply := self._spoken(interrupted):
                self._remembered = {"role": "assistant", "content": reply}
                self.agent.history.append(self._remembered)

    def _forget_unplayed(self) -> None:
        """After the turn ended: keep in the history only the sentences that played."""
        entry = self._remembered
        if entry is None or not any(item is entry for item in self.agent.history):
            return  # nothing remembered, or the history was replaced since
        if heard := self._spoken(True):
            entry["content"] = heard
        else:
            self.agent.history = [item for item in self.agent.history if item is not entry]
        self._remembered = None

    async def _stop_all(self) -> None:
        """Stop the turn's tasks; each cancels its own job on its endpoint. Runs to its end.

        This runs while the turn is being cancelled or closed, and may be cancelled again meanwhile (a phone caller
        who hangs up while the closed line is already ending the turn): a cleanup cut short there would leave jobs
        running, and billed, for nobody (:mod:`voicepod.cleanup`).
        """
        await run_to_end(self._stop_tasks())

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _guard(self, work: Any) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self._events.put_nowait(exc)

    async def _transcribe(self, stt_input: dict[str, Any]) -> AsyncIterator[Event]:
        stage = self.metrics.stt
        async with self._job(self.agent.stt, stt_input, stage) as job:
            async for chunk in job.chunks():
                stage.mark_first(self._now())
                if isinstance(chunk, SegmentChunk):
                    yield Transcript(chunk.text.strip(), False, self._now())
                elif isinstance(chunk, TranscriptDone):
                    stage.finished = self._now()
                    stage.bill(job, chunk)
                    yield Transcript(chunk.text.strip(), True, self._now())

    async def _write(self, messages: list[dict[str, str]]) -> None:
        stage = self.metrics.llm
        aggregator = SentenceAggregator(self.agent.first_cut_words)
        cut_off = False
        async with self._job(self.agent.llm, {"messages": messages, **self.agent.llm_options}, stage) as job:
            async for chunk in job.chunks():
                stage.mark_first(self._now())
                if isinstance(chunk, DeltaChunk) and chunk.text:
                    self._events.put_nowait(ReplyText(chunk.text, self._now()))
                    for sentence in aggregator.feed(chunk.text):
                        self._speak(sentence)
                elif isinstance(chunk, CompletionDone):
                    stage.finished = self._now()
                    stage.bill(job, chunk)
                    cut_off = chunk.finish_reason == "length"
        # Cut at the cap: a sentence that did not end is not spoken (nor kept in the history).
        for sentence in aggregator.flush(cut_off=cut_off):
            self._speak(sentence)
        self._reply_done = True
        self._new_sentence.set()

    def _speak(self, text: str) -> None:
        if not is_speakable(text):
            return  # the TTS worker would refuse it
        sentence = _Sentence(len(self.sentences), text)
        self.sentences.append(sentence)
        self._tasks.append(asyncio.create_task(self._synthesize(sentence)))
        self._new_sentence.set()

    async def _synthesize(self, sentence: _Sentence) -> None:
        stage = self.metrics.tts
        try:
            async with self._job(self.agent.tts, self.agent.tts_input(sentence.text), stage) as job:
                async for chunk in job.chunks():
                    if isinstance(chunk, AudioChunk):
                        sentence.queue.put_nowait(chunk)
                    elif isinstance(chunk, SpeechDone):
                        stage.bill(job, chunk)
            sentence.queue.put_nowait(_END)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - delivered in order, by the sequencer
            sentence.queue.put_nowait(exc)

    async def _sequence_audio(self) -> None:
        """Hand audio to the listener strictly in sentence order, whichever TTS job finishes first."""
        stage = self.metrics.tts
        index = 0
        while True:
            while index >= len(self.sentences):
                if self._reply_done:
                    stage.finished = self._now() if stage.job_ids else None
                    self._events.put_nowait(_END)
                    return
                self._new_sentence.clear()
                await self._new_sentence.wait()
            sentence = self.sentences[index]
            while (item := await sentence.queue.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                stage.mark_first(self._now())
                self._events.put_nowait(
                    Audio(base64.b64decode(item.audio), item.format, item.sample_rate, index, sentence.text,
                          self._now())
                )
            self._events.put_nowait(SentenceEnd(index, sentence.text, self._now()))
            index += 1


class Speech:
    """A fixed text spoken in the agent's voice (a greeting, an apology), as
    :meth:`VoiceAgent.say <voicepod.agent.VoiceAgent.say>` returns it.

    ``async for event in speech`` yields its :class:`~voicepod.events.Audio` (all of it sentence 0, the whole
    text) and then one :class:`~voicepod.events.SentenceEnd`; leaving the loop early cancels the TTS job. With
    ``remember``, the text joins the agent's history as the assistant's once :meth:`played` says it played out.
    """

    def __init__(self, agent: VoiceAgent, text: str, remember: bool):
        self.agent = agent
        self.text = text
        self.remember = remember
        self.job_id: str | None = None
        self._started = time.monotonic()
        self._remembered = False
        self._iterator = self._run()

    def __aiter__(self) -> AsyncIterator[Audio | SentenceEnd]:
        return self._iterator

    async def aclose(self) -> None:
        """Stop speaking: the TTS job is cancelled on its endpoint."""
        await self._iterator.aclose()

    def played(self, sentence: int = 0) -> None:
        """The text played out to the listener."""
        if self.remember and not self._remembered:
            self._remembered = True
            self.agent.history.append({"role": "assistant", "content": self.text})

    async def _run(self) -> AsyncIterator[Audio | SentenceEnd]:
        async with self.agent.tts.submit(self.agent.tts_input(self.text)) as job:
            self.job_id = job.id
            async for chunk in job.chunks():
                if isinstance(chunk, AudioChunk):
                    yield Audio(base64.b64decode(chunk.audio), chunk.format, chunk.sample_rate, 0, self.text,
                                time.monotonic() - self._started)
        yield SentenceEnd(0, self.text, time.monotonic() - self._started)
