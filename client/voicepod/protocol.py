"""The wire protocol: every chunk a voicepod worker yields, shared by workers and client.

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
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_serializer, field_validator


class _Chunk(BaseModel):
    # Chunks from a newer worker may carry fields this client does not know: keep them, don't fail.
    model_config = ConfigDict(extra="allow")

    seq: int = Field(ge=0, description="position of the chunk within its job, from 0")


class Metrics(BaseModel):
    """Seconds a job spent, as measured by the worker."""

    model_config = ConfigDict(extra="allow")

    load_s: float = Field(0.0, description="model load billed to this job: non-zero on a cold start only")
    queue_s: float | None = Field(
        None, description="time in the endpoint's queue: a worker cannot see it; RunPod's /status has it (delayTime)"
    )
    compute_s: float = Field(0.0, description="handler time from job start to the done chunk")
    first_chunk_s: float | None = Field(None, description="handler time from job start to the first chunk")


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
                return {"code": "handler_exception", "message": value}
        return value

    @field_serializer("error")
    def _as_json_text(self, error: ErrorDetail) -> str:
        return error.model_dump_json(exclude_none=True)


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
    metrics: Metrics


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
    metrics: Metrics


# --- TTS -------------------------------------------------------------------------------------------------

AudioFormat = Literal["pcm16", "wav", "mulaw"]


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
    metrics: Metrics


DoneChunk = Annotated[TranscriptDone | CompletionDone | SpeechDone, Field(discriminator="kind")]
Chunk = SegmentChunk | DeltaChunk | AudioChunk | ErrorChunk | TranscriptDone | CompletionDone | SpeechDone

_chunk_adapter: TypeAdapter[Any] = TypeAdapter(
    Annotated[SegmentChunk | DeltaChunk | AudioChunk | ErrorChunk | DoneChunk, Field(discriminator="type")]
)


def parse_chunk(data: dict[str, Any]) -> Chunk:
    """Validate one streamed chunk into its typed model (raises ``pydantic.ValidationError``)."""
    return _chunk_adapter.validate_python(data)


def parse_job_error(error: Any) -> ErrorDetail:
    """Turn a FAILED job's ``error`` field back into an :class:`ErrorDetail`.

    The SDK stringifies a yielded error with ``str()``, so a worker's structured error arrives as a Python
    literal of a dict; a handler that raised arrives as free text, reported with code ``handler_exception``.
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
            return ErrorDetail(code="handler_exception", message=text)
    if isinstance(candidate.get("error"), dict):
        candidate = candidate["error"]
    if isinstance(candidate.get("code"), str) and isinstance(candidate.get("message"), str):
        return ErrorDetail(code=candidate["code"], message=candidate["message"], field=candidate.get("field"))
    return ErrorDetail(code="handler_exception", message=str(error))
