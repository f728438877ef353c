"""The browser page's line: the same :class:`~voicepod.phone.call.Call` as a phone call, over the page's
WebSocket (``/talk/ws``) instead of Twilio's: its serializer (:class:`BrowserLine`), who may open it
(:func:`refusal`) and what the page is shown of the call's turns.

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
from .line import CallerAudio, CallerEvent, Closing, Hangup, LineRefused, Played

INPUT_RATE = 16000  # what Whisper hears best and Silero VAD scores; the page's AudioWorklet downsamples to it
OUTPUT_RATE = 24000  # a rate every browser's audio output takes; the TTS worker resamples its voice to it
AUDIO_FRAME_BYTES = OUTPUT_RATE * 2 // 5  # 200 ms of reply audio per binary frame
TURN_POLL_S = 0.05  # how often the page is told of a turn's progress (transcript, reply text, latency)
CLOSE_REFUSED = 4003  # an application close code: the page shows the reason that comes with it


class BrowserLine:
    """The page's line: PCM16 16 kHz in, PCM16 24 kHz out in binary frames, marks and clears as JSON.
    ``max_frame_bytes``: a longer frame is refused."""

    input_format = output_format = "pcm16"
    input_rate = INPUT_RATE
    output_rate = OUTPUT_RATE

    def __init__(self, max_frame_bytes: int = 64 * 1024):
        self.max_frame_bytes = max_frame_bytes

    def parse(self, frame: str | bytes) -> CallerEvent | None:
        if isinstance(frame, bytes):
            if len(frame) > self.max_frame_bytes or len(frame) % 2:
                raise LineRefused("bad_audio", f"an audio frame of {len(frame)} bytes: expected PCM16 frames of "
                                  f"at most {self.max_frame_bytes} bytes")
            return CallerAudio(frame)
        try:
            event = json.loads(frame)
        except ValueError:
            raise LineRefused("malformed_json", "a text frame that is not JSON") from None
        kind = event.get("event") if isinstance(event, dict) else None
        if kind == "mark" and isinstance(event.get("name"), str):
            return Played(event["name"][:64])
        if kind == "stop":
            return Hangup()
        raise LineRefused("invalid_message", f"unexpected frame {str(frame)[:80]!r}")

    def media(self, audio: bytes) -> list[str | bytes]:
        return [audio[i:i + AUDIO_FRAME_BYTES] for i in range(0, len(audio), AUDIO_FRAME_BYTES)]

    def mark(self, name: str) -> str | bytes:
        return json.dumps({"event": "mark", "name": name})

    def clear(self) -> str | bytes:
        return json.dumps({"event": "clear"})

    def closing(self, refused: LineRefused) -> Closing:
        return refused_page(refused.message, 1007)

    def ready(self, call_sid: str, end_of_turn_s: float) -> str:
        """The first frame to the page: its call's id and formats, and ``end_of_turn_s``, the longest wait for the
        end of a turn (each turn's ``latency.end_silence_s`` says what it waited)."""
        return json.dumps({"event": "ready", "call_sid": call_sid, "input_rate": self.input_rate,
                           "output_rate": self.output_rate, "end_of_turn_s": end_of_turn_s})


def refused_page(reason: str, code: int = CLOSE_REFUSED) -> Closing:
    """Tell the page why (an ``error`` event it shows), then close with the reason (at most 123 bytes)."""
    return Closing([json.dumps({"event": "error", "message": reason})], code, reason[:120])


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
