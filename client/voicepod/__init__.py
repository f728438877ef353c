"""voicepod: a thin async client for voice agents on RunPod serverless endpoints.

``Endpoint`` and ``Job`` talk to one endpoint; ``VoiceAgent`` chains three of them into spoken turns, whose
events (``Transcript``, ``ReplyText``, ``Audio``, ``TurnMetrics``, ``Done``) it yields. The chunks a worker
streams and the job inputs it takes are in :mod:`voicepod.protocol`; every error the client raises is a
``VoicepodError``.
"""

from .agent import Audio, Done, ReplyText, Transcript, TurnMetrics, VoiceAgent
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
    "Transcript",
    "ReplyText",
    "Audio",
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
