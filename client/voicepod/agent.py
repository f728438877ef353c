"""The voice chain: one spoken turn through STT, LLM and TTS endpoints, with the stages overlapped.

The transcript's end starts the LLM job; each sentence of the streamed reply goes to TTS as soon as it is
complete, while the LLM keeps writing; audio comes back strictly in sentence order. Barge-in cancels the
in-flight jobs on their endpoints and keeps in the history only what the listener got to hear.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from .aggregator import FINISH_SENTENCE_WITHIN, SentenceAggregator
from .cleanup import run_to_end
from .endpoint import Endpoint, Job
from .protocol import AudioChunk, CompletionDone, DeltaChunk, SegmentChunk, SpeechDone, TranscriptDone
from .sentences import is_speakable

# Measured on SmolLM2-135M-Instruct (benchmarks/assistant.py, docs/benchmarks.md): "Answer in one or two short
# sentences." let most everyday answers run past a 60-token reply cap; naming a word limit keeps them whole.
DEFAULT_SYSTEM_PROMPT = "Answer in one short sentence of at most 20 words."

# What a caller will listen to: about 45 words, 15-20 s of speech. A longer answer is a monologue on a call,
# and a small model that runs on would otherwise speak for minutes.
VOICE_MAX_TOKENS = 60

# A turn waits for the whole transcript and has no use for segment times: decoding text tokens only took
# 0.35 s against 0.39 s on a 1.6 s question (tiny.en, beam 5, 2 CPU cores), with the same accuracy on our
# spoken test sentences. Greedy decoding (beam_size 1) is faster still but misheard more of them.
DEFAULT_STT_OPTIONS: dict[str, Any] = {"without_timestamps": True}

# An earlier exchange to start a history with when the LLM is a base model (like Gemma 3 270M base, the other
# embedded LLM, loaded with MODEL_DIR): base models copy the shape of what came before, so this shows them a
# spoken answer of a few sentences. The default embedded LLM is chat-tuned and needs none.
BASE_MODEL_PRIMER = [
    {"role": "user", "content": "Tell me about London."},
    {"role": "assistant", "content": "London is the capital of England. It stands on the river Thames. "
                                     "Millions of people visit it every year."},
]


# --- events ----------------------------------------------------------------------------------------------
# ``t`` on every event: seconds since the turn began (the end of the user's audio).


@dataclass
class Transcript:
    """A decoded segment (``final=False``) or the whole transcript (``final=True``)."""

    text: str
    final: bool
    t: float


@dataclass
class ReplyText:
    """A piece of the reply as the LLM writes it."""

    delta: str
    t: float


@dataclass
class Audio:
    """Reply audio for sentence ``sentence`` (0-based), ``data`` encoded as ``format`` at ``sample_rate``."""

    data: bytes
    format: str
    sample_rate: int
    sentence: int
    text: str
    t: float


@dataclass
class SentenceEnd:
    """Every ``Audio`` of sentence ``sentence`` has been yielded: a player can mark where it ends (a phone line's
    mark, whose echo says the sentence played out; see :meth:`VoiceAgent.played`)."""

    sentence: int
    text: str
    t: float


@dataclass
class StageTiming:
    """One stage of a turn. Times are seconds since the turn began; ``billed`` maps each of the stage's jobs
    to its workers' compute (and cold-start load) seconds, what RunPod bills per second."""

    name: str
    started: float | None = None
    first_chunk: float | None = None
    finished: float | None = None
    job_ids: list[str] = field(default_factory=list)
    billed: dict[str, float] = field(default_factory=dict)

    @property
    def billed_s(self) -> float:
        return sum(self.billed.values())

    def mark_first(self, t: float) -> None:
        if self.first_chunk is None:
            self.first_chunk = t

    def bill(self, job: Job, done: Any) -> None:
        self.billed[job.id] = done.metrics.compute_s + done.metrics.load_s


@dataclass
class TurnMetrics:
    """A turn's timings per stage, and what the listener waited (not to be confused with a job's
    :class:`voicepod.protocol.Metrics`, which the workers report)."""

    stt: StageTiming
    llm: StageTiming
    tts: StageTiming
    voice_to_voice_s: float | None = None  # end of user audio to the first reply audio
    total_s: float | None = None

    @property
    def billed_s(self) -> float:
        return self.stt.billed_s + self.llm.billed_s + self.tts.billed_s

    def table(self) -> str:
        """The turn's timings as a fixed-width text table."""

        def cell(value: float | None) -> str:
            return f"{value:8.2f}" if value is not None else "       -"

        lines = ["stage   start  first chunk   end   billed s  jobs"]
        for stage in (self.stt, self.llm, self.tts):
            lines.append(
                f"{stage.name:<5}{cell(stage.started)}{cell(stage.first_chunk)}   {cell(stage.finished)}"
                f"{cell(stage.billed_s)}  {len(stage.job_ids):4d}"
            )
        lines.append(f"voice-to-voice latency: {cell(self.voice_to_voice_s).strip()} s   "
                     f"turn: {cell(self.total_s).strip()} s   billed compute: {self.billed_s:.2f} s")
        return "\n".join(lines)


@dataclass
class Done:
    """The turn ended. ``reply`` is what was spoken (all of it, unless ``interrupted``)."""

    transcript: str
    reply: str
    interrupted: bool
    history: list[dict[str, str]]
    metrics: TurnMetrics


Event = Transcript | ReplyText | Audio | SentenceEnd | TurnMetrics | Done


# --- the agent -------------------------------------------------------------------------------------------


@dataclass
class _Sentence:
    index: int
    text: str
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    job: Job | None = None
    heard: bool = False  # some of its audio reached the caller


_END = object()


_late_cancels: set[asyncio.Task[Any]] = set()  # held so the event loop does not drop them unfinished


def _cancel_when_submitted(submit: asyncio.Future[Job]) -> None:
    if not submit.cancelled() and submit.exception() is None:
        task = asyncio.ensure_future(submit.result().cancel())
        _late_cancels.add(task)
        task.add_done_callback(_late_cancels.discard)


class VoiceAgent:
    """A voice agent over three endpoints.

    ``system_prompt``: the LLM's instructions. ``voice``: a TTS voice (the worker's default when None).
    ``audio_format``: ``pcm16`` or ``mulaw`` (8 kHz telephony); ``sample_rate``: output rate (the voice's own
    when None). ``stt_options``: extra STT input (``beam_size``, ``initial_prompt``, ``hotwords``...), over
    :data:`DEFAULT_STT_OPTIONS` (left out when ``word_timestamps`` is asked for). ``llm_options``: extra LLM
    input (``max_tokens``, default :data:`VOICE_MAX_TOKENS`; ``finish_sentence_within``, tokens past it to finish
    the sentence in progress, default :data:`~voicepod.aggregator.FINISH_SENTENCE_WITHIN`, a sentence still
    unfinished is not spoken; ``temperature``, ``stop``, ``seed``).
    ``first_cut_words``: see :class:`~voicepod.aggregator.SentenceAggregator`. ``history``: earlier turns as
    ``{"role", "content"}`` dicts; each turn appends to it. ``confirm_playback``: a sentence counts as heard
    only once :meth:`played` says so, not when its audio is yielded (on a phone line, audio handed over is only
    audio sent: the player's marks say what played).
    """

    def __init__(
        self,
        stt: Endpoint,
        llm: Endpoint,
        tts: Endpoint,
        *,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        voice: str | None = None,
        audio_format: str = "pcm16",
        sample_rate: int | None = None,
        language: str | None = None,
        stt_options: dict[str, Any] | None = None,
        llm_options: dict[str, Any] | None = None,
        first_cut_words: int = 5,
        history: list[dict[str, str]] | None = None,
        confirm_playback: bool = False,
    ):
        if audio_format not in ("pcm16", "mulaw"):
            raise ValueError("audio_format must be 'pcm16' or 'mulaw' (a stream of sentences has no one header)")
        self.stt, self.llm, self.tts = stt, llm, tts
        self.system_prompt = system_prompt
        self.voice = voice
        self.audio_format = audio_format
        self.sample_rate = sample_rate
        self.language = language
        stt_options = stt_options or {}
        # Word times need the timestamps the default leaves out (the STT worker refuses the two together).
        defaults = {} if stt_options.get("word_timestamps") else DEFAULT_STT_OPTIONS
        self.stt_options = {**defaults, **stt_options}
        self.llm_options = {"max_tokens": VOICE_MAX_TOKENS, "finish_sentence_within": FINISH_SENTENCE_WITHIN,
                            "temperature": 0.7, **(llm_options or {})}
        self.first_cut_words = first_cut_words
        self.history: list[dict[str, str]] = list(history or [])
        self.confirm_playback = confirm_playback
        self._interrupt = asyncio.Event()
        self._last_turn: _Turn | None = None

    async def interrupt(self) -> None:
        """Barge-in: stop the turn in progress; its LLM and TTS jobs are cancelled on their endpoints.

        With ``confirm_playback``, a barge-in after the last turn ended (its audio still playing) takes the
        sentences that did not play out of the history."""
        self._interrupt.set()
        if self.confirm_playback and self._last_turn is not None:
            self._last_turn.forget_unplayed()

    def retract(self) -> None:
        """Take the latest turn out of the history, as if it had not happened: a turn started before the user
        had surely finished (a speculative turn) that turned out not to be theirs. Call it once the turn has
        ended (its iterator closed)."""
        turn = self._last_turn
        if turn is not None:
            added = [entry for entry in (turn.asked, turn.remembered) if entry is not None]
            self.history = [item for item in self.history if not any(item is entry for entry in added)]
            turn.asked = turn.remembered = None

    def last_job_ids(self) -> dict[str, list[str]]:
        """The latest turn's job ids by stage (``stt``, ``llm``, ``tts``), also when it failed or was cut short."""
        turn = self._last_turn
        stages = (turn.metrics.stt, turn.metrics.llm, turn.metrics.tts) if turn else ()
        return {stage.name: list(stage.job_ids) for stage in stages}

    def played(self, sentence: int) -> None:
        """With ``confirm_playback``: sentence ``sentence`` (0-based) of the latest turn finished playing."""
        turn = self._last_turn
        if turn is not None and 0 <= sentence < len(turn.sentences):
            turn.sentences[sentence].heard = True

    def _tts_input(self, text: str) -> dict[str, Any]:
        payload: dict[str, Any] = {"text": text, "format": self.audio_format}
        if self.voice:
            payload["voice"] = self.voice
        if self.sample_rate:
            payload["sample_rate"] = self.sample_rate
        return payload

    def _stt_input(self, audio: bytes, audio_format: str | None, sample_rate: int | None) -> dict[str, Any]:
        payload: dict[str, Any] = {"audio_base64": base64.b64encode(audio).decode(), **self.stt_options}
        if audio_format:
            payload["audio_format"] = audio_format
        if sample_rate:
            payload["sample_rate"] = sample_rate
        if self.language:
            payload["language"] = self.language
        return payload

    async def respond(
        self,
        audio: bytes,
        history: list[dict[str, str]] | None = None,
        *,
        audio_format: str | None = None,
        sample_rate: int | None = None,
    ) -> AsyncIterator[Event]:
        """Run one turn for the user's ``audio`` and yield its events, ending with :class:`TurnMetrics` and
        :class:`Done`.

        ``audio``: a file (wav, mp3, ogg...) or, with ``audio_format`` (``pcm16``/``mulaw``) and
        ``sample_rate``, raw telephony audio. ``history`` replaces the agent's history for this turn.
        Errors of any stage raise the client's typed exceptions (``JobFailed``...), after the other jobs of
        the turn have been cancelled. Closing the iterator early counts as an interruption.
        """
        if history is not None:
            self.history = list(history)
        self._interrupt.clear()
        turn = self._last_turn = _Turn(self, time.monotonic())
        async with contextlib.aclosing(turn.run(self._stt_input(audio, audio_format, sample_rate))) as events:
            async for event in events:
                yield event


class _Turn:
    """The state of one turn: its jobs, its tasks, what was heard."""

    def __init__(self, agent: VoiceAgent, started: float):
        self.agent = agent
        self.started = started
        self.metrics = TurnMetrics(StageTiming("stt"), StageTiming("llm"), StageTiming("tts"))
        self.events: asyncio.Queue[Any] = asyncio.Queue()
        self.sentences: list[_Sentence] = []
        self.new_sentence = asyncio.Event()
        self.reply_done = False
        self.jobs: list[Job] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.asked: dict[str, str] | None = None  # the user entry this turn added to the history
        self.remembered: dict[str, str] | None = None  # the assistant entry this turn added to the history

    def now(self) -> float:
        return time.monotonic() - self.started

    async def _submit(self, endpoint: Endpoint, payload: dict[str, Any], stage: StageTiming) -> Job:
        if stage.started is None:
            stage.started = self.now()
        submit = asyncio.ensure_future(endpoint.run(payload))
        try:
            job = await asyncio.shield(submit)
        except asyncio.CancelledError:
            # Interrupted while /run was in flight: the endpoint may accept the job after all; cancel it then,
            # or it would run (and bill) to the end for nobody.
            submit.add_done_callback(_cancel_when_submitted)
            raise
        self.jobs.append(job)
        stage.job_ids.append(job.id)
        return job

    async def run(self, stt_input: dict[str, Any]) -> AsyncIterator[Event]:
        agent = self.agent
        transcript = ""
        interrupted = ended = False  # ended: the turn finished or was interrupted (not failed)
        try:
            async for event in self._transcribe(stt_input):
                if isinstance(event, Transcript) and event.final:
                    transcript = event.text
                yield event
            interrupted = agent._interrupt.is_set()  # barge-in while transcribing: start no reply at all
            if transcript.strip() and not interrupted:
                messages = [{"role": "system", "content": agent.system_prompt}] if agent.system_prompt else []
                messages += [*agent.history, {"role": "user", "content": transcript}]
                self.tasks.append(asyncio.create_task(self._guard(self._reply(messages))))
                self.tasks.append(asyncio.create_task(self._guard(self._sequence_audio())))
                interrupt = asyncio.ensure_future(agent._interrupt.wait())
                try:
                    while True:
                        getter = asyncio.ensure_future(self.events.get())
                        await asyncio.wait({getter, interrupt}, return_when=asyncio.FIRST_COMPLETED)
                        if not getter.done():
                            getter.cancel()
                            interrupted = True
                            break
                        event = getter.result()
                        if event is _END:
                            break
                        if isinstance(event, BaseException):
                            raise event
                        if isinstance(event, Audio):
                            if self.metrics.voice_to_voice_s is None:
                                self.metrics.voice_to_voice_s = self.now()
                            self.sentences[event.sentence].heard |= not agent.confirm_playback
                        yield event
                finally:
                    interrupt.cancel()
            ended = True
        except (GeneratorExit, asyncio.CancelledError):
            interrupted = ended = True
            raise
        finally:
            await self._stop_all()
            if ended:
                self._remember(transcript, interrupted)
        self.metrics.total_s = self.now()
        yield self.metrics
        yield Done(transcript, self._reply_spoken(interrupted), interrupted, list(self.agent.history), self.metrics)

    def _reply_spoken(self, interrupted: bool) -> str:
        return " ".join(s.text for s in self.sentences if s.heard or not interrupted)

    def _remember(self, transcript: str, interrupted: bool) -> None:
        """Add the turn to the history: after a barge-in, only the sentences the listener got to hear."""
        if transcript.strip():
            self.asked = {"role": "user", "content": transcript}
            self.agent.history.append(self.asked)
            if reply := self._reply_spoken(interrupted):
                self.remembered = {"role": "assistant", "content": reply}
                self.agent.history.append(self.remembered)

    def forget_unplayed(self) -> None:
        """After the turn ended: keep in the history only the sentences that played."""
        entry = self.remembered
        if entry is None or not any(item is entry for item in self.agent.history):
            return  # nothing remembered, or the history was replaced since
        if heard := self._reply_spoken(True):
            entry["content"] = heard
        else:
            self.agent.history = [item for item in self.agent.history if item is not entry]
        self.remembered = None

    async def _stop_all(self) -> None:
        """Stop the turn's tasks, then cancel its unfinished jobs on their endpoints; runs to its end.

        This runs while the turn is being cancelled or closed, and may be cancelled again meanwhile (a phone caller
        who hangs up while the closed line is already ending the turn): a cleanup cut short there would leave the
        jobs running, and billed, for nobody (:mod:`voicepod.cleanup`).
        """
        await run_to_end(self._stop_tasks_and_jobs())

    async def _stop_tasks_and_jobs(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        unfinished = [job for job in self.jobs if not job.finished]
        await asyncio.gather(*(job.cancel() for job in unfinished), return_exceptions=True)

    async def _guard(self, work: Any) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self.events.put_nowait(exc)

    async def _transcribe(self, stt_input: dict[str, Any]) -> AsyncIterator[Event]:
        stage = self.metrics.stt
        job = await self._submit(self.agent.stt, stt_input, stage)
        async for chunk in job.chunks():
            stage.mark_first(self.now())
            if isinstance(chunk, SegmentChunk):
                yield Transcript(chunk.text.strip(), False, self.now())
            elif isinstance(chunk, TranscriptDone):
                stage.finished = self.now()
                stage.bill(job, chunk)
                yield Transcript(chunk.text.strip(), True, self.now())

    async def _reply(self, messages: list[dict[str, str]]) -> None:
        stage = self.metrics.llm
        aggregator = SentenceAggregator(self.agent.first_cut_words)
        job = await self._submit(self.agent.llm, {"messages": messages, **self.agent.llm_options}, stage)
        cut_off = False
        async for chunk in job.chunks():
            stage.mark_first(self.now())
            if isinstance(chunk, DeltaChunk) and chunk.text:
                self.events.put_nowait(ReplyText(chunk.text, self.now()))
                for sentence in aggregator.feed(chunk.text):
                    await self._speak(sentence)
            elif isinstance(chunk, CompletionDone):
                stage.finished = self.now()
                stage.bill(job, chunk)
                cut_off = chunk.finish_reason == "length"
        # Cut at the cap: a sentence that did not end is not spoken (nor kept in the history).
        for sentence in aggregator.flush(cut_off=cut_off):
            await self._speak(sentence)
        self.reply_done = True
        self.new_sentence.set()

    async def _speak(self, text: str) -> None:
        if not is_speakable(text):
            return  # the TTS worker would refuse it
        sentence = _Sentence(len(self.sentences), text)
        self.sentences.append(sentence)
        self.tasks.append(asyncio.create_task(self._synthesize(sentence)))
        self.new_sentence.set()

    async def _synthesize(self, sentence: _Sentence) -> None:
        stage = self.metrics.tts
        try:
            sentence.job = await self._submit(self.agent.tts, self.agent._tts_input(sentence.text), stage)
            async for chunk in sentence.job.chunks():
                if isinstance(chunk, AudioChunk):
                    sentence.queue.put_nowait(chunk)
                elif isinstance(chunk, SpeechDone):
                    stage.bill(sentence.job, chunk)
            sentence.queue.put_nowait(_END)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - delivered in order, by the sequencer
            sentence.queue.put_nowait(exc)

    async def _sequence_audio(self) -> None:
        """Hand audio to the caller strictly in sentence order, whichever TTS job finishes first."""
        stage = self.metrics.tts
        index = 0
        while True:
            while index >= len(self.sentences):
                if self.reply_done:
                    stage.finished = self.now() if stage.job_ids else None
                    self.events.put_nowait(_END)
                    return
                self.new_sentence.clear()
                await self.new_sentence.wait()
            sentence = self.sentences[index]
            while (item := await sentence.queue.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                stage.mark_first(self.now())
                self.events.put_nowait(
                    Audio(base64.b64decode(item.audio), item.format, item.sample_rate, index, sentence.text,
                          self.now())
                )
            self.events.put_nowait(SentenceEnd(index, sentence.text, self.now()))
            index += 1
