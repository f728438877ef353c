"""Twilio's voice webhook answer: TwiML that connects the call to a bidirectional Media Stream on ``/media``."""

from __future__ import annotations

from urllib.parse import urlsplit


def public_base(public_url: str | None, host: str | None, scheme: str = "https") -> str:
    """The server's public base URL: ``public_url`` (the address Twilio calls, behind a proxy or tunnel),
    else ``scheme://host`` from the request."""
    if public_url:
        return public_url.rstrip("/")
    return f"{scheme}://{host or 'localhost'}"


def stream_url(public_url: str | None, host: str | None) -> str:
    """The ``wss://HOST/media`` URL Twilio streams to (and signs when it connects)."""
    parts = urlsplit(public_base(public_url, host))
    return f"wss://{parts.netloc}{parts.path.rstrip('/')}/media"


def connect_stream(url: str, parameters: dict[str, str] | None = None) -> str:
    """TwiML answering a call with ``<Connect><Stream url=...>``. ``<Stream>`` URLs cannot carry a query
    string, so anything per call travels as ``<Parameter>`` (it arrives in ``start.customParameters``)."""
    from twilio.twiml.voice_response import Connect, VoiceResponse

    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=url)
    for name, value in (parameters or {}).items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    return str(response)
