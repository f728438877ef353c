"""voicepod's endpoints as Pipecat services: a Pipecat bot (transports, VAD, turn-taking, interruptions) that
runs its STT, LLM and TTS on self-hosted RunPod endpoints.

Needs the extra: ``pip install 'voicepod[pipecat]'`` (Pipecat 1.14). Nothing else in voicepod imports this
module. The STT and TTS services call their endpoints through :class:`voicepod.Endpoint` (so retries, auth and
streaming are voicepod's); the LLM is Pipecat's own ``OpenAILLMService`` on the LLM endpoint's OpenAI route.

- :class:`RunPodSTTService`: each speech segment Pipecat's VAD cuts becomes one STT job (raw PCM16 at the
  pipeline's rate) and one ``TranscriptionFrame``.
- :class:`RunPodTTSService`: each sentence becomes one TTS job at the pipeline's output rate; its audio chunks
  become ``TTSAudioRawFrame`` as they arrive, and an interruption cancels the job on the endpoint. Sentences are
  cut by voicepod's own rules (:class:`SentenceTextAggregator`: the worker's, with an early first cut).
- :class:`RunPodLLMService`: ``OpenAILLMService`` with the base URL and key of an LLM endpoint filled in, and the
  reply cap's allowance (``finish_sentence_within``): a reply the worker still cut at its cap ends with a
  :class:`ReplyCutFrame`, on which :class:`RunPodTTSService` drops the unfinished last sentence it holds.

Failures reach the pipeline as ``ErrorFrame`` (categorised for Pipecat: a rejected key or unknown endpoint is
permanent, an unreachable or busy one is not); the pipeline keeps running.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncGenerator
from typing import Any, get_args

import numpy as np

try:
    import soxr  # a dependency of Pipecat's
    from pipecat.frames.frames import DataFrame, ErrorFrame, Frame, TranscriptionFrame, TTSAudioRawFrame
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.frame_processor import FrameDirection
    from pipecat.services.openai.llm import OpenAILLMService
    from pipecat.services.settings import STTSettings, TTSSettings
    from pipecat.services.stt_service import SegmentedSTTService
    from pipecat.services.tts_service import TextAggregationMode, TTSService
    from pipecat.transcriptions.language import Language
    from pipecat.utils.errors import ErrorCategory
    from pipecat.utils.text.base_text_aggregator import Aggregation, BaseTextAggregator, TextType
    from pipecat.utils.time import time_now_iso8601
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("voicepod.pipecat needs Pipecat: pip install 'voicepod[pipecat]'") from exc

from dataclasses import dataclass

from pydantic import ValidationError

from .aggregator import FINISH_SENTENCE_WITHIN, SentenceAggregator
from .endpoint import Endpoint
from .errors import (
    AuthError,
    JobFailed,
    NotFoundError,
    RateLimitError,
    ServerError,
    TransportError,
    VoicepodError,
)
from .protocol import AudioChunk, ErrorCode, OutputSampleRate, SpeechRequest, TranscribeRequest, TranscriptDone

__all__ = ["ReplyCutFrame", "RunPodLLMService", "RunPodSTTService", "RunPodTTSService", "SentenceTextAggregator"]

# The rates the TTS worker speaks; another pipeline rate is resampled here from the voice's own.
WORKER_RATES = frozenset(get_args(OutputSampleRate))
# Input fields the services fill in themselves, so options may not.
_STT_OWN = {"audio_base64", "audio_url", "audio_format", "sample_rate", "language"}
_TTS_OWN = {"text", "voice", "format", "sample_rate"}


def _category(exc: VoicepodError) -> ErrorCategory:
    """How Pipecat should take a failure: a permanent category marks the service unusable (every later request
    would fail the same way); the others are reported and the next request is tried."""
    if isinstance(exc, AuthError):
        return ErrorCategory.AUTHORIZATION if exc.status_code == 403 else ErrorCategory.AUTHENTICATION
    if isinstance(exc, NotFoundError):  # no such endpoint
        return ErrorCategory.INVALID_REQUEST
    if isinstance(exc, RateLimitError):
        return ErrorCategory.RATE_LIMIT
    if isinstance(exc, TransportError):
        return ErrorCategory.CONNECTIVITY
    if isinstance(exc, JobFailed) and exc.code == ErrorCode.INVALID_INPUT:  # e.g. an unknown voice, a bad option
        return ErrorCategory.INVALID_REQUEST
    if isinstance(exc, ServerError | JobFailed):
        return ErrorCategory.SERVER
    return ErrorCategory.UNKNOWN


def _error_frame(service: str, endpoint: Endpoint, exc: VoicepodError) -> ErrorFrame:
    return ErrorFrame(error=f"{service} on endpoint '{endpoint.endpoint_id}': {exc}", exception=exc,
                      category=_category(exc))


def _check_options(model: type, options: dict[str, Any], own: set[str], required: dict[str, Any]) -> dict[str, Any]:
    """Validate job options now, against the worker's own request model, rather than fail every job later."""
    taken = own & options.keys()
    if taken:
        raise ValueError(f"options may not set {sorted(taken)}: the service fills them in")
    try:
        model.model_validate({**required, **options})
    except ValidationError as exc:
        raise ValueError(f"invalid options for {model.__name__}: {exc.errors()[0]['msg']} "
                         f"({'.'.join(map(str, exc.errors()[0]['loc']))})") from None
    return dict(options)


class RunPodSTTService(SegmentedSTTService):
    """Speech-to-text on a voicepod STT endpoint: one job per speech segment.

    Needs a VAD in the pipeline (Pipecat's ``VADProcessor`` or a user aggregator with ``vad_analyzer``): each
    segment between the VAD's start and stop is sent as raw PCM16 at the pipeline's input rate, and the job's
    transcript comes back as one ``TranscriptionFrame`` (with the detected language).

    Args:
        endpoint: the STT endpoint, e.g. ``Endpoint("stt-id")`` (``LocalServer.endpoint("stt")`` for serve-local).
        language: the spoken language (a Pipecat ``Language`` or an ISO code); detected per segment when None.
            Runtime-updatable through ``STTUpdateSettingsFrame``.
        options: more STT job input (``beam_size``, ``initial_prompt``, ``hotwords``, ``temperature``...: see
            ``voicepod.protocol.TranscribeRequest``), checked here.
        **kwargs: Pipecat's ``SegmentedSTTService`` arguments (``sample_rate``, ``trailing_silence_secs``, ...).

    Event ``on_job_started(service, job)`` runs (awaited) as each job is submitted.
    """

    def __init__(
        self,
        *,
        endpoint: Endpoint,
        language: Language | str | None = None,
        options: dict[str, Any] | None = None,
        settings: STTSettings | None = None,
        **kwargs: Any,
    ):
        default_settings = STTSettings(model=None, language=language)
        if settings is not None:
            default_settings.apply_update(settings)
        super().__init__(settings=default_settings, **kwargs)
        self._endpoint = endpoint
        self._options = _check_options(TranscribeRequest, options or {}, _STT_OWN, {"audio_base64": ""})
        self._register_event_handler("on_job_started", sync=True)

    @property
    def wants_wav_segments(self) -> bool:
        """Raw PCM16: the worker takes it with its rate (``audio_format: pcm16``), no WAV re-encode."""
        return False

    def can_generate_metrics(self) -> bool:
        return True

    def language_to_service_language(self, language: Language) -> str | None:
        # Whisper takes base ISO codes: "en-US" is "en".
        return str(language.value if isinstance(language, Language) else language).split("-")[0].lower()

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        """Transcribe one segment (raw PCM16 mono at :attr:`sample_rate`) on the endpoint."""
        job_input = {
            **self._options,
            "audio_base64": base64.b64encode(audio).decode("ascii"),
            "audio_format": "pcm16",
            "sample_rate": self.sample_rate,
        }
        if self._settings.language:
            job_input["language"] = str(self._settings.language)
        done: TranscriptDone | None = None
        await self.start_processing_metrics()
        try:
            # An interruption (the task cancelled) cancels the job on the endpoint as the block is left.
            async with self._endpoint.submit(job_input) as job:
                await self._call_event_handler("on_job_started", job)
                async for chunk in job.chunks():
                    if isinstance(chunk, TranscriptDone):
                        done = chunk
        except VoicepodError as exc:
            yield _error_frame("RunPod STT", self._endpoint, exc)
            return
        finally:
            await self.stop_processing_metrics()
        text = done.text.strip() if done else ""
        if text:
            try:
                language: Language | None = Language(done.language)
            except ValueError:
                language = None
            yield TranscriptionFrame(text, self._user_id, time_now_iso8601(), language, result=done.model_dump())


class RunPodTTSService(TTSService):
    """Text-to-speech on a voicepod TTS endpoint: one job per sentence Pipecat hands it, audio streamed.

    The job asks the worker for the pipeline's output rate (8, 16, 22.05, 24, 44.1 or 48 kHz: resampled here
    from the voice's own rate only for another one), and every audio chunk becomes a ``TTSAudioRawFrame`` the
    moment it arrives. An interruption (or the pipeline's cancellation) cancels the job on the endpoint.

    Args:
        endpoint: the TTS endpoint, e.g. ``Endpoint("tts-id")``.
        voice: one of the worker's voices; the worker's ``VOICE`` when None. Runtime-updatable
            (``TTSUpdateSettingsFrame``).
        options: more TTS job input (``speed``, ``chunk_ms``, ``normalize``: see ``voicepod.protocol.SpeechRequest``).
        first_cut_words: the first piece of a reply may end at a comma once it has this many words (0: at sentence
            ends only); see :class:`voicepod.aggregator.SentenceAggregator`.
        **kwargs: Pipecat's ``TTSService`` arguments (``sample_rate``, ``text_aggregation_mode``, ...). In Pipecat's
            ``TextAggregationMode.TOKEN`` text goes to the worker as it comes, and nothing is dropped at the cap.

    Event ``on_job_started(service, job)`` runs (awaited) as each job is submitted.
    """

    def __init__(
        self,
        *,
        endpoint: Endpoint,
        voice: str | None = None,
        options: dict[str, Any] | None = None,
        settings: TTSSettings | None = None,
        first_cut_words: int = 5,
        **kwargs: Any,
    ):
        default_settings = TTSSettings(model=None, voice=voice, language=None)
        if settings is not None:
            default_settings.apply_update(settings)
        kwargs.setdefault("push_start_frame", True)
        kwargs.setdefault("push_stop_frames", True)
        super().__init__(settings=default_settings, **kwargs)
        self._endpoint = endpoint
        self._options = _check_options(SpeechRequest, options or {}, _TTS_OWN, {"text": ""})
        self._register_event_handler("on_job_started", sync=True)
        if self._text_aggregation_mode == TextAggregationMode.SENTENCE:
            # As Pipecat's own Cartesia and Rime services replace it: the worker's sentence rules, not sentencex's
            # (which cuts "1." off a numbered item and keeps a list in one piece).
            self._text_aggregator = SentenceTextAggregator(first_cut_words)

    def can_generate_metrics(self) -> bool:
        return True

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Pipecat's, and a :class:`ReplyCutFrame` marks the reply being aggregated as cut at its cap."""
        if isinstance(frame, ReplyCutFrame) and isinstance(self._text_aggregator, SentenceTextAggregator):
            self._text_aggregator.cut_off = True
        await super().process_frame(frame, direction)

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        """Start a job speaking ``text`` and yield its audio as each chunk arrives."""
        rate = self.sample_rate
        job_input: dict[str, Any] = {**self._options, "text": text, "format": "pcm16"}
        if rate in WORKER_RATES:
            job_input["sample_rate"] = rate
        if self._settings.voice:
            job_input["voice"] = self._settings.voice
        resampler: soxr.ResampleStream | None = None
        try:
            # Interrupted (the task cancelled): nobody will hear the rest, so the endpoint stops making it, as the
            # block is left.
            async with self._endpoint.submit(job_input) as job:
                await self._call_event_handler("on_job_started", job)
                await self.start_tts_usage_metrics(text)
                async for chunk in job.chunks():
                    if not isinstance(chunk, AudioChunk):
                        continue
                    await self.stop_ttfb_metrics()
                    pcm = base64.b64decode(chunk.audio)
                    if chunk.sample_rate != rate:
                        # One stream per job, flushed at its end: Pipecat's shared stream resampler has no flush
                        # and would keep the last tens of milliseconds of every job.
                        resampler = resampler or soxr.ResampleStream(chunk.sample_rate, rate, 1, dtype="int16")
                        pcm = resampler.resample_chunk(np.frombuffer(pcm, "<i2")).tobytes()
                    if pcm:
                        yield TTSAudioRawFrame(pcm, rate, 1, context_id=context_id)
            if resampler is not None:
                tail = resampler.resample_chunk(np.zeros(0, "<i2"), last=True).tobytes()
                if tail:
                    yield TTSAudioRawFrame(tail, rate, 1, context_id=context_id)
        except VoicepodError as exc:
            yield _error_frame("RunPod TTS", self._endpoint, exc)
        finally:
            await self.stop_ttfb_metrics()


class RunPodLLMService(OpenAILLMService):
    """Pipecat's ``OpenAILLMService`` on a voicepod LLM endpoint's OpenAI-compatible route: the base URL and the key
    are filled in (from ``endpoint``), and the reply cap gets an allowance; everything else is Pipecat's.

    Args:
        endpoint: the LLM endpoint, e.g. ``Endpoint("llm-id")``; its base URL and key (``RUNPOD_API_KEY`` by
            default) are the route's.
        finish_sentence_within: tokens a reply may run past its ``max_tokens`` to finish the sentence or list item
            in progress (sent in the request's ``extra_body``; 0: none). A reply the worker still cut at the cap
            (``finish_reason`` ``length``) is followed by a :class:`ReplyCutFrame` before its
            ``LLMFullResponseEndFrame``: :class:`RunPodTTSService` then does not speak an unfinished last sentence.
        **kwargs: ``OpenAILLMService``'s arguments (``settings=RunPodLLMService.Settings(max_tokens=...)``, ...).
            The model name is not checked by the worker (it serves one model).
    """

    def __init__(self, *, endpoint: Endpoint, finish_sentence_within: int = FINISH_SENTENCE_WITHIN, **kwargs: Any):
        settings = kwargs.pop("settings", None) or OpenAILLMService.Settings()
        if settings.model is None or not isinstance(settings.model, str):
            settings.model = endpoint.endpoint_id
        super().__init__(
            base_url=endpoint.openai_base_url,
            # The OpenAI client insists on a key; serve-local without --api-key takes any.
            api_key=endpoint._api_key or "none",
            settings=settings,
            **kwargs,
        )
        self._finish_sentence_within = finish_sentence_within
        self._reply: _FinishReason | None = None

    def build_chat_completion_params(self, params_from_context: Any) -> dict[str, Any]:
        params = super().build_chat_completion_params(params_from_context)
        if self._finish_sentence_within:
            self._merge_extra_body(params, {"finish_sentence_within": self._finish_sentence_within})
        return params

    async def get_chat_completions(self, context: LLMContext) -> Any:
        self._reply = _FinishReason(await super().get_chat_completions(context))
        return self._reply

    async def _process_context(self, context: LLMContext) -> None:
        self._reply = None
        await super()._process_context(context)
        if self._reply is not None and self._reply.finish_reason == "length":
            await self.push_frame(ReplyCutFrame())


class _FinishReason:
    """An OpenAI chunk stream, passed on as it is, that keeps the finish reason its chunks carry (Pipecat's own
    service reads none)."""

    def __init__(self, stream: Any):
        self._stream = stream
        self.finish_reason: str | None = None

    def __aiter__(self) -> Any:
        return self._chunks()

    async def _chunks(self) -> Any:
        async for chunk in self._stream:
            for choice in chunk.choices or ():
                self.finish_reason = choice.finish_reason or self.finish_reason
            yield chunk

    async def close(self) -> None:
        await self._stream.close()


@dataclass
class ReplyCutFrame(DataFrame):
    """The reply being streamed was cut at its token cap (``finish_reason`` ``length``), after the allowance to
    finish its sentence: its last sentence may be unfinished. Pushed by :class:`RunPodLLMService` before the reply's
    ``LLMFullResponseEndFrame``; other processors pass it on."""


class SentenceTextAggregator(BaseTextAggregator):
    """Pipecat's text aggregator with voicepod's sentence rules: :class:`voicepod.aggregator.SentenceAggregator`,
    the cut ``VoiceAgent`` makes (the TTS worker's rules, markdown's list items as pieces, an early first cut at a
    clause, a bound in words). With :attr:`cut_off` set (a :class:`ReplyCutFrame`), :meth:`flush` drops a last
    sentence that did not end, unless nothing else was said."""

    def __init__(self, first_cut_words: int = 5):
        super().__init__(aggregation_type=TextType.SENTENCE)
        self._first_cut_words = first_cut_words
        self._sentences = SentenceAggregator(first_cut_words)
        self.cut_off = False

    @property
    def text(self) -> Aggregation:
        return Aggregation(text=self._sentences.pending.strip(), type=TextType.SENTENCE)

    async def aggregate(self, text: str) -> AsyncGenerator[Aggregation, None]:
        for piece in self._sentences.feed(text):
            yield Aggregation(text=piece, type=TextType.SENTENCE)

    async def flush(self) -> Aggregation | None:
        pieces = self._sentences.flush(cut_off=self.cut_off)
        await self.reset()
        # One line each: joined by spaces, "2. Dune" and "3. Emma" would read as "Dune 3." and "Emma".
        return Aggregation(text="\n".join(pieces), type=TextType.SENTENCE) if pieces else None

    async def handle_interruption(self) -> None:
        await self.reset()

    async def reset(self) -> None:
        self._sentences = SentenceAggregator(self._first_cut_words)
        self.cut_off = False
