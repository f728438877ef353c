"""The contract between voicepod's workers and its clients, in one module: what a job's input may hold (the
request models), the chunks a worker yields, the job states and the error codes.

A job's stream is a sequence of JSON objects, each with ``seq`` (0, 1, 2, ... within the job) and ``type``.
The last chunk of a successful job is a ``*_done`` summary carrying :class:`Metrics`. A failure ends the
stream with an ``error`` chunk; because the runpod SDK stops a stream at a chunk with a top-level ``error``
key and turns it into the job's FAILED result, the error reaches clients through ``/status`` (and
``/stream``) as the job's ``error`` string, which :func:`parse_job_error` turns back into an
:class:`ErrorDetail`.
"""

from __future__ import annotations

import ast
import json
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_serializer, field_validator
from pydantic_core import PydanticCustomError

# --- job states and error codes ----------------------------------------------------------------------------


class JobStatus(StrEnum):
    """A job's state, as RunPod's ``/status`` and ``/stream`` report it."""

    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"


TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT})


class ErrorCode(StrEnum):
    """Every error ``code`` a voicepod worker or the local emulator reports: stable, so clients match on them."""

    INVALID_INPUT = "invalid_input"  # the input breaks the request model's rules; ``field`` names where
    INPUT_TOO_LARGE = "input_too_large"  # over a cap (audio length or bytes, text length, context)
    INTERNAL = "internal_error"  # a bug: the worker logged a traceback
    OUT_OF_MEMORY = "out_of_memory"
    OUTPUT_TOO_LARGE = "output_too_large"  # a chunk over RunPod's 1 MB
    UNDECODABLE_AUDIO = "undecodable_audio"  # STT: not audio, or a format ffmpeg cannot read
    EMPTY_AUDIO = "empty_audio"  # STT: audio with no samples
    FETCH_FAILED = "fetch_failed"  # STT: audio_url could not be fetched
    URL_FORBIDDEN = "url_forbidden"  # STT: audio_url points at a private address
    HANDLER_EXCEPTION = "handler_exception"  # a handler outside this protocol raised; its text is the message
    WORKER_DIED = "worker_died"  # the worker process exited during the job (serve-local)
    TIMED_OUT = "timed_out"  # the execution timeout passed (serve-local)
    CANCELLED = "cancelled"  # OpenAI route: the job was cancelled before it answered
    INVALID_JSON = "invalid_json"  # OpenAI route: the body is not JSON
    # A worker serving its own HTTP server (load-balancing mode, workers/common/direct):
    WORKER_BUSY = "worker_busy"  # every one of its MAX_CONCURRENCY slots is taken: HTTP 429, try again
    WORKER_LOADING = "worker_loading"  # its model is still loading (/ping says 204): HTTP 503, try again
    UNAUTHORIZED = "unauthorized"  # the request's key is missing or wrong: HTTP 401
    NOT_FOUND = "not_found"  # no such route: HTTP 404


class _Chunk(BaseModel):
    # Chunks from a newer worker may carry fields this client does not know: keep them, don't fail.
    model_config = ConfigDict(extra="allow")

    # A worker builds its chunks without it; workers.common.stream.serve_job numbers each as it goes out, and
    # parse_chunk refuses a chunk that arrives without one.
    seq: int | None = Field(None, ge=0, description="position of the chunk within its job, from 0")


class Metrics(BaseModel):
    """Seconds a job spent, as measured by the worker."""

    model_config = ConfigDict(extra="allow")

    load_s: float = Field(0.0, description="model load billed to this job: non-zero on a cold start only")
    queue_s: float | None = Field(
        None, description="time in the endpoint's queue: a worker cannot see it; RunPod's /status has it (delayTime)"
    )
    compute_s: float = Field(0.0, description="handler time from job start to the done chunk")
    first_chunk_s: float | None = Field(None, description="handler time from job start to the first chunk")


class TranscriptMetrics(Metrics):
    """An STT job's seconds."""

    audio_load_s: float | None = Field(None, description="decoding (or fetching) the audio before transcribing")


class CompletionMetrics(Metrics):
    """An LLM job's seconds and speed."""

    ttft: float | None = Field(None, description="seconds from the job's start to its first token")
    tokens_per_s: float = Field(0.0, description="tokens written a second, over the whole generation")
    generate_s: float | None = Field(None, description="seconds generating")
    batch_max: int | None = Field(
        None, description="the most jobs in one forward with this one (a joint prefill or a decode step; 1: alone)"
    )


class SpeechMetrics(Metrics):
    """A TTS job's seconds and speed."""

    time_to_first_audio: float | None = Field(None, description="seconds from the job's start to its first audio")
    synthesis_s: float | None = Field(None, description="seconds synthesizing, all sentences")
    text_s: float | None = Field(None, description="seconds cutting the text into sentences and rewriting them "
                                 "for the ear")
    rtf: float | None = Field(None, description="real-time factor: synthesis seconds per second of audio")
    engine: str | None = Field(None, description="the engine that spoke: piper, transformers or espeak")


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorChunk(_Chunk):
    """The last chunk of a failed job. On the wire ``error`` is the detail as JSON *text*: the runpod SDK turns
    a yielded error into the job's ``error`` with ``str()``, which keeps a string as it is (a dict would become
    a Python repr), so ``/status`` shows JSON that curl and the SDK's users can parse."""

    type: Literal["error"] = "error"
    error: ErrorDetail

    @field_validator("error", mode="before")
    @classmethod
    def _from_json_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return {"code": ErrorCode.HANDLER_EXCEPTION, "message": value}
        return value

    @field_serializer("error")
    def _as_json_text(self, error: ErrorDetail) -> str:
        return error.model_dump_json(exclude_none=True)


# --- requests: each worker's job input ----------------------------------------------------------------------
# Workers validate ``job["input"]`` against these (strictly: unknown keys and wrong types are errors); clients
# may build their inputs from them. Limits that depend on a worker's settings (audio caps, MAX_TOKENS_CAP,
# MAX_TEXT_CHARS, the voices it has) are checked by the worker itself.


class StrictInput(BaseModel):
    """Base of every worker's input model: unknown keys and wrong types are errors, not silently coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)


RawAudioFormat = Literal["pcm16", "mulaw"]  # headerless audio the STT worker takes
AudioFormat = Literal["pcm16", "wav", "mulaw"]  # what the TTS worker speaks
OutputSampleRate = Literal[8000, 16000, 22050, 24000, 44100, 48000]
# torch.manual_seed takes a signed or unsigned 64-bit seed; a larger one would fail the job as an internal error.
SEED_RANGE = {"ge": -(2**63), "le": 2**64 - 1}

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
# The most tokens a reply may run past its max_tokens to finish a sentence: an allowance, not a second cap.
MAX_SENTENCE_ALLOWANCE = 256


class TranscribeRequest(StrictInput):
    """One transcription job. Exactly one of ``audio_base64`` and ``audio_url`` is given."""

    audio_base64: str | None = Field(None, description="the audio file (wav, mp3, ogg, flac, webm...), base64")
    audio_url: str | None = Field(None, max_length=4096, description="an http(s) URL to fetch the audio from")
    audio_format: RawAudioFormat | None = Field(
        None, description="raw headerless audio: pcm16 (little-endian) or mulaw (G.711); omit for a file"
    )
    sample_rate: Annotated[int, Field(ge=1000, le=192000)] | None = Field(
        None, description="rate of raw audio in Hz (mulaw defaults to 8000, telephony's rate)"
    )
    language: Annotated[str, Field(min_length=2, max_length=8)] | None = Field(
        None, description="ISO code of the spoken language; detected when omitted"
    )
    task: Literal["transcribe", "translate"] = Field(
        "transcribe", description="translate: English text from any language"
    )
    beam_size: Annotated[int, Field(ge=1, le=20)] = Field(5, description="beam search width; 1 is greedy")
    temperature: Probability | Annotated[list[Probability], Field(min_length=1, max_length=10)] | None = Field(
        None, description="one temperature, or a fallback sequence; faster-whisper's default sequence if omitted"
    )
    initial_prompt: Annotated[str, Field(max_length=2000)] | None = Field(
        None, description="text the speech continues: names, spellings"
    )
    vad_filter: bool = Field(False, description="skip silence with faster-whisper's Silero VAD first")
    word_timestamps: bool = Field(False, description="each segment's words with start and end times")
    without_timestamps: bool = Field(
        False, description="decode text tokens only: faster, and each 30 s window comes back as one segment"
    )
    hotwords: Annotated[str, Field(max_length=2000)] | None = Field(None, description="words to favour in decoding")
    batch_size: Annotated[int, Field(ge=1, le=64)] | None = Field(
        None,
        description="decode this many 30 s windows of a long file at once (faster-whisper's BatchedInferencePipeline:"
        " several times faster on a GPU); windows are cut at pauses with vad_filter, else every 30 s, and each is"
        " decoded without the text before it; omit to decode window by window",
    )


class SpeechRequest(StrictInput):
    text: str = Field(description="what to say")
    voice: str | None = Field(None, description="one of the engine's voices; default: the worker's VOICE")
    speed: float = Field(1.0, ge=0.25, le=4.0, description="speaking rate; 2.0 is twice as fast")
    format: AudioFormat = Field("pcm16", description="pcm16 (raw 16-bit), wav (a header per sentence) or mulaw (8 kHz)")
    sample_rate: OutputSampleRate | None = Field(
        None, description="output rate; default the voice's own (mulaw: 8000, the only rate it takes)"
    )
    # 5 s of 48 kHz pcm16 is 640 kB of base64, safely under RunPod's 1 MB per streamed chunk.
    chunk_ms: int = Field(200, ge=20, le=5000, description="longest audio one chunk holds, in ms")
    normalize: bool = Field(
        True, description="say the text as a person reads it aloud: markdown, list marks and emoji left out; numbers, "
        "prices, times, dates, phone numbers, e-mail addresses and URLs in words; false speaks it as written"
    )


class TextPart(StrictInput):
    type: Literal["text"]
    text: str


class Message(StrictInput):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class StreamOptions(StrictInput):
    include_usage: bool = False
    # OpenAI pads streamed chunks against length side channels when asked; nothing here needs it: ignored.
    include_obfuscation: bool | None = None


def _unsupported(message: str) -> PydanticCustomError:
    # A custom error keeps the message as written (a plain ValueError would read "Value error, ...").
    return PydanticCustomError("unsupported", message)


class OpenAIChatInput(StrictInput):
    """The body of an OpenAI ``/v1/chat/completions`` request, as far as this worker honours it.

    OpenAI clients such as Pipecat's ``OpenAILLMService`` also send fields that change nothing when left at
    their neutral values (no tools, no penalties, a service tier, a ``developer`` message): those are accepted.
    Asking for what this worker cannot do (calling tools, penalties, logprobs) is refused, naming the field.
    """

    messages: list[Message]
    model: str | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, **SEED_RANGE)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = 1
    user: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logprobs: bool | None = None
    # voicepod's own field (an OpenAI client sends it in extra_body): see LLMRequest.finish_sentence_within.
    finish_sentence_within: int = Field(0, ge=0, le=MAX_SENTENCE_ALLOWANCE)
    service_tier: str | None = None  # one tier here: accepted, ignored
    store: bool | None = None  # nothing is ever stored here
    metadata: dict[str, str] | None = None

    @field_validator("messages", mode="before")
    @classmethod
    def _developer_is_system(cls, value: Any) -> Any:
        # OpenAI's newer name for the system role: the prompt has one place for instructions either way.
        if isinstance(value, list):
            return [{**m, "role": "system"} if isinstance(m, dict) and m.get("role") == "developer" else m
                    for m in value]
        return value

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if value:
            raise _unsupported("tool calling is not supported by this worker: send no tools")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _no_tool_choice(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if value not in (None, "none", "auto"):
            raise _unsupported("tool calling is not supported by this worker: tool_choice may only be 'none' or "
                               "'auto'")
        return value

    @field_validator("frequency_penalty", "presence_penalty")
    @classmethod
    def _no_penalty(cls, value: float | None) -> float | None:
        if value:
            raise _unsupported("penalties are not supported by this worker: send 0 or leave it out")
        return value

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool | None) -> bool | None:
        if value:
            raise _unsupported("logprobs are not supported by this worker")
        return value


class LLMRequest(StrictInput):
    """A job's input: ``messages`` or ``prompt`` with sampling settings, or an OpenAI passthrough request."""

    messages: list[Message] | None = Field(
        None, description="the conversation, OpenAI style: {role, content}; or give prompt"
    )
    prompt: str | None = Field(None, description="plain text to continue, with no chat template")
    max_tokens: int | None = Field(None, description="most tokens to write; default: the worker's "
                                   "(256, or its MAX_TOKENS_CAP if lower)")
    temperature: float = Field(1.0, ge=0, le=2, description="0 means greedy")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    stop: str | list[str] | None = Field(None, description="up to 8 strings that end the reply (not included)")
    seed: int | None = Field(None, **SEED_RANGE, description="makes sampling repeatable")
    finish_sentence_within: int = Field(
        0, ge=0, le=MAX_SENTENCE_ALLOWANCE, description="past max_tokens, write at most this many more tokens to "
        "end the sentence or list item in progress, stopping at its end (never past the worker's MAX_TOKENS_CAP); "
        "0 stops at max_tokens"
    )
    openai_route: Literal["/v1/chat/completions", "/v1/models"] | None = Field(
        None, description="set by RunPod's OpenAI-compatible route, with openai_input"
    )
    openai_input: dict[str, Any] | None = Field(None, description="the OpenAI request body (set by that route)")


# --- STT -------------------------------------------------------------------------------------------------


class Word(BaseModel):
    start: float
    end: float
    word: str
    probability: float


class SegmentChunk(_Chunk):
    type: Literal["segment"] = "segment"
    id: int
    start: float
    end: float
    text: str
    words: list[Word] | None = None


class TranscriptDone(_Chunk):
    type: Literal["done"] = "done"
    kind: Literal["transcript"] = "transcript"
    text: str
    language: str
    language_probability: float
    duration: float = Field(description="seconds of audio transcribed")
    metrics: TranscriptMetrics


# --- LLM -------------------------------------------------------------------------------------------------


class DeltaChunk(_Chunk):
    type: Literal["delta"] = "delta"
    chunk: dict[str, Any] = Field(description="an OpenAI chat.completion.chunk object")

    @property
    def text(self) -> str:
        """The content delta of the first choice ('' when the chunk carries none)."""
        choices = self.chunk.get("choices") or [{}]
        return (choices[0].get("delta") or {}).get("content") or ""


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class CompletionDone(_Chunk):
    type: Literal["done"] = "done"
    kind: Literal["completion"] = "completion"
    text: str
    finish_reason: Literal["stop", "length", "cancelled"]
    usage: Usage
    metrics: CompletionMetrics


# --- TTS -------------------------------------------------------------------------------------------------


class AudioChunk(_Chunk):
    type: Literal["audio"] = "audio"
    sentence: int = Field(ge=0, description="index of the sentence this audio belongs to")
    format: AudioFormat
    sample_rate: int
    audio: str = Field(description="base64 of the encoded audio bytes")


class SpeechDone(_Chunk):
    type: Literal["done"] = "done"
    kind: Literal["speech"] = "speech"
    duration: float = Field(description="seconds of audio produced")
    sentences: int
    metrics: SpeechMetrics


class UnknownChunk(_Chunk):
    """A chunk of a type this client does not know (from a newer worker): passed on with all its fields."""

    type: str


DoneChunk = Annotated[TranscriptDone | CompletionDone | SpeechDone, Field(discriminator="kind")]
KnownChunk = Annotated[SegmentChunk | DeltaChunk | AudioChunk | ErrorChunk | DoneChunk, Field(discriminator="type")]
Chunk = KnownChunk | UnknownChunk

_chunk_adapter: TypeAdapter[Any] = TypeAdapter(KnownChunk)
_KNOWN_TYPES = {"segment", "delta", "audio", "error"}
_KNOWN_DONE = {"transcript", "completion", "speech"}


def parse_chunk(data: dict[str, Any]) -> Chunk:
    """Validate one streamed chunk into its typed model; a ``type`` (or ``done`` ``kind``) this client does not
    know becomes an :class:`UnknownChunk`. A known type with missing or ill-typed fields (``seq`` included)
    raises ``pydantic.ValidationError``."""
    if isinstance(data, dict) and data.get("seq") is None:
        raise ValidationError.from_exception_data("chunk", [{"type": "missing", "loc": ("seq",), "input": data}])
    kind = data.get("type") if isinstance(data, dict) else None
    if isinstance(kind, str) and kind not in _KNOWN_TYPES and not (kind == "done" and data.get("kind") in _KNOWN_DONE):
        return UnknownChunk.model_validate(data)
    return _chunk_adapter.validate_python(data)


def parse_job_error(error: Any) -> ErrorDetail:
    """Turn a FAILED job's ``error`` field back into an :class:`ErrorDetail`.

    The SDK stringifies a yielded error with ``str()``: voicepod's workers yield it as JSON text (see
    :class:`ErrorChunk`), so it arrives as JSON; older workers' arrive as a Python literal of a dict, read too;
    a handler that raised arrives as free text, reported with code ``handler_exception``.
    """
    if isinstance(error, dict):
        candidate: Any = error
    else:
        text = str(error)
        candidate = None
        for parse in (json.loads, ast.literal_eval):
            try:
                candidate = parse(text)
                break
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
        if not isinstance(candidate, dict):
            return ErrorDetail(code=ErrorCode.HANDLER_EXCEPTION, message=text)
    if isinstance(candidate.get("error"), dict):
        candidate = candidate["error"]
    if isinstance(candidate.get("code"), str) and isinstance(candidate.get("message"), str):
        return ErrorDetail(code=candidate["code"], message=candidate["message"], field=candidate.get("field"))
    return ErrorDetail(code=ErrorCode.HANDLER_EXCEPTION, message=str(error))
