"""Typed exceptions of the voicepod client: catch the family you care about, not strings."""

from __future__ import annotations

from .protocol import ErrorDetail


class VoicepodError(Exception):
    """Base of every error the client raises."""


# --- talking to the API ----------------------------------------------------------------------------------


class TransportError(VoicepodError):
    """The endpoint could not be reached (connection refused, reset, timed out), after retries.

    ``url`` is what was asked for; ``reason`` what went wrong, in a few words.
    """

    def __init__(self, method: str, url: str, reason: str):
        super().__init__(f"{method} {url}: {reason}")
        self.method = method
        self.url = url
        self.reason = reason


class APIError(VoicepodError):
    """The API answered with an error status; ``url`` is the request's."""

    def __init__(self, status_code: int, message: str, *, method: str = "", url: str = ""):
        where = f" from {method} {url}".replace("  ", " ") if url else ""
        super().__init__(f"HTTP {status_code}{where}: {message}")
        self.status_code = status_code
        self.message = message
        self.method = method
        self.url = url


class AuthError(APIError):
    """401/403: the API key is missing or wrong."""


class NotFoundError(APIError):
    """404: no such endpoint or job (RunPod forgets finished jobs after a while)."""


class ProtocolError(VoicepodError):
    """The API or a worker sent something that is not what the protocol says (a body that is not JSON, a chunk
    of a known type with missing or ill-typed fields): a proxy in the way, or a worker of another version."""


class RateLimitError(APIError):
    """429 that persisted through every retry."""


class ServerError(APIError):
    """5xx that persisted through every retry."""


# --- the job itself --------------------------------------------------------------------------------------


class JobError(VoicepodError):
    """A job ended without completing; ``endpoint`` is the id of the endpoint that ran it, when known."""

    def __init__(self, job_id: str, message: str, endpoint: str | None = None):
        on = f" on endpoint '{endpoint}'" if endpoint else ""
        super().__init__(f"job {job_id}{on}: {message}")
        self.job_id = job_id
        self.endpoint = endpoint


class JobFailed(JobError):
    """The worker ended the job with an error: ``code`` is stable (``invalid_input``, ``worker_died``, ...)."""

    def __init__(self, job_id: str, detail: ErrorDetail, endpoint: str | None = None):
        super().__init__(job_id, f"{detail.code}: {detail.message}", endpoint)
        self.detail = detail
        self.code = detail.code
        self.message = detail.message
        self.field = detail.field


class JobCancelled(JobError):
    """The job was cancelled (by this client or another)."""


class JobTimedOut(JobError):
    """The endpoint's execution timeout ended the job."""


class DeadlineExceeded(JobError, TimeoutError):
    """The caller's own deadline passed first (``Endpoint.run_sync(timeout=...)``); the job was cancelled.

    Also a ``TimeoutError``, so ``except TimeoutError`` written for asyncio timeouts catches it too.
    """


class StreamIncomplete(JobError):
    """The job completed but some streamed chunks never arrived and could not be recovered."""
