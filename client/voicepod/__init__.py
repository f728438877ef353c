"""voicepod: a thin async client for voice agents on RunPod serverless endpoints."""

from .endpoint import Endpoint, Job
from .errors import (
    APIError,
    AuthError,
    JobCancelled,
    JobError,
    JobFailed,
    JobTimedOut,
    NotFoundError,
    RateLimitError,
    ServerError,
    StreamIncomplete,
    TransportError,
    VoicepodError,
)

__all__ = [
    "APIError",
    "AuthError",
    "Endpoint",
    "Job",
    "JobCancelled",
    "JobError",
    "JobFailed",
    "JobTimedOut",
    "NotFoundError",
    "RateLimitError",
    "ServerError",
    "StreamIncomplete",
    "TransportError",
    "VoicepodError",
]
__version__ = "0.1.0"
