"""HTTP below the endpoint client: auth, timeouts, retries with backoff, and status codes to typed errors."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx

from .errors import APIError, AuthError, NotFoundError, ProtocolError, RateLimitError, ServerError, TransportError

RETRY_STATUS = {429, 500, 502, 503, 504}
# Statuses that say the server did not act on the request: the only ones after which a POST is resent.
REFUSED_STATUS = {429, 503}
# Safe to resend even when the first attempt may have reached the server.
IDEMPOTENT = {"GET", "HEAD", "OPTIONS"}


class Transport:
    """One ``httpx.AsyncClient`` with RunPod's auth and a retry policy.

    ``max_retries`` is how many times a failed request is tried again; ``backoff`` is the first pause (seconds),
    doubled each retry with jitter up to ``max_backoff``, or what a ``Retry-After`` header asks. A POST that may
    have reached the server (a read error after sending, a 500/502/504) is not resent unless
    ``idempotent=True``, so a ``/run`` is never submitted twice; 429 and 503 say it was refused, so those are.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout: float = 30.0,
        max_retries: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        client: httpx.AsyncClient | None = None,
    ):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._owns_client = client is None
        self._headers = headers
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff

    def __repr__(self) -> str:  # the key stays out of reprs, logs and tracebacks
        return f"Transport(base_url={self.base_url!r})"

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    def _pause(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None and (retry_after := response.headers.get("Retry-After")):
            try:
                return min(float(retry_after), self.max_backoff)
            except ValueError:
                pass
        return min(self.backoff * 2**attempt, self.max_backoff) * random.uniform(0.5, 1.0)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        idempotent: bool | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send a request and return its decoded JSON body, retrying what is safe to retry."""
        resend_ok = method in IDEMPOTENT if idempotent is None else idempotent
        response = await self._send(method, path, json=json, params=params, resend_ok=resend_ok, timeout=timeout)
        url = f"{self.base_url}/{path.lstrip('/')}"
        if response.status_code >= 400:
            raise api_error(response, method, url)
        return _json_body(response, method, url)

    async def stream(self, method: str, path: str, *, json: Any = None) -> httpx.Response:
        """Send a request whose answer is read as it streams (a load-balancing endpoint's job) and return the open
        response, which the caller reads and closes. Retried only where it cannot have started anything: no
        connection, or a refusal (429, 503). A wrong key or route raises :class:`AuthError` or
        :class:`NotFoundError`; any other status is returned, its body unread, for the caller to read."""
        response = await self._send(method, path, json=json, resend_ok=False, stream=True)
        if response.status_code in (401, 403, 404):
            await response.aread()
            await response.aclose()
            raise api_error(response, method, f"{self.base_url}/{path.lstrip('/')}")
        return response

    async def _send(self, method: str, path: str, *, resend_ok: bool, stream: bool = False,
                    timeout: float | None = None, **kwargs: Any) -> httpx.Response:
        """The request's response once it is not to be retried (any status); connection errors and retryable
        statuses are retried with backoff up to ``max_retries``, then raised as typed errors."""
        url = f"{self.base_url}/{path.lstrip('/')}"
        extra = {"timeout": timeout} if timeout is not None else {}
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                request = self._client.build_request(method, url, headers=self._headers, **kwargs, **extra)
                response = await self._client.send(request, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # Never reached the server: always safe to try again.
                error: Exception = exc
            except httpx.TransportError as exc:
                if not resend_ok:
                    raise TransportError(method, url, reason(exc)) from exc
                error = exc
            else:
                retryable = RETRY_STATUS if resend_ok else REFUSED_STATUS
                if response.status_code < 400 or response.status_code not in retryable:
                    return response
                if stream:
                    await response.aread()
                    await response.aclose()
                error = api_error(response, method, url)
            if attempt >= self.max_retries:
                if isinstance(error, APIError):
                    raise error
                raise TransportError(method, url, reason(error)) from error
            await asyncio.sleep(self._pause(attempt, response))
            attempt += 1


def _json_body(response: httpx.Response, method: str, url: str) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise ProtocolError(f"{method} {url}: HTTP {response.status_code} with a body that is not JSON "
                            f"({response.text[:80]!r}): is the base URL RunPod's API?") from None


def reason(exc: Exception) -> str:
    """A few words on why a request got no answer ("connection refused", "ConnectTimeout")."""
    text = str(exc)
    cause: BaseException | None = exc
    while cause is not None:  # httpx says "All connection attempts failed"; the OS error below says why
        if isinstance(cause, ConnectionRefusedError) or "Connection refused" in str(cause):
            return "connection refused"
        cause = cause.__cause__ or cause.__context__
    if "Name or service not known" in text or "nodename nor servname" in text or "Temporary failure in name" in text:
        return "host name not found"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def api_error(response: httpx.Response, method: str, url: str) -> APIError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        # OpenAI-shaped bodies nest the message: {"error": {"message": ...}}.
        message = (error.get("message") if isinstance(error, dict) else error) or body.get("message") or response.text
    else:
        message = response.text or response.reason_phrase
    message = str(message)[:500]
    status = response.status_code
    kind = {401: AuthError, 403: AuthError, 404: NotFoundError, 429: RateLimitError}.get(status)
    if kind is None:
        kind = ServerError if status >= 500 else APIError
    return kind(status, message, method=method, url=url)
