"""Download a job's ``audio_url`` safely: http(s) only, capped size and time, bounded redirects, no SSRF.

A worker sits inside a datacenter network, so a caller-chosen URL must not reach loopback, link-local (cloud
metadata at 169.254.169.254) or private addresses. The host is resolved here, every address it resolves to is
checked, and the request connects to the checked address (the Host header and TLS SNI keep the name), so a DNS
answer that changes between check and connect cannot redirect it. httpx has no such guard of its own.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from dataclasses import dataclass

import httpx
from voicepod.protocol import ErrorCode

from workers.common.errors import INPUT_TOO_LARGE, WorkerError

FETCH_FAILED = ErrorCode.FETCH_FAILED
URL_FORBIDDEN = ErrorCode.URL_FORBIDDEN

ALLOW_PRIVATE_ENV = "ALLOW_PRIVATE_URLS"  # "1" lets URLs reach private and loopback hosts (tests, VPC setups)


@dataclass(frozen=True)
class FetchPolicy:
    """How an audio URL may be fetched.

    Attributes:
      max_bytes: Largest body accepted; the download stops as soon as it is passed.
      timeout_s: Wall-clock limit for the whole download, redirects included.
      max_redirects: Redirects followed before giving up.
      allow_private: Whether non-public addresses (loopback, private, link-local) may be fetched.
    """

    max_bytes: int
    timeout_s: float = 30.0
    max_redirects: int = 3
    allow_private: bool = False

    @classmethod
    def from_env(cls, max_bytes: int) -> FetchPolicy:
        """Read ``FETCH_TIMEOUT_S``, ``FETCH_MAX_REDIRECTS`` and ``ALLOW_PRIVATE_URLS``."""
        return cls(
            max_bytes=max_bytes,
            timeout_s=float(os.environ.get("FETCH_TIMEOUT_S", cls.timeout_s)),
            max_redirects=int(os.environ.get("FETCH_MAX_REDIRECTS", cls.max_redirects)),
            allow_private=os.environ.get(ALLOW_PRIVATE_ENV, "") == "1",
        )


def fetch_audio(url: str, policy: FetchPolicy, field: str = "audio_url") -> bytes:
    """GET ``url`` and return its body, or raise a WorkerError naming ``field``."""
    deadline = time.monotonic() + policy.timeout_s
    current = _parse(url, field)
    # trust_env=False: a proxy from the environment would bypass the address check.
    with httpx.Client(timeout=policy.timeout_s, trust_env=False, follow_redirects=False) as client:
        for _ in range(policy.max_redirects + 1):
            request = _pinned_request(client, current, policy, field)
            try:
                response = client.send(request, stream=True)
                try:
                    if response.is_redirect:
                        current = _parse(str(current.join(response.headers["location"])), field)
                        continue
                    if response.status_code != 200:
                        raise WorkerError(FETCH_FAILED, f"GET {url} answered HTTP {response.status_code}", field)
                    return _read_capped(response, policy, deadline, field)
                finally:
                    response.close()
            except httpx.HTTPError as exc:
                raise WorkerError(FETCH_FAILED, f"GET {url} failed: {type(exc).__name__}: {exc}", field) from None
    raise WorkerError(FETCH_FAILED, f"GET {url}: more than {policy.max_redirects} redirects", field)


def _parse(url: str, field: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise WorkerError(URL_FORBIDDEN, f"not a valid URL: {exc}", field) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise WorkerError(URL_FORBIDDEN, f"only http and https URLs are fetched, got {url[:200]!r}", field)
    return parsed


def _pinned_request(client: httpx.Client, url: httpx.URL, policy: FetchPolicy, field: str) -> httpx.Request:
    address = _checked_address(url, policy, field)
    extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
    return client.build_request(
        "GET", url.copy_with(host=address), headers={"Host": url.netloc.decode("ascii")}, extensions=extensions
    )


def _checked_address(url: httpx.URL, policy: FetchPolicy, field: str) -> str:
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(url.host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise WorkerError(FETCH_FAILED, f"cannot resolve {url.host}: {exc}", field) from None
    addresses = [str(info[4][0]).split("%")[0] for info in infos]
    if not policy.allow_private:
        for text in addresses:
            if not is_public_address(text):
                raise WorkerError(
                    URL_FORBIDDEN,
                    f"{url.host} resolves to {text}, a non-public address (set {ALLOW_PRIVATE_ENV}=1 to allow)",
                    field,
                )
    return addresses[0]


def is_public_address(text: str) -> bool:
    """Whether an IP address is globally routable (not loopback, private, link-local, multicast, reserved)."""
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def _read_capped(response: httpx.Response, policy: FetchPolicy, deadline: float, field: str) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > policy.max_bytes:
        raise WorkerError(INPUT_TOO_LARGE, f"audio_url body is {declared} bytes, over {policy.max_bytes}", field)
    body = bytearray()
    for piece in response.iter_bytes():
        body += piece
        if len(body) > policy.max_bytes:
            raise WorkerError(INPUT_TOO_LARGE, f"audio_url body is over {policy.max_bytes} bytes", field)
        # httpx's timeout bounds each read, not the whole download: a slow trickle is cut off here.
        if time.monotonic() > deadline:
            raise WorkerError(FETCH_FAILED, f"audio_url download took over {policy.timeout_s:g} s", field)
    return bytes(body)
