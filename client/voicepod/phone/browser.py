"""The browser page's line: the same :class:`~voicepod.phone.call.Call` as a phone call, over the page's
WebSocket (``/talk/ws``) instead of Twilio's.

Frames, page to server: binary frames are the microphone as PCM16 (little-endian, mono) at 16 kHz; text frames
are JSON, ``{"event": "mark", "name"}`` (the audio sent before that mark has played) and ``{"event": "stop"}``.
Server to page: binary frames are reply audio, PCM16 at :data:`OUTPUT_RATE`; text frames are JSON:
``ready`` (the call's id and formats), ``mark`` (echo it once what came before has played), ``clear`` (stop
playing now: barge-in), ``turn`` (a turn's record as it fills in: transcript, reply text, latency) and
``error`` (why the socket is about to close).

No secret reaches the page: the endpoints' key stays in the server, the page only ever sees its own call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit

from starlette.websockets import WebSocket

from .call import Call

INPUT_RATE = 16000  # what Whisper hears best and Silero VAD scores; the page's AudioWorklet downsamples to it
OUTPUT_RATE = 24000  # a rate every browser's audio output takes; the TTS worker resamples its voice to it
AUDIO_FRAME_BYTES = OUTPUT_RATE * 2 // 5  # 200 ms of reply audio per binary frame
TURN_POLL_S = 0.05  # how often the page is told of a turn's progress (transcript, reply text, latency)
CLOSE_REFUSED = 4003  # an application close code: the page shows the reason that comes with it


class BrowserLine:
    """The page's line: PCM16 16 kHz in, PCM16 24 kHz out in binary frames, marks and clears as JSON."""

    input_format = output_format = "pcm16"
    input_rate = INPUT_RATE
    output_rate = OUTPUT_RATE

    def media(self, stream_sid: str, audio: bytes) -> list[str | bytes]:
        return [audio[i:i + AUDIO_FRAME_BYTES] for i in range(0, len(audio), AUDIO_FRAME_BYTES)]

    def mark(self, stream_sid: str, name: str) -> str | bytes:
        return json.dumps({"event": "mark", "name": name})

    def clear(self, stream_sid: str) -> str | bytes:
        return json.dumps({"event": "clear"})


class PageRefused(Exception):
    """The page's socket is closed over bad input: ``code`` says what, ``message`` in words."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _forwarded_hosts(header: str | None) -> list[str]:
    return [host.strip() for host in (header or "").split(",") if host.strip()]


def refusal(websocket: WebSocket, token: str | None) -> str | None:
    """Why the page's socket may not open a call, or None when it may.

    ``token``: the page token (``--page-token``); without one, only a browser on this machine (loopback) may
    talk to the agent. Either way, a page from another site may not: any site open in the user's browser could
    otherwise reach a server on localhost and spend its endpoints.
    """
    if token is not None:
        given = websocket.query_params.get("token", "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            return "wrong or missing page token: open the URL voicepod phone printed (it carries ?token=...)"
    elif not _loopback(websocket.client.host if websocket.client else ""):
        return "this server talks only to a browser on its own machine; start it with --page-token to allow others"
    origin = websocket.headers.get("origin")
    # Behind a proxy or tunnel that rewrites Host, the host the page was served from is X-Forwarded-Host.
    hosts = {websocket.headers.get("host"), *_forwarded_hosts(websocket.headers.get("x-forwarded-host"))}
    if origin and urlsplit(origin).netloc not in hosts:
        return f"a page from another site ({origin[:80]}) may not use this server"
    return None


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def new_call_sid() -> str:
    """A page call's id (and its record's file name): ``page-`` and 32 hex digits."""
    return f"page-{uuid.uuid4().hex}"


def sender(websocket: WebSocket) -> Callable[[str | bytes], Awaitable[None]]:
    """Sends one frame, text or binary, one at a time (the call and the turn watcher both send)."""
    lock = asyncio.Lock()

    async def send(frame: str | bytes) -> None:
        async with lock:
            if isinstance(frame, bytes):
                await websocket.send_bytes(frame)
            else:
                await websocket.send_text(frame)

    return send


def turn_view(number: int, turn: Any) -> dict[str, Any]:
    """What the page shows of turn ``number`` (1-based), a :class:`~voicepod.phone.records.TurnRecord`."""
    record = asdict(turn)
    return {"event": "turn", "turn": number,
            **{key: record[key] for key in ("user", "reply", "assistant", "interrupted", "cut", "error", "latency")}}


async def watch_turns(call: Call, send: Callable[[str | bytes], Awaitable[None]]) -> None:
    """Tell the page of every change to the call's turns, until cancelled.

    Read from the call record rather than hooked into the turn: the call runs exactly as a phone call does,
    and the page sees what the record will say.
    """
    shown: dict[int, dict[str, Any]] = {}
    while True:
        await flush_turns(call, send, shown)
        await asyncio.sleep(TURN_POLL_S)


async def flush_turns(call: Call, send: Callable[[str | bytes], Awaitable[None]],
                      shown: dict[int, dict[str, Any]]) -> None:
    """Send the turns that changed since ``shown`` (updated in place)."""
    for number, turn in enumerate(list(call.record.turns), 1):
        view = turn_view(number, turn)
        if shown.get(number) != view:
            shown[number] = view
            await send(json.dumps(view))


async def serve_page(websocket: WebSocket, call: Call, max_frame_bytes: int) -> str:
    """Read the page's frames until it stops or goes; returns why, raises :class:`PageRefused` on bad input."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return "disconnected"
        audio, text = message.get("bytes"), message.get("text")
        if audio is not None:
            if len(audio) > max_frame_bytes or len(audio) % 2:
                raise PageRefused("bad_audio", f"an audio frame of {len(audio)} bytes: expected PCM16 frames of "
                                  f"at most {max_frame_bytes} bytes")
            await call.hear(audio)
            continue
        try:
            event = json.loads(text or "")
        except ValueError:
            raise PageRefused("malformed_json", "a text frame that is not JSON") from None
        kind = event.get("event") if isinstance(event, dict) else None
        if kind == "mark" and isinstance(event.get("name"), str):
            call.marked(event["name"][:64])
        elif kind == "stop":
            return "stop"
        else:
            raise PageRefused("invalid_message", f"unexpected frame {str(text)[:80]!r}")


async def close_with(websocket: WebSocket, code: int, reason: str) -> None:
    """Tell the page why (an ``error`` event, then the close reason) and close."""
    with contextlib.suppress(Exception):
        await websocket.send_text(json.dumps({"event": "error", "message": reason}))
    with contextlib.suppress(Exception):
        await websocket.close(code=code, reason=reason[:120])  # close reasons are at most 123 bytes
