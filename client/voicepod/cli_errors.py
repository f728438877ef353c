"""What a command-line user reads when a command fails: one line naming the problem and what to do about it."""

from __future__ import annotations

from urllib.parse import urlsplit

from .errors import (
    APIError,
    AuthError,
    JobCancelled,
    JobFailed,
    JobTimedOut,
    NotFoundError,
    TransportError,
    VoicepodError,
)

LOCAL_BASE_URL = "http://127.0.0.1:8000/v2"


class UsageError(VoicepodError):
    """A mistake on the command line (a missing file, a missing setting): its message says what to do."""


def is_local(url: str) -> bool:
    """Whether ``url`` points at this machine (serve-local), where hints differ from RunPod's."""
    return (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1", "0.0.0.0")


def _status_hint(exc: APIError) -> str:
    if isinstance(exc, AuthError):
        if is_local(exc.url):
            return ("set RUNPOD_API_KEY (or --api-key) to the key serve-local was started with "
                    "(its --api-key or VOICEPOD_LOCAL_API_KEY)")
        return "set RUNPOD_API_KEY (or --api-key) to a valid RunPod API key"
    if isinstance(exc, NotFoundError):
        if "/v2/" not in urlsplit(exc.url).path:
            return f"RunPod's API is served under /v2: use a base URL like {LOCAL_BASE_URL}"
        return "check the endpoint id (--stt/--llm/--tts or VOICEPOD_*_ENDPOINT)"
    return ""


def explain(exc: BaseException) -> str:
    """One line for ``exc``: what failed, and where a user can act, what to do."""
    if isinstance(exc, UsageError):
        return str(exc)
    if isinstance(exc, TransportError):
        base = exc.url.split("/v2/")[0]
        if "/v2/" not in exc.url:  # an endpoint given by its URL: a worker's own server (a load-balancing endpoint)
            base = "{0.scheme}://{0.netloc}".format(urlsplit(exc.url))
            hint = ("is the worker running there? (serve-local --direct, or fix the endpoint's URL: "
                    "--stt/--llm/--tts or VOICEPOD_*_ENDPOINT)")
        elif is_local(exc.url):
            hint = "is serve-local running there? (start it, or fix --base-url)"
        else:
            hint = f"is the network up? (for serve-local, pass --base-url {LOCAL_BASE_URL})"
        return f"cannot reach {base} ({exc.reason}): {hint}"
    if isinstance(exc, APIError):
        hint = _status_hint(exc)
        line = f"{exc.status_code} from {exc.url}: {exc.message}"
        return f"{line}: {hint}" if hint else line
    if isinstance(exc, JobFailed):
        where = f"the '{exc.endpoint}' job" if exc.endpoint else "a job"
        field = f" (field {exc.field})" if exc.field else ""
        return f"{where} failed: {exc.code}{field}: {exc.message}"
    if isinstance(exc, JobTimedOut):
        return f"the '{exc.endpoint}' job ran past the endpoint's execution timeout"
    if isinstance(exc, JobCancelled):
        return f"the '{exc.endpoint}' job was cancelled"
    if isinstance(exc, FileNotFoundError):
        return f"{exc.filename}: no such file"
    if isinstance(exc, PermissionError):
        return f"{exc.filename}: permission denied"
    if isinstance(exc, VoicepodError):
        return str(exc)
    return f"unexpected {type(exc).__name__}: {exc} (run `voicepod --debug ...` for the traceback)"
