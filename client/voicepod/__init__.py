"""voicepod: a thin async client for voice agents on RunPod serverless endpoints.

``Endpoint`` and ``Job`` talk to one endpoint; ``VoiceAgent`` chains three of them into spoken turns: each
``Reply`` it makes yields the turn's events (``Transcript``, ``ReplyText``, ``Audio``, ``SentenceEnd``,
``TurnMetrics``, ``Done``); a ``Speech`` speaks a fixed text. The
chunks a worker streams and the job inputs it takes are in :mod:`voicepod.protocol`; every error the client
raises is a ``VoicepodError``.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time each name is imported on first use, below
    from .agent import Audio, Done, Reply, ReplyText, SentenceEnd, Speech, Transcript, TurnMetrics, VoiceAgent
    from .endpoint import Endpoint, Job
    from .errors import (
        APIError,
        AuthError,
        DeadlineExceeded,
        JobCancelled,
        JobError,
        JobFailed,
        JobTimedOut,
        NotFoundError,
        ProtocolError,
        RateLimitError,
        ServerError,
        StreamIncomplete,
        TransportError,
        VoicepodError,
    )
    from .protocol import (
        AudioChunk,
        Chunk,
        CompletionDone,
        DeltaChunk,
        ErrorChunk,
        ErrorCode,
        ErrorDetail,
        JobStatus,
        SegmentChunk,
        SpeechDone,
        TranscriptDone,
        UnknownChunk,
    )

__all__ = [
    # endpoints and the voice chain
    "Endpoint",
    "Job",
    "VoiceAgent",
    "Reply",
    "Speech",
    "Transcript",
    "ReplyText",
    "Audio",
    "SentenceEnd",
    "TurnMetrics",
    "Done",
    # what workers stream
    "Chunk",
    "SegmentChunk",
    "TranscriptDone",
    "DeltaChunk",
    "CompletionDone",
    "AudioChunk",
    "SpeechDone",
    "ErrorChunk",
    "UnknownChunk",
    "ErrorDetail",
    "ErrorCode",
    "JobStatus",
    # errors
    "VoicepodError",
    "TransportError",
    "ProtocolError",
    "APIError",
    "AuthError",
    "NotFoundError",
    "RateLimitError",
    "ServerError",
    "JobError",
    "JobFailed",
    "JobCancelled",
    "JobTimedOut",
    "DeadlineExceeded",
    "StreamIncomplete",
]
__version__ = "0.1.0"

# Where each public name lives. Imported lazily because workers import ``voicepod.protocol`` at start-up, which
# runs this file first: importing the whole client here (httpx, the agent) cost every worker's cold start 0.12 s.
_HOMES = {
    **dict.fromkeys(["VoiceAgent", "Reply", "Speech", "Transcript", "ReplyText", "Audio", "SentenceEnd",
                     "TurnMetrics", "Done"], "agent"),
    **dict.fromkeys(["Endpoint", "Job"], "endpoint"),
    **dict.fromkeys(["VoicepodError", "TransportError", "ProtocolError", "APIError", "AuthError", "NotFoundError",
                     "RateLimitError", "ServerError", "JobError", "JobFailed", "JobCancelled", "JobTimedOut",
                     "DeadlineExceeded", "StreamIncomplete"], "errors"),
    **dict.fromkeys(["Chunk", "SegmentChunk", "TranscriptDone", "DeltaChunk", "CompletionDone", "AudioChunk",
                     "SpeechDone", "ErrorChunk", "UnknownChunk", "ErrorDetail", "ErrorCode", "JobStatus"],
                    "protocol"),
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        value = getattr(import_module(f".{_HOMES[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
